"""A lossy UDP relay for reliability tests (asyncio, loopback only).

The relay sits between two fixed endpoints, ``a`` and ``b``, with one socket
standing in for each of them::

    a  <-->  [for_a]  relay  [for_b]  <-->  b

``for_a`` is the address ``a`` uses for ``b``; ``for_b`` is the address ``b``
sees ``a`` at. A datagram arriving on ``for_a`` (from anyone: in practice
``a``) leaves through ``for_b`` towards ``b``, and one arriving on ``for_b``
leaves through ``for_a`` towards ``a``.

Our endpoints use ONE socket each and a Node proves reachability by its peer
connecting BACK to the address it saw. With the two stand-in sockets that
works for Node<->Node too: Node ``a`` dials ``NodeInfo(relay.for_a, b_cert)``,
``b`` sees the dialler at ``relay.for_b`` and dials back there, which the
relay forwards to ``a``, so both connections of the pair cross the relay and
suffer the same impairments. Client<->Node (one connection) works the same
way. Only ``a`` and ``b`` may use one relay: each relay is one "link".

Impairments are per direction (``a_to_b``, ``b_to_a``; see ``Impairment``)
and driven by ``random.Random(seed)``: a run with the same seed and the same
traffic makes the same decisions. ``cut(seconds)`` drops everything both
ways for a while (a link outage); ``Impairment.blackhole`` drops one direction
until cleared. ``stats`` counts what happened to each datagram.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]


@dataclass
class Impairment:
    """What happens to datagrams going one way. Rates are probabilities (0..1)
    drawn per datagram."""

    loss: float = 0.0
    duplicate: float = 0.0
    #: Probability that a datagram is held back ``reorder_delay`` longer, so
    #: later ones overtake it.
    reorder: float = 0.0
    reorder_delay: tuple[float, float] = (0.005, 0.030)
    #: Every datagram is delayed by ``delay`` plus uniform(0, ``jitter``) seconds.
    delay: float = 0.0
    jitter: float = 0.0
    #: Drop everything in this direction.
    blackhole: bool = False


@dataclass
class RelayStats:
    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    cut: int = 0  # dropped because the link was cut or black-holed

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay, name: str) -> None:
        self.relay = relay
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.relay._received(self.name, data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable when an endpoint is gone: QUIC's timers decide.
        pass


@dataclass
class LossyRelay:
    """Relays datagrams between ``a`` and ``b`` with seeded impairments.

    Use ``async with LossyRelay(a_addr, b_addr, seed=1) as relay`` (or
    ``start()``/``aclose()``); then ``relay.for_a`` / ``relay.for_b``.
    """

    a: Address
    b: Address
    seed: int = 0
    a_to_b: Impairment = field(default_factory=Impairment)
    b_to_a: Impairment = field(default_factory=Impairment)
    #: Keep a copy of every datagram received, both ways, in ``captured``
    #: (what an eavesdropper on the link sees).
    capture: bool = False

    def __post_init__(self) -> None:
        for host, _ in (self.a, self.b):
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError(f"the relay is for loopback only, not {host}")
        self.rng = random.Random(self.seed)
        self.stats_by_dir = {"a_to_b": RelayStats(), "b_to_a": RelayStats()}
        self._side_a: _Side | None = None  # the socket a talks to (for_a)
        self._side_b: _Side | None = None
        self._cut_until = 0.0
        self._handles: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.captured: list[bytes] = []

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> LossyRelay:
        self._loop = asyncio.get_running_loop()
        host = self.a[0]
        _, self._side_a = await self._loop.create_datagram_endpoint(
            lambda: _Side(self, "a_to_b"), local_addr=(host, 0)
        )
        _, self._side_b = await self._loop.create_datagram_endpoint(
            lambda: _Side(self, "b_to_a"), local_addr=(self.b[0], 0)
        )
        return self

    async def aclose(self) -> None:
        self._closed = True
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
        for side in (self._side_a, self._side_b):
            if side is not None and side.transport is not None:
                side.transport.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> LossyRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ addresses
    @property
    def for_a(self) -> Address:
        """Where ``a`` sends to reach ``b``."""
        assert self._side_a is not None and self._side_a.transport is not None
        host, port = self._side_a.transport.get_extra_info("sockname")[:2]
        return (host, port)

    @property
    def for_b(self) -> Address:
        """Where ``b`` sends to reach ``a`` (the address ``b`` sees ``a`` at)."""
        assert self._side_b is not None and self._side_b.transport is not None
        host, port = self._side_b.transport.get_extra_info("sockname")[:2]
        return (host, port)

    # ------------------------------------------------------------ control
    def cut(self, seconds: float) -> None:
        """Drop every datagram, both ways, for ``seconds`` from now."""
        assert self._loop is not None
        self._cut_until = self._loop.time() + seconds

    def restore(self) -> None:
        """End a cut early."""
        self._cut_until = 0.0

    @property
    def is_cut(self) -> bool:
        return self._loop is not None and self._loop.time() < self._cut_until

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return {k: v.as_dict() for k, v in self.stats_by_dir.items()}

    # ------------------------------------------------------------ the relay
    def _received(self, direction: str, data: bytes) -> None:
        if self._closed:
            return
        st = self.stats_by_dir[direction]
        st.received += 1
        if self.capture:
            self.captured.append(data)
        imp = self.a_to_b if direction == "a_to_b" else self.b_to_a
        if imp.blackhole or self.is_cut:
            st.cut += 1
            return
        rng = self.rng
        if imp.loss and rng.random() < imp.loss:
            st.dropped += 1
            return
        copies = 1
        if imp.duplicate and rng.random() < imp.duplicate:
            copies = 2
            st.duplicated += 1
        for _ in range(copies):
            delay = imp.delay + (rng.uniform(0, imp.jitter) if imp.jitter else 0.0)
            if imp.reorder and rng.random() < imp.reorder:
                delay += rng.uniform(*imp.reorder_delay)
                st.reordered += 1
            if delay <= 0:
                self._send(direction, data)
            else:
                self._later(delay, direction, data)

    def _later(self, delay: float, direction: str, data: bytes) -> None:
        assert self._loop is not None
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._handles.discard(handle)
            self._send(direction, data)

        handle = self._loop.call_later(delay, fire)
        self._handles.add(handle)

    def _send(self, direction: str, data: bytes) -> None:
        if self._closed:
            return
        imp = self.a_to_b if direction == "a_to_b" else self.b_to_a
        st = self.stats_by_dir[direction]
        if imp.blackhole or self.is_cut:  # cut while the datagram was delayed
            st.cut += 1
            return
        out = self._side_b if direction == "a_to_b" else self._side_a
        dest = self.b if direction == "a_to_b" else self.a
        if out is None or out.transport is None or out.transport.is_closing():
            return
        out.transport.sendto(data, dest)
        st.forwarded += 1
