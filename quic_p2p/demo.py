"""``quic-p2p demo``: a local network on loopback, checked end to end.

Nodes join one by one, each bootstrapping through the node started before it;
then every node connects to every other, clients bootstrap through the nodes,
and every peer sends messages to every peer it knows. The run ends with a
summary table and a list of checks; it succeeds only if every check passed.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .aio import QuicP2p
from .certfiles import create_ca, issue_certificate
from .events import NewMessage, SentUserMessage
from .peer import Peer, format_address
from .proto.config import Config, OurType, TrustMode

T = TypeVar("T")

#: Every step of the demo must finish within this many seconds.
STEP_TIMEOUT = 60.0


@dataclass
class DemoOptions:
    nodes: int = 5
    clients: int = 2
    messages: int = 10
    size: int = 1024
    trust_mode: TrustMode = TrustMode.UNVERIFIED


@dataclass
class _Member:
    name: str
    endpoint: QuicP2p
    sent: int = 0
    unsent: int = 0
    received: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class DemoResult:
    checks: list[tuple[str, bool, str]]
    table: list[list[str]]

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


async def run_demo(options: DemoOptions, say: Callable[[str], None] = print) -> DemoResult:
    """Runs the demo network and returns what it checked."""
    if options.nodes < 2 or options.clients < 0 or options.messages < 1:
        raise ValueError("the demo needs at least 2 nodes, 0 or more clients, 1 or more messages")
    checks: list[tuple[str, bool, str]] = []
    members: list[_Member] = []
    with tempfile.TemporaryDirectory(prefix="quic-p2p-demo-") as tmp:
        base = Path(tmp)
        make_config = _configs(options, base)
        try:
            started = time.perf_counter()
            await _step(
                say,
                f"starting {options.nodes} nodes, each bootstrapping through the one before",
                _start_nodes(options, make_config, members),
            )
            nodes = members[:]
            checks.append(("every node bootstrapped", True, f"{len(nodes)} nodes"))

            await _step(say, "connecting every node to every other node", _mesh(nodes))
            mesh_ok = all(len(m.endpoint.connected_peers()) == len(nodes) - 1 for m in nodes)
            checks.append(("full mesh of nodes", mesh_ok, f"{len(nodes) - 1} peers each"))

            if options.clients:
                await _step(
                    say,
                    f"starting {options.clients} clients, bootstrapping through the nodes",
                    _start_clients(options, make_config, nodes, members),
                )
                checks.append(("every client bootstrapped", True, f"{options.clients} clients"))

            echo_ok, echo_detail = await _step(
                say, "asking the network for our addresses", _echo(members)
            )
            checks.append(("echo service agrees with bound addresses", echo_ok, echo_detail))

            expected = await _step(
                say,
                f"exchanging {options.messages} messages of {options.size} B between every pair",
                _exchange(options, members),
            )
            sent = sum(m.sent for m in members)
            unsent = sum(m.unsent for m in members)
            checks.append(
                (
                    "every send acknowledged",
                    unsent == 0 and sent == expected,
                    f"{sent}/{expected} sent, {unsent} unsent",
                )
            )
            await _step(
                say, "waiting for every message to be received", _await_received(members, expected)
            )
            received = sum(m.received for m in members)
            checks.append(
                (
                    "every message received exactly once",
                    received == expected,
                    f"{received}/{expected}",
                )
            )
            checks.append(("wall time", True, f"{time.perf_counter() - started:.2f} s"))
        except (TimeoutError, Exception) as exc:  # the demo reports, never tracebacks
            checks.append(("demo ran to the end", False, f"{type(exc).__name__}: {exc}"))
        finally:
            table = _table(options, members)
            for m in members:
                await m.endpoint.aclose()
    return DemoResult(checks, table)


async def _step(say: Callable[[str], None], what: str, coro: Awaitable[T]) -> T:
    say(f"... {what}")
    t0 = time.perf_counter()
    result = await asyncio.wait_for(coro, STEP_TIMEOUT)
    say(f"    done in {(time.perf_counter() - t0) * 1000:.0f} ms")
    return result


def _configs(options: DemoOptions, base: Path) -> Callable[..., Config]:
    ca = create_ca("quic-p2p demo CA") if options.trust_mode is TrustMode.PRIVATE_CA else None
    count = iter(range(1_000_000))

    def make(**kw: object) -> Config:
        n = next(count)
        extra: dict[str, object] = {}
        if ca is not None:
            extra = {
                "ca_certs_der": (ca.cert_der,),
                "our_complete_cert": issue_certificate(ca, f"demo-{n}", ip_addresses=["127.0.0.1"]),
            }
        return Config(
            ip="127.0.0.1",
            port=0,
            trust_mode=options.trust_mode,
            bootstrap_cache_dir=base / f"cache-{n}",
            **extra,  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )

    return make


async def _start_nodes(
    options: DemoOptions, make: Callable[..., Config], members: list[_Member]
) -> None:
    for i in range(options.nodes):
        contacts = (members[-1].endpoint.node_info,) if members else ()
        ep = QuicP2p(make(hard_coded_contacts=contacts))
        await ep.start()
        members.append(_Member(f"node{i}", ep))
        if contacts:
            await ep.bootstrap()


async def _mesh(nodes: list[_Member]) -> None:
    await asyncio.gather(
        *(
            a.endpoint.connect_to(b.endpoint.node_info)
            for i, a in enumerate(nodes)
            for b in nodes[i + 1 :]
        )
    )


async def _start_clients(
    options: DemoOptions, make: Callable[..., Config], nodes: list[_Member], members: list[_Member]
) -> None:
    contacts = tuple(n.endpoint.node_info for n in nodes)
    for i in range(options.clients):
        ep = QuicP2p(make(our_type=OurType.CLIENT, hard_coded_contacts=contacts))
        await ep.start()
        members.append(_Member(f"client{i}", ep))
        await ep.bootstrap()


async def _echo(members: list[_Member]) -> tuple[bool, str]:
    infos = await asyncio.gather(*(m.endpoint.our_connection_info() for m in members))
    bad = [
        m.name
        for m, info in zip(members, infos, strict=True)
        if info.peer_addr != m.endpoint.local_addr
    ]
    return (not bad, "all match" if not bad else "mismatch: " + ", ".join(bad))


async def _exchange(options: DemoOptions, members: list[_Member]) -> int:
    async def send(m: _Member, peer: Peer, k: int) -> None:
        t0 = time.perf_counter()
        outcome = await m.endpoint.send(peer, bytes([k % 256]) * options.size, k)
        if isinstance(outcome, SentUserMessage):
            m.sent += 1
            m.latencies.append(time.perf_counter() - t0)
        else:
            m.unsent += 1

    jobs = [
        send(m, peer, k)
        for m in members
        for peer in m.endpoint.connected_peers()
        for k in range(options.messages)
    ]
    await asyncio.gather(*jobs)
    return len(jobs)


async def _await_received(members: list[_Member], expected: int) -> None:
    async def count(m: _Member) -> None:
        while True:
            try:
                ev = await asyncio.wait_for(m.endpoint.next_event(), 0.5)
            except TimeoutError:
                return  # quiet for half a second: everything that came is counted
            if isinstance(ev, NewMessage):
                m.received += 1

    await asyncio.gather(*(count(m) for m in members))


def _table(options: DemoOptions, members: list[_Member]) -> list[list[str]]:
    rows = [
        [
            "peer",
            "role",
            "address",
            "connected to",
            "sent",
            "unsent",
            "received",
            "median latency",
            "trust mode",
        ]
    ]
    names = {m.endpoint.local_addr: m.name for m in members if m.endpoint.engine.local_addr}
    for m in members:
        ep = m.endpoint
        peers = (
            sorted(
                names.get(p.peer_addr, format_address(p.peer_addr)) for p in ep.connected_peers()
            )
            if ep.engine.local_addr
            else []
        )
        median = f"{statistics.median(m.latencies) * 1000:.1f} ms" if m.latencies else "-"
        rows.append(
            [
                m.name,
                ep.config.our_type.value,
                format_address(ep.local_addr) if ep.engine.local_addr else "-",
                ", ".join(peers) if len(peers) <= 3 else f"{len(peers)} peers",
                str(m.sent),
                str(m.unsent),
                str(m.received),
                median,
                options.trust_mode.value,
            ]
        )
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
