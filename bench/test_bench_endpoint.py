"""Our endpoint next to raw aioquic, in the same run: message throughput and
connect latency. Reported as ratios (see conftest), not gated yet. Marked slow:
``ci/bench --quick`` leaves them out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from quic_p2p import Config, ConnectedTo, OurType, Peer, QuicP2p, SentUserMessage

from rawquic import RawPair

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.run_until_complete(lp.shutdown_asyncgens())
    lp.close()


def _cfg(**kw: Any) -> Config:
    # Same transport settings as the raw reference (rawquic.py): no idle timeout.
    return Config(ip="127.0.0.1", port=0, idle_timeout_msec=0, **kw)


@pytest.fixture(scope="module")
def pair(loop: asyncio.AbstractEventLoop) -> Iterator[tuple[QuicP2p, QuicP2p, Peer]]:
    a, b = QuicP2p(_cfg()), QuicP2p(_cfg())

    async def up() -> Peer:
        await a.start()
        await b.start()
        peer = await a.connect_to(b.node_info)
        return peer

    peer = loop.run_until_complete(up())
    yield a, b, peer
    loop.run_until_complete(a.aclose())
    loop.run_until_complete(b.aclose())


@pytest.fixture(scope="module")
def raw(loop: asyncio.AbstractEventLoop) -> Iterator[RawPair]:
    r = RawPair()
    loop.run_until_complete(r.start())
    yield r
    loop.run_until_complete(r.close())


def _drain_events(ep: QuicP2p) -> None:
    ep._channel._items.clear()


@pytest.mark.parametrize(("size", "count"), [(1024, 2000), (64 * 1024, 200)], ids=["1KiB", "64KiB"])
@pytest.mark.parametrize("impl", ["ours", "raw"])
def test_throughput(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    pair: Any,
    raw: RawPair,
    impl: str,
    size: int,
    count: int,
) -> None:
    """``count`` messages of ``size`` bytes, until the peer has all of them
    (ours: every send acknowledged; raw: the server's reply after the last byte)."""
    benchmark.group = f"throughput-{size // 1024}KiB"
    benchmark.extra_info["bytes"] = size * count
    messages = [bytes([i % 251]) * size for i in range(count)]
    a, b, peer = pair

    async def ours() -> None:
        outcomes = await asyncio.gather(*(a.send(peer, m, i) for i, m in enumerate(messages)))
        assert all(isinstance(o, SentUserMessage) for o in outcomes)
        _drain_events(a)
        _drain_events(b)

    def run() -> None:
        loop.run_until_complete(ours() if impl == "ours" else raw.send_messages(messages))

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["ours-node", "ours-client", "raw"])
def test_connect_latency(
    benchmark: Any, loop: asyncio.AbstractEventLoop, pair: Any, raw: RawPair, impl: str
) -> None:
    """Time until connected: a Node (two handshakes + the reachability proof),
    a Client (one handshake), a bare aioquic handshake (+ one PING round trip)."""
    benchmark.group = "connect"
    _, server, _ = pair
    our_type = OurType.CLIENT if impl == "ours-client" else OurType.NODE

    async def ours() -> None:
        ep = QuicP2p(_cfg(our_type=our_type))
        await ep.start()
        try:
            await ep.connect_to(server.node_info)
            for _ in range(100):  # the server's ConnectedTo ends the measurement
                if isinstance(await server.next_event(), ConnectedTo):
                    break
        finally:
            await ep.aclose()
            _drain_events(server)

    def run() -> None:
        loop.run_until_complete(ours() if impl != "raw" else raw.handshake_once())

    benchmark.pedantic(run, rounds=10, warmup_rounds=1)
