"""The engine's records: connections, peers, sends, relay sessions.

Plain data holding ids and deadlines (``Timer``), never a future or a task:
the engine decides, the driver waits. Results of commands leave the engine
as ``Result`` values keyed by the id the command returned.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..accel.types import Frame, FrameKind
from ..events import SentUserMessage, UnsentUserMessage
from ..peer import Address, NodeInfo, Peer, PeerId, PeerKind
from ..reasons import NO_REASON, Reason
from .flow import PeerConnection
from .limits import (
    HANDSHAKE_TIMEOUT,
    PUNCH_NOTICE_BURST,
    PUNCH_NOTICE_RATE,
    RENDEZVOUS_REQUEST_BURST,
    RENDEZVOUS_REQUEST_RATE,
)
from .link import Link
from .pins import NO_PIN, Pin
from .qlog import ConnectionQlog, QlogTrace
from .ratelimit import TokenBucket
from .roles import FromPeer, ToPeer

if TYPE_CHECKING:
    from .streams import Stream


@dataclass(eq=False)
class Timer:
    """A deadline on the engine's clock and what to run at it."""

    at: float
    fn: Callable[..., object]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(frozen=True)
class RelaySessionInfo:
    """One relay session we forward for (``QuicP2p.relay_sessions()``)."""

    session_id: int
    #: The Node that asked for the session, and the Node it named.
    asker: Address
    target: Address
    #: Bytes of packets the two sides sent into it so far (what
    #: ``RelayPolicy.max_bytes`` counts).
    bytes: int


@dataclass(frozen=True)
class ConnectionInfo:
    """One QUIC connection as the engine sees it now (``Engine.connections()``)."""

    id: int
    peer_addr: Address
    #: The key the peer proved (None until its TLS handshake completed).
    peer_id: PeerId | None
    #: We dialled it (else the peer did).
    outgoing: bool
    #: Its TLS handshake completed.
    up: bool
    #: Closed (by either side); ``close_reason`` says why.
    closed: bool
    close_reason: str
    #: The close's error code (ours: ``wire.ErrorCode``; else QUIC's), and
    #: whether the peer sent it; None / False while open.
    close_code: int | None
    closed_by_peer: bool
    #: aioquic's smoothed round-trip estimate, once it has one.
    rtt: float | None
    #: Its packets go through a relay session.
    relayed: bool
    #: The connection IDs it is known by.
    cids: tuple[bytes, ...]


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class SendResult:
    """The one outcome of the send ``id``."""

    id: int
    outcome: SentUserMessage | UnsentUserMessage


@dataclass(frozen=True)
class ConnectResult:
    """The connect ``id`` ended: ``peer`` connected, or why not (``error``)."""

    id: int
    peer_addr: Address
    peer: Peer | None
    error: Reason = NO_REASON


@dataclass(frozen=True)
class AnswerResult:
    """The request ``id`` was answered (``frame``), or why not (``error``)."""

    id: int
    peer_addr: Address
    frame: Frame | None
    error: Reason = NO_REASON


@dataclass(frozen=True)
class ProbeResult:
    """The probe ``id`` reached its node (TLS completed) or not."""

    id: int
    reached: bool


@dataclass(frozen=True)
class BootstrapWon:
    """The bootstrap ``group`` has its winner."""

    group: int
    node: NodeInfo


@dataclass(frozen=True)
class ReachCheckWanted:
    """A peer asked us to dial it from a fresh socket: the driver opens one
    and calls ``Engine.probe`` from it, then ``Engine.reach_checked``."""

    id: int
    target: NodeInfo


@dataclass(frozen=True)
class CacheChanged:
    """The bootstrap cache changed: the driver schedules a save."""


Result = (
    SendResult
    | ConnectResult
    | AnswerResult
    | ProbeResult
    | BootstrapWon
    | ReachCheckWanted
    | CacheChanged
    | QlogTrace
)


# ---------------------------------------------------------------- records
@dataclass(eq=False)
class Send:
    id: int
    peer_addr: Address
    msg: bytes
    token: int
    #: What the caller's Peer or NodeInfo pins.
    pin: Pin = NO_PIN
    #: The peer it went to, once known.
    peer_id: PeerId | None = None
    resolved: bool = False
    #: The caller stopped waiting: the outcome goes to the events instead.
    abandoned: bool = False


@dataclass(eq=False)
class Waiter:
    """A connect (or bootstrap attempt) waiting for a peer record."""

    id: int
    pin: Pin = NO_PIN


@dataclass(eq=False)
class Request:
    """One of our requests (echo, punch, relay, reach) awaiting its answer."""

    id: int
    kind: FrameKind
    body: bytes
    deadline: Timer | None = None
    #: The msg_id it went out with (0: waiting for the connection to come up).
    msg_id: int = 0


@dataclass(eq=False)
class Conn:
    """A QUIC connection with our link on it and its engine state."""

    id: int
    quic: PeerConnection
    link: Link
    outgoing: bool
    cids: set[bytes] = field(default_factory=set)
    timer: Timer | None = None
    timer_at: float | None = None
    record: Record | None = None
    #: NodeInfo we dialled (what it pins), for outgoing connections.
    target: NodeInfo | None = None
    #: The key and certificate the peer proved in the TLS handshake.
    peer_id: PeerId | None = None
    peer_cert: bytes = b""
    handshake: FrameKind | None = None
    echo_only: bool = False
    #: The QUIC handshake deadline (seconds) of an outgoing connection.
    timeout: float = HANDSHAKE_TIMEOUT
    outstanding: dict[int, Send] = field(default_factory=dict)
    #: Bytes of ``outstanding``; sends beyond the limit wait in ``waiting``.
    unacked_bytes: int = 0
    waiting: deque[Send] = field(default_factory=deque)
    #: When the peer last acknowledged (or refused) something, or sends began.
    progress_at: float = 0.0
    #: A Client's handshake, acknowledged by the Node once it accepted us.
    handshake_id: int = 0
    #: Key of the per-IP count an incoming connection is counted under.
    ip_key: bytes | None = None
    #: A punch a rendezvous started (not yet a connected peer's): it does not
    #: take a connection slot from a real peer.
    punch: bool = False
    #: An incoming connection counted as joining (``MAX_JOINING``) until its
    #: peer is connected or the connection is forgotten: the address key it
    #: is counted under (``ip_key`` may move with the path meanwhile).
    joining: bytes | None = None
    #: Our requests sent on it, by msg_id, and those waiting for it to come up.
    requests: dict[int, Request] = field(default_factory=dict)
    unsent_requests: list[Request] = field(default_factory=list)
    #: A probe (a throwaway connection to test a path): its id, and the peer
    #: whose relayed path it tests (None: someone waits on the result).
    probe: int = 0
    probe_for: Record | None = None
    deadline: Timer | None = None
    finished: bool = False
    #: The relay session our packets travel through; None: the socket.
    relay: RelayPath | None = None
    #: The relay session an incoming connection arrived through (kept after
    #: an upgrade to direct): its peer must prove the session's certificate.
    came_via: RelayPath | None = None
    #: The socket it uses: 0 ours, else one the driver opened for it.
    socket: int = 0
    #: When a datagram of the peer's last arrived on it.
    heard_at: float = 0.0
    #: Its bidirectional streams not yet over, by QUIC stream id; the
    #: highest stream id the peer opened; how many of its streams count
    #: against ``max_streams_per_peer``.
    streams: dict[int, Stream] = field(default_factory=dict)
    last_peer_stream: int = -1
    incoming_streams: int = 0
    #: UDP payloads (QUIC packets, coalesced) and their bytes, each way.
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    #: Its qlog trace (``Config.qlog_dir`` set), emitted when it is forgotten.
    qlog: ConnectionQlog | None = None


@dataclass(eq=False)
class Record:
    """What we know of one peer: its id once proven, the address we last saw
    it at, and our connections with it."""

    addr: Address
    peer_id: PeerId | None = None
    to: ToPeer = ToPeer.NONE
    frm: FromPeer = FromPeer.NONE
    out: Conn | None = None
    inn: Conn | None = None
    kind: PeerKind | None = None
    cert: bytes = b""
    connected: bool = False
    dead: bool = False
    we_contacted: bool = False
    waiters: list[Waiter] = field(default_factory=list)
    pending_sends: list[Send] = field(default_factory=list)
    pending_reads: list[tuple[Conn, Frame]] = field(default_factory=list)
    #: Bytes of ``pending_reads`` (taken from the engine's unproven budget).
    pending_bytes: int = 0
    reverse_timer: Timer | None = None
    #: The one Initial we accept without a Retry from this address while we
    #: wait for its reverse connection has arrived (see Engine._skip_retry).
    reverse_admitted: bool = False
    bootstrap: BootstrapGroup | None = None
    #: What the bootstrap contact pinned (checked before it wins).
    bootstrap_pin: Pin = NO_PIN
    failure: Reason = NO_REASON
    #: Set while our connections to this peer send through a relay.
    relay: RelayPath | None = None
    #: As a rendezvous of ours: the punches it may still start at our side.
    punch_notices: TokenBucket = field(
        default_factory=lambda: TokenBucket(PUNCH_NOTICE_RATE, PUNCH_NOTICE_BURST)
    )
    #: As an asker of ours (we are its rendezvous): its punch/relay requests.
    rendezvous_requests: TokenBucket = field(
        default_factory=lambda: TokenBucket(RENDEZVOUS_REQUEST_RATE, RENDEZVOUS_REQUEST_BURST)
    )
    #: A punch dial this rendezvous started (nothing else has used the
    #: record yet): that rendezvous's relay session may replace it.
    punched_by: Record | None = None
    #: Wall-clock time it became connected (0: not yet).
    connected_at: float = 0.0
    #: What the user did with this peer (``peer_stats``).
    messages_sent: int = 0
    messages_unsent: int = 0
    messages_received: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0

    def peer(self) -> Peer:
        if self.kind is PeerKind.CLIENT:
            return Peer.client(self.addr, self.peer_id)
        return Peer.node(self.node_info())

    def node_info(self) -> NodeInfo:
        """The Node as proven: its address, certificate and id."""
        return NodeInfo(self.addr, self.cert, self.peer_id)


@dataclass(eq=False)
class RelayPath:
    """Our side of a relay session: our connections with ``peer_addr`` send
    their QUIC packets inside RELAY_PACKET frames to ``relay``, which
    forwards them; TLS runs end to end, so the relay sees no plaintext."""

    relay: Record
    session: int
    peer_addr: Address  # the other side, as the relay sees it
    #: The key the other side must prove end to end (the relay vouches for
    #: nothing): the one we dialled, else the one announced.
    expect: PeerId
    conns: set[Conn] = field(default_factory=set)  # those sending through it
    record: Record | None = None  # the peer reached through it
    #: We send directly now; packets still arriving through the relay are taken.
    direct: bool = False
    #: The one incoming connection a session carries has arrived.
    accepted: bool = False
    closed: bool = False
    deadline: Timer | None = None


@dataclass(eq=False)
class RelaySession:
    """As the relay: packets between two Nodes connected to us."""

    id: int
    a: Record
    b: Record
    bytes: int = 0
    #: The sides that said they go direct now.
    direct: set[Record] = field(default_factory=set)
    timer: Timer | None = None


@dataclass(eq=False)
class BootstrapGroup:
    """One bootstrap: the first member to connect wins."""

    id: int
    won: bool = False
    members: list[Record] = field(default_factory=list)


@dataclass(eq=False)
class Totals:
    """The endpoint's lifetime counts as they grow (``EndpointTotals`` is
    the snapshot; same fields). Packets lost are summed here from each
    connection as the engine forgets it, the live ones added at snapshot."""

    bytes_sent: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    messages_sent: int = 0
    messages_unsent: int = 0
    messages_received: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    streams_opened: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
