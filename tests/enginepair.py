"""Engines wired back to back on a fake clock, without sockets or an event
loop (aioquic's ``client_and_server``, quinn's ``Pair``): datagrams go from
one engine's transmits straight into the engine bound at their destination.
Real aioquic, real TLS; only the network and the clock are ours, so a test can
drop traffic, cut a peer off, or jump time forward.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quic_p2p import Config, Event, OurType
from quic_p2p.certfiles import generate_self_signed
from quic_p2p.peer import Address, NodeInfo, PeerId
from quic_p2p.proto import Engine, EventQueue
from quic_p2p.proto.state import Result

#: The fake wall clock's epoch (certificates are generated valid around now).
WALL_EPOCH = 1_800_000_000.0
_ports = itertools.count(40_000)


@dataclass
class Side:
    engine: Engine
    addr: Address
    events: list[Event] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)

    @property
    def node_info(self) -> NodeInfo:
        return NodeInfo(self.addr, self.engine.our_certificate)

    @property
    def peer_id(self) -> PeerId:
        return self.engine.peer_id

    def result(self, command_id: int) -> Result | None:
        return next((r for r in self.results if getattr(r, "id", None) == command_id), None)

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class Net:
    """A clock and a wire between engines. ``allow(src, dst)`` decides
    whether a datagram gets through (default: all do)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sides: dict[Address, Side] = {}
        self.allow: Callable[[Address, Address], bool] = lambda src, dst: True
        self.delivered = 0
        self.dropped = 0

    def engine(
        self, our_type: OurType = OurType.NODE, *, host: str = "127.0.0.1", **options: Any
    ) -> Side:
        config = Config(
            ip=host,
            port=next(_ports),
            our_type=our_type,
            **{k: v for k, v in options.items() if k in _CONFIG_FIELDS},
        )
        settings: dict[str, Any] = {
            "max_connections": 1000,
            "max_connections_per_ip": 32,
            "stateless_retry": True,
            "retry_above_rate": 0.0,
            "send_timeout": 60.0,
            "max_unacked_bytes": 64 * 1024 * 1024,
            "outcome_events": False,
            "relay": None,
        }
        settings.update({k: v for k, v in options.items() if k not in _CONFIG_FIELDS})
        engine = Engine(
            config,
            cert=generate_self_signed(),
            random_bytes=_counter_bytes(),
            wall_clock=lambda: WALL_EPOCH + self.now,
            events=EventQueue(1024),
            **settings,
        )
        addr = (host, config.bind_port)
        engine.start(self.now, addr, v6_socket=False, ipv4_ok=True)
        side = Side(engine, addr)
        self.sides[addr] = side
        return side

    def run(self, until: Callable[[], bool] | None = None, *, limit: float = 30.0) -> None:
        """Moves datagrams and time until ``until`` holds (or nothing is left
        to do within ``limit`` fake seconds); fails if ``until`` never holds."""
        deadline = self.now + limit
        for _ in range(200_000):
            self._collect()
            if until is not None and until():
                return
            if self._deliver():
                continue
            due = [t for s in self.sides.values() if (t := s.engine.poll_timeout()) is not None]
            if not due or min(due) > deadline:
                break
            self.now = max(self.now, min(due))
            for side in self.sides.values():
                t = side.engine.poll_timeout()
                if t is not None and t <= self.now:
                    side.engine.handle_timeout(self.now)
        self._collect()
        if until is not None and not until():
            raise AssertionError(f"condition not met within {limit} fake seconds")

    def advance(self, seconds: float) -> None:
        """Lets ``seconds`` of fake time pass, everything running meanwhile."""
        end = self.now + seconds
        self.run(lambda: self.now >= end, limit=seconds + 1.0)

    def _deliver(self) -> bool:
        moved = False
        for side in list(self.sides.values()):
            for data, dst, _socket in side.engine.datagrams_to_send(self.now):
                target = self.sides.get(dst)
                if target is None or not self.allow(side.addr, dst):
                    self.dropped += 1
                    continue
                target.engine.handle_datagram(self.now, data, side.addr)
                self.delivered += 1
                moved = True
        return moved

    def _collect(self) -> None:
        for side in self.sides.values():
            while (event := side.engine.poll_event()) is not None:
                side.events.append(event)
            side.results.extend(side.engine.take_results())


_CONFIG_FIELDS = {
    "idle_timeout_msec",
    "keep_alive_interval_msec",
    "max_msg_size_allowed",
    "hard_coded_contacts",
    "bootstrap_cache_dir",
    "qlog_dir",
}


def _counter_bytes() -> Callable[[int], bytes]:
    """Deterministic 'randomness' for the engine (admission's CIDs)."""
    counter = itertools.count(1)

    def draw(n: int) -> bytes:
        return hashlib.shake_256(b"%d" % next(counter)).digest(n)

    return draw
