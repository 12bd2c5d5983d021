"""What an endpoint and its peers have done, as typed snapshots:
``QuicP2p.peer_stats(peer)`` and ``QuicP2p.stats()``. Each call builds a new
frozen value from the engine's counters (nothing is counted twice: the
metrics exporter reads these too)."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .peer import Address, PeerId, PeerKind


class PathKind(enum.Enum):
    """How our packets reach a peer."""

    #: From our socket straight to the peer's address.
    DIRECT = "direct"
    #: Inside a relay session through a Node connected to both of us.
    RELAYED = "relayed"


@dataclass(frozen=True)
class PeerPath:
    """A peer's path: ``kind``, the peer's address as we see it, and the
    relay's for a relayed path."""

    kind: PathKind
    address: Address
    relay: Address | None = None

    def __str__(self) -> str:
        host, port = self.address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.relay is None:
            return f"direct to {where}"
        rhost, rport = self.relay
        via = f"[{rhost}]:{rport}" if ":" in rhost else f"{rhost}:{rport}"
        return f"{where} relayed via {via}"


@dataclass(frozen=True)
class PeerStats:
    """One connected peer, now. Byte and packet counts are whole UDP
    payloads (QUIC's headers, encryption and acknowledgements included),
    summed over the peer's connections (a Node peer has two); round-trip
    times and the congestion window are those of the connection we send on.
    Times are in seconds; ``connected_since`` is wall-clock (``time.time()``)."""

    peer_id: PeerId | None
    kind: PeerKind
    path: PeerPath
    connected_since: float
    connections: int
    rtt: float | None
    min_rtt: float | None
    congestion_window: int
    bytes_in_flight: int
    bytes_sent: int
    bytes_received: int
    packets_sent: int
    packets_received: int
    packets_lost: int
    messages_sent: int
    messages_unsent: int
    messages_received: int
    datagrams_sent: int
    datagrams_received: int
    streams_open: int

    @property
    def address(self) -> Address:
        return self.path.address

    @property
    def relayed(self) -> bool:
        return self.path.kind is PathKind.RELAYED


@dataclass(frozen=True)
class EndpointTotals:
    """Counts over the endpoint's whole life, that only ever grow: peers and
    connections that have gone still count (what a Prometheus counter
    needs; summing ``peer_stats`` would fall when a peer leaves).

    Bytes and packets are whole UDP payloads on our sockets, counted once
    each: a relayed connection's packets travel inside the connection to
    the relay and are counted there (as the relay's forwarding is, under
    ``EndpointStats.relay_bytes``). Received ones include datagrams then
    dropped (junk, unknown connections)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    #: Packets aioquic's loss recovery declared lost, on every connection
    #: (a relayed connection's included: lost between the relay and us).
    packets_lost: int = 0
    #: Outcomes of ``send()``: acknowledged, handed back (any reason).
    messages_sent: int = 0
    messages_unsent: int = 0
    #: Messages delivered to ``events()``.
    messages_received: int = 0
    #: ``send_datagram`` calls that queued one; datagrams from connected peers.
    datagrams_sent: int = 0
    datagrams_received: int = 0
    #: Application streams opened, by us and by peers (refused ones included).
    streams_opened: int = 0
    #: QUIC connections created (dialled or accepted) and ended.
    connections_opened: int = 0
    connections_closed: int = 0


@dataclass(frozen=True)
class EndpointStats(Mapping[str, int]):
    """The endpoint, now: gauges and counters by what they are about. It is
    also a read-only mapping of every named counter (``counters``: drops,
    refusals and the like by cause, as the keys name them), so
    ``node.stats()["datagrams sent"]`` reads one of them."""

    #: QUIC connections open, and by role: "node in" / "node out" (a Node
    #: peer's two), "client in" (a Client that dialled us), "client out" (we
    #: are a Client), "other" (probes, echo-only, not yet identified).
    connections: int
    connections_by_role: Mapping[str, int]
    #: Connected peers by kind ("node", "client").
    peers: Mapping[str, int]
    #: What admission did with new connections' first packets: "accepted",
    #: "retried", "refused", "ignored", "invalid token" (and by reason under
    #: ``counters``, "admission: ...").
    admissions: Mapping[str, int]
    #: Hole punching we took part in: "attempts", "succeeded", "failed" and
    #: failures by reason ("failed: ...").
    punches: Mapping[str, int]
    #: As a relay: sessions open and bytes forwarded; as a relayed side: the
    #: sessions we are a side of.
    relay_sessions: int
    relay_bytes: int
    relay_paths: int
    #: ``events()``: user events queued now, the most ever queued, its capacity.
    event_queue_depth: int
    event_queue_high_water: int
    event_capacity: int
    #: Datagrams dropped, by cause ("queue full", "peer not connected").
    datagrams_dropped: Mapping[str, int]
    #: Application streams open, and bytes they hold that nobody read yet.
    streams_open: int
    stream_bytes_unread: int
    #: Counts over the endpoint's life, peers gone included (monotonic).
    totals: EndpointTotals = field(default_factory=EndpointTotals)
    counters: Mapping[str, int] = field(default_factory=dict)

    def __getitem__(self, key: str) -> int:
        return self.counters[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.counters)

    def __len__(self) -> int:
        return len(self.counters)
