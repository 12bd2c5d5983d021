"""The asyncio driver and the public ``QuicP2p`` endpoint.

One UDP socket carries every connection, inbound and outbound: the address
others see is the address we listen on, which the Node reachability proof
depends on. Datagrams are demultiplexed by destination connection ID to
aioquic ``QuicConnection`` objects; unknown Initials go through ``Admission``
(stateless retry) before any state exists. Each connection follows aioquic's
adapter loop: feed it, drain its events, transmit, re-arm its one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicErrorCode

from . import certs, tls
from .accel import RetryTokens, classify_datagram
from .accel.types import FRAME_MAX_BODY, DatagramError, Frame, FrameKind
from .admission import Accept, Admission, Ignore, Reply
from .bootstrap_cache import BootstrapCache
from .cache_store import CacheStore
from .channel import EventChannel
from .config import CompleteCert, Config, OurType, RelayPolicy
from .errors import QuicP2pError
from .events import (
    BootstrapFailure,
    BootstrappedTo,
    ConnectedTo,
    ConnectionFailure,
    Event,
    Finish,
    NewMessage,
    SentUserMessage,
    UnsentUserMessage,
    UpgradedToDirect,
)
from .link import (
    HeldBytes,
    Link,
    LinkAcked,
    LinkDown,
    LinkEvent,
    LinkFrame,
    LinkRefused,
    LinkUp,
)
from .peer import Address, NodeInfo, Peer, PeerKind, Reachability, normalize_address
from .ratelimit import TokenBucket
from .roles import Action, FromPeer, ToPeer, on_incoming_handshake, on_outgoing_up
from .scope import could_observe
from .wire import (
    ErrorCode,
    RejectReason,
    RelayClose,
    WireError,
    decode_address,
    decode_punch_info,
    decode_reach_result,
    decode_relay_close,
    decode_relay_open,
    encode_address,
    encode_punch_info,
    encode_reach_result,
    encode_reject,
    encode_relay_close,
    encode_relay_open,
    frame,
)

log = logging.getLogger(__name__)

#: Length of the connection IDs we issue (aioquic's default); short headers
#: carry no length, so the demultiplexer must know it.
CID_LENGTH = 8
#: An incoming connection must send its role handshake (or an echo request)
#: within this time, or it is closed.
HANDSHAKE_TIMEOUT = 10.0
#: A Node that dialled us must be reachable back within this time.
REVERSE_CONNECT_TIMEOUT = 10.0
#: Requests to a peer (echo, punch, relay) wait this long for the answer,
#: the connection coming up included; a reachability check adds the time
#: the checker takes to dial us back (PROBE_TIMEOUT).
ECHO_TIMEOUT = 5.0
#: How many nodes ``our_connection_info`` asks at most.
ECHO_QUORUM = 3
#: Messages a not-yet-proven Node may send before it is connected (held,
#: unacknowledged, until the reverse connection completes).
MAX_PENDING_READS = 256
#: Bytes of messages we hold at once for all peers not yet proven, arriving
#: or complete (a claimed Node before its reverse connection succeeds): an
#: honest Node sends only once connected, so little is needed, and an
#: unproven peer must not make us buffer what it likes.
UNPROVEN_MAX_BYTES = 4 * 1024 * 1024
#: New user messages waiting in ``events()`` before further ones are refused
#: (unsent at their sender). Other events never count against it.
DEFAULT_EVENT_CAPACITY = 65_536
#: A connection with sends outstanding that the peer acknowledges nothing of
#: for this long is closed, every send on it unsent: a peer that stops
#: acknowledging (or withholds flow-control credit) cannot hold sends forever.
DEFAULT_SEND_TIMEOUT = 60.0
#: Bytes of user messages handed to one connection and not yet acknowledged;
#: further sends wait (``send()`` returns later) until acknowledgements make
#: room, so a slow or stalled peer bounds what we buffer for it.
DEFAULT_MAX_UNACKED_BYTES = 64 * 1024 * 1024
#: Incoming connections from one IPv4 address (one IPv6 /64) at once; more
#: are refused (CONNECTION_REFUSED), so one host cannot take every slot.
DEFAULT_MAX_CONNECTIONS_PER_IP = 32
#: Hole punching: attempts per connect_to(via=...), the QUIC handshake
#: timeout of each (Initials are retransmitted within it), the pause between
#: attempts (doubled each time), and the margin the rendezvous adds to the
#: start delays it derives from its round-trip times to both sides.
PUNCH_ATTEMPTS = 3
PUNCH_HANDSHAKE_TIMEOUT = 3.0
PUNCH_BACKOFF = 0.25
PUNCH_START_DELAY_MS = 50
#: Punches a node will join at once when a rendezvous asks (abuse bound).
PUNCH_MAX_PENDING = 16
#: Dials a rendezvous may start at our side with unrequested PUNCH_INFO
#: notices (token buckets: burst, then per second), per rendezvous and in
#: all; beyond them notices are declined and counted. A punch sends a few
#: Initials (about four in PUNCH_HANDSHAKE_TIMEOUT), so this bounds what a
#: hostile Node can make us send to addresses it names.
PUNCH_NOTICE_BURST = 8
PUNCH_NOTICE_RATE = 2.0
PUNCH_DIAL_BURST = 16
PUNCH_DIAL_RATE = 4.0
#: As a rendezvous: punch and relay requests one asker may make (a token
#: bucket: burst, then per second); beyond it they are refused
#: (RATE_LIMITED), so an asker cannot make us flood the Node it names. An
#: asker refused so waits RATE_LIMITED_PAUSE and asks again, up to
#: RATE_LIMITED_RETRIES times, so honest bursts (many connect_to at once)
#: are paced rather than failed.
RENDEZVOUS_REQUEST_BURST = 16
RENDEZVOUS_REQUEST_RATE = 4.0
RATE_LIMITED_PAUSE = 0.5
RATE_LIMITED_RETRIES = 8
#: As a relay: bytes of forwarded packets we hold for one side that has not
#: acknowledged them (it stopped reading, or withholds flow-control credit);
#: packets beyond it are dropped, like a full router queue — the two sides'
#: own QUIC recovers them — so a stalled side costs at most this much memory.
RELAY_MAX_BACKLOG = 1024 * 1024
#: A relayed peer: after the first punch failed and the relay connected,
#: the remaining punches are tried in the background at these delays
#: (seconds, one after the other), then less often; a success moves the
#: connection to the direct path (UpgradedToDirect).
RELAY_UPGRADE_DELAYS = (0.25, 0.5, 30.0, 60.0, 120.0, 240.0)
#: Relay sessions we take part in at once (as either side, not as relay).
RELAY_MAX_PATHS = 64
#: Bit set in the session id of RELAY_PACKET/RELAY_CLOSE frames sent by the
#: relay, so a peer that relays for us while we relay for it never confuses
#: the two directions.
FROM_RELAY = 1 << 63
#: Probes (a relayed pair's direct path, a reachability check from a fresh
#: socket) are throwaway connections given this long to complete TLS.
PROBE_TIMEOUT = PUNCH_HANDSHAKE_TIMEOUT
#: Reachability checks a node runs for others at once.
REACH_MAX_PENDING = 4
#: Bootstrap contacts dialled at once.
BOOTSTRAP_PARALLEL = 8
#: A bootstrap gives up after this long, whatever is still in flight.
BOOTSTRAP_TIMEOUT = 60.0
#: Cache changes within this window are written to disk together.
CACHE_SAVE_DELAY = 0.05
#: Source addresses whose canonical form is remembered (cleared when full).
ADDRESS_CACHE_SIZE = 4096
#: Default cap on concurrent QUIC connections of one endpoint.
DEFAULT_MAX_CONNECTIONS = 1_000
#: Datagrams read per wake-up: asyncio's datagram transport reads one per
#: readiness event, then the loop selects again; we drain what is queued (up
#: to this many) and transmit once, so a burst of packets is answered with one
#: flush (coalesced ACKs) instead of one per datagram.
RECV_BATCH = 64
#: Largest UDP payload we read (IPv4/IPv6 maximum).
RECV_BUFFER = 65_535
#: Socket buffers asked for (the kernel caps them at net.core.[rw]mem_max): a
#: full congestion window arriving between two reads must not be dropped.
SOCKET_BUFFER = 4 * 1024 * 1024


class ConnectionFailedError(QuicP2pError):
    """``connect_to`` did not end with a connected peer; ``reason`` says why."""

    def __init__(self, peer_addr: Address, reason: str) -> None:
        super().__init__(f"connection to {peer_addr[0]}:{peer_addr[1]} failed: {reason}")
        self.peer_addr = peer_addr
        self.reason = reason


class EchoError(QuicP2pError):
    """``our_connection_info`` could not learn our address."""


class EchoDisagreementError(EchoError):
    """Nodes we asked saw us at different addresses (NAT, or a lying node)."""

    def __init__(self, answers: dict[Address, Address]) -> None:
        seen = ", ".join(f"{k[0]}:{k[1]} saw {v[0]}:{v[1]}" for k, v in answers.items())
        super().__init__(f"echo answers disagree: {seen}")
        self.answers = answers


class BootstrapError(QuicP2pError):
    """``bootstrap`` found no contact; ``reasons`` maps each tried address to why."""

    def __init__(self, message: str, reasons: dict[Address, str]) -> None:
        detail = "; ".join(f"{a[0]}:{a[1]}: {r}" for a, r in reasons.items())
        super().__init__(f"{message}: {detail}" if detail else message)
        self.reasons = reasons


class EndpointClosedError(QuicP2pError):
    """The endpoint is not running (not started, or closed)."""


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


class _NoRendezvous(ConnectionFailedError):
    """The rendezvous cannot help at all (not connected, does not know the
    peer): no further punch or relay attempt is made."""


@dataclass(eq=False)
class _Send:
    peer_addr: Address
    msg: bytes
    token: int
    future: asyncio.Future[SentUserMessage | UnsentUserMessage]
    #: The certificate the caller's NodeInfo pins (b"": none).
    pin: bytes = b""
    resolved: bool = False


@dataclass(eq=False)
class _Waiter:
    """A ``connect_to`` (or bootstrap attempt) waiting for a peer record."""

    future: asyncio.Future[Peer]
    pin: bytes = b""


@dataclass(eq=False)
class _Conn:
    """A QUIC connection with our link on it and its driver state."""

    quic: QuicConnection
    link: Link
    outgoing: bool
    cids: set[bytes] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    record: _Record | None = None
    #: NodeInfo we dialled (pinned certificate), for outgoing connections.
    target: NodeInfo | None = None
    handshake: FrameKind | None = None
    echo_only: bool = False
    #: The QUIC handshake deadline (seconds) of an outgoing connection.
    timeout: float = HANDSHAKE_TIMEOUT
    outstanding: dict[int, _Send] = field(default_factory=dict)
    #: Bytes of ``outstanding``; sends beyond the limit wait in ``waiting``.
    unacked_bytes: int = 0
    waiting: deque[_Send] = field(default_factory=deque)
    #: When the peer last acknowledged (or refused) something, or sends began.
    progress_at: float = 0.0
    #: A Client's handshake, acknowledged by the Node once it accepted us.
    handshake_id: int = 0
    #: Key of the per-IP count an incoming connection is counted under.
    ip_key: bytes | None = None
    #: A punch a rendezvous started (not yet a connected peer's): it does not
    #: take a connection slot from a real peer.
    punch: bool = False
    #: Our requests (echo, punch, relay) awaiting the answer frame, by msg_id.
    requests: dict[int, asyncio.Future[Frame]] = field(default_factory=dict)
    up_future: asyncio.Future[None] | None = None
    deadline: asyncio.TimerHandle | None = None
    finished: bool = False
    #: The relay session our packets travel through; None: the socket.
    relay: _RelayPath | None = None
    #: The relay session an incoming connection arrived through (kept after
    #: an upgrade to direct): its peer must prove the session's certificate.
    came_via: _RelayPath | None = None
    #: A socket of its own (a reachability check); None: the endpoint's.
    transport: asyncio.DatagramTransport | None = None


@dataclass(eq=False)
class _Record:
    """What we know of one peer address (the seed's ``Connection``)."""

    addr: Address
    to: ToPeer = ToPeer.NONE
    frm: FromPeer = FromPeer.NONE
    out: _Conn | None = None
    inn: _Conn | None = None
    kind: PeerKind | None = None
    cert: bytes = b""
    connected: bool = False
    dead: bool = False
    we_contacted: bool = False
    waiters: list[_Waiter] = field(default_factory=list)
    pending_sends: list[_Send] = field(default_factory=list)
    pending_reads: list[tuple[_Conn, Frame]] = field(default_factory=list)
    #: Bytes of ``pending_reads`` (taken from the endpoint's unproven budget).
    pending_bytes: int = 0
    reverse_timer: asyncio.TimerHandle | None = None
    #: The one Initial we accept without a Retry from this address while we
    #: wait for its reverse connection has arrived (see _skip_retry).
    reverse_admitted: bool = False
    bootstrap: _BootstrapGroup | None = None
    #: The certificate the bootstrap contact pinned (checked before it wins).
    bootstrap_pin: bytes = b""
    failure: str = ""
    #: Set while our connections to this peer send through a relay.
    relay: _RelayPath | None = None
    #: As a rendezvous of ours: the punches it may still start at our side.
    punch_notices: TokenBucket = field(
        default_factory=lambda: TokenBucket(PUNCH_NOTICE_RATE, PUNCH_NOTICE_BURST)
    )
    #: As an asker of ours (we are its rendezvous): its punch/relay requests.
    rendezvous_requests: TokenBucket = field(
        default_factory=lambda: TokenBucket(RENDEZVOUS_REQUEST_RATE, RENDEZVOUS_REQUEST_BURST)
    )
    #: A punch dial the rendezvous at this address started (nothing else has
    #: used the record yet): that rendezvous's relay session may replace it.
    punched_by: Address | None = None

    def peer(self) -> Peer:
        if self.kind is PeerKind.CLIENT:
            return Peer.client(self.addr)
        return Peer.node(NodeInfo(self.addr, self.cert))


@dataclass(eq=False)
class _RelayPath:
    """Our side of a relay session: our connections with ``peer_addr`` send
    their QUIC packets inside RELAY_PACKET frames to ``relay``, which
    forwards them; TLS runs end to end, so the relay sees no plaintext."""

    relay: _Record
    session: int
    peer_addr: Address  # the other side, as the relay sees it
    #: The certificate the other side must present end to end (the relay
    #: vouches for nothing): the pin we dialled with, else the one announced.
    expect: bytes
    conns: set[_Conn] = field(default_factory=set)  # those sending through it
    record: _Record | None = None  # the peer reached through it
    #: We send directly now; packets still arriving through the relay are taken.
    direct: bool = False
    #: The one incoming connection a session carries has arrived.
    accepted: bool = False
    closed: bool = False
    deadline: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _RelaySession:
    """As the relay: packets between two Nodes connected to us."""

    id: int
    a: _Record
    b: _Record
    bytes: int = 0
    direct: set[Address] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _BootstrapGroup:
    """One ``bootstrap()`` call: the first member to connect wins."""

    winner: asyncio.Future[NodeInfo]
    members: list[_Record] = field(default_factory=list)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: QuicP2p) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        endpoint = self.endpoint
        endpoint._datagram_received(data, addr)
        # Drain what else is queued on the socket, then transmit once.
        sock = endpoint._sock
        if sock is not None:
            receive = endpoint._datagram_received
            recvfrom = sock.recvfrom
            for _ in range(RECV_BATCH - 1):
                try:
                    data, addr = recvfrom(RECV_BUFFER)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    self.error_received(exc)
                    break
                receive(data, addr)
        endpoint._flush()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (e.g. port unreachable) arrive here; QUIC's own timers
        # decide when a peer is gone, so this is only worth a debug line.
        log.debug("socket error: %s", exc)


class _SideProtocol(asyncio.DatagramProtocol):
    """A reachability check's own socket: it takes only packets of the
    connection dialled from it, and never accepts a connection."""

    def __init__(self, endpoint: QuicP2p) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.endpoint._side_datagram(data, addr)


class QuicP2p:
    """A peer-to-peer endpoint: one UDP socket, QUIC connections to peers.

    Use it as an async context manager (``async with QuicP2p(config) as node``)
    or call ``start()`` and ``aclose()``.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        event_capacity: int = DEFAULT_EVENT_CAPACITY,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_IP,
        stateless_retry: bool = True,
        retry_above_rate: float = 0.0,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        max_unacked_bytes: int = DEFAULT_MAX_UNACKED_BYTES,
        outcome_events: bool = False,
        relay: RelayPolicy | None = None,
    ) -> None:
        self.config = config if config is not None else Config()
        if event_capacity < 1 or max_connections < 1 or max_connections_per_ip < 1:
            raise QuicP2pError(
                "event_capacity, max_connections and max_connections_per_ip must be positive"
            )
        if send_timeout is not None and not send_timeout > 0:
            raise QuicP2pError("send_timeout must be positive (or None: never)")
        if max_unacked_bytes < 1:
            raise QuicP2pError("max_unacked_bytes must be positive")
        if relay is not None and not isinstance(relay, RelayPolicy):
            raise TypeError("relay must be a RelayPolicy (or None: do not relay)")
        if relay is not None and self.config.our_type is not OurType.NODE:
            raise QuicP2pError("only a Node can relay")
        #: Our offer to relay for others (None: we refuse relay requests).
        self.relay_policy = relay
        self._channel = EventChannel(event_capacity)
        self.max_connections = max_connections
        #: Incoming connections one IPv4 address (or IPv6 /64) may hold at once.
        self.max_connections_per_ip = max_connections_per_ip
        #: Seconds a connection may leave sends unacknowledged (None: forever).
        self.send_timeout = send_timeout
        #: Unacknowledged bytes per connection before ``send()`` waits.
        self.max_unacked_bytes = max_unacked_bytes
        #: Also put every send's outcome on ``events()`` (the seed's way). Off,
        #: only outcomes whose ``send()`` caller stopped waiting go there.
        self.outcome_events = outcome_events
        self._tokens = RetryTokens(random_bytes=os.urandom)
        self._admission = Admission(
            self._tokens,
            random_bytes=os.urandom,
            retry=stateless_retry,
            retry_above_rate=retry_above_rate,
            cid_length=CID_LENGTH,
        )
        self._cert: CompleteCert = self.config.our_complete_cert or certs.generate_self_signed(
            now=datetime.datetime.now(datetime.UTC)
        )
        self._server_cfg: QuicConfiguration | None = None
        if self.config.our_type is OurType.NODE:
            self._server_cfg = tls.server_configuration(
                self.config, self._cert, connection_id_length=CID_LENGTH
            )
        self._transport: asyncio.DatagramTransport | None = None
        #: A duplicate of the transport's socket, to drain queued datagrams.
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cids: dict[bytes, _Conn] = {}
        self._conns: set[_Conn] = set()
        self._records: dict[Address, _Record] = {}
        self._dirty: set[_Conn] = set()
        self._flush_scheduled = False
        self._addr_cache: dict[tuple[Any, ...], Address] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._local_addr: Address | None = None
        self._counters: dict[str, int] = {}
        self._cache = BootstrapCache(
            hard_coded=self.config.hard_coded_contacts, random_bytes=os.urandom
        )
        self._cache_store: CacheStore | None = None
        self._cache_save: asyncio.TimerHandle | None = None
        self._bootstrap: _BootstrapGroup | None = None
        self._punches_pending = 0
        self._relay_paths: dict[tuple[Address, int], _RelayPath] = {}
        self._relay_sessions: dict[int, _RelaySession] = {}
        self._next_relay_session = 1
        self._relay_backlog_peak = 0
        self._reach_pending = 0
        #: Messages held for peers not yet proven (see UNPROVEN_MAX_BYTES).
        self._unproven = HeldBytes(UNPROVEN_MAX_BYTES)
        self._per_ip: dict[bytes, int] = {}
        self._punch_dials = TokenBucket(PUNCH_DIAL_RATE, PUNCH_DIAL_BURST)
        #: Connections flagged ``punch`` (see _Conn.punch).
        self._punch_conns = 0
        #: Our socket is IPv6 (maybe dual stack): IPv4 peers are sent to as
        #: ``::ffff:a.b.c.d`` (we name them ``a.b.c.d`` everywhere else).
        self._v6_socket = False
        #: IPv4 peers are reachable from our socket (an IPv4 or dual-stack one).
        self._ipv4_ok = True

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> QuicP2p:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Binds the socket and starts serving."""
        if self._transport is not None:
            raise QuicP2pError("endpoint already started")
        self._loop = asyncio.get_running_loop()
        # Loaded before binding: a cache problem is a warning, never a failed start.
        # In a thread: waiting for another process's lock must not stall the loop.
        self._cache_store = CacheStore(self.config.bootstrap_cache_dir)
        self._cache.merge(await asyncio.to_thread(self._cache_store.load))
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self),
            local_addr=(self.config.bind_ip, self.config.bind_port),
        )
        self._transport = transport
        self._local_addr = normalize_address(transport.get_extra_info("sockname"))
        tsock = transport.get_extra_info("socket")
        self._v6_socket = tsock is not None and tsock.family == socket.AF_INET6
        if self._v6_socket:
            assert tsock is not None
            v6only = 1
            with contextlib.suppress(OSError):
                v6only = tsock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            self._ipv4_ok = self._local_addr[0] == "::" and not v6only
        else:
            self._ipv4_ok = True
        self._sock = _drain_socket(transport)
        if self.config.keep_alive_interval_msec > 0 or self.send_timeout:
            self._spawn(self._housekeeping())
        log.info("endpoint %s bound to %s:%d", self.config.our_type.value, *self._local_addr)

    async def aclose(self) -> None:
        """Closes every connection; pending sends resolve unsent; ``Finish`` is
        the last event."""
        if self._closing:
            return
        self._closing = True
        for record in list(self._records.values()):
            self._fail(record, "endpoint closed", ErrorCode.SHUTDOWN, report=False)
        for path in list(self._relay_paths.values()):
            self._close_path(path, "endpoint closed", notify=False)
        for session in list(self._relay_sessions.values()):
            self._end_relay_session(session, "endpoint closed")
        for conn in list(self._conns):
            self._close_conn(conn, ErrorCode.SHUTDOWN, "endpoint closed")
        self._flush()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._conns):
            self._forget(conn)
        if self._cache_save is not None:
            self._cache_save.cancel()
            self._save_cache()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._transport is not None:
            self._transport.close()
            # Let the transport finish closing its socket before we return.
            await asyncio.sleep(0)
        self._channel.push(Finish())

    # ------------------------------------------------------------ properties
    @property
    def local_addr(self) -> Address:
        """The (host, port) actually bound."""
        if self._local_addr is None:
            raise EndpointClosedError("endpoint not started")
        return self._local_addr

    @property
    def stats(self) -> dict[str, int]:
        """Counters of dropped or refused input (garbage datagrams, limits,
        punch and relay refusals), of what admission did with unknown
        Initials (``"admission: accept"``, ``"...: retry"``, ``"...: refused"``,
        ``"...: invalid token"``, ...), the QUIC connections open now
        (``"connections"``) and the relay sessions we are a side of, the bytes
        held for peers not yet proven (now, and the most ever held), and, for
        a relay, the most bytes ever queued for one side."""
        out = dict(self._counters)
        out.update({f"admission: {k}": v for k, v in self._admission.counters.items()})
        out["connections"] = len(self._conns)
        out["relay: sessions we are a side of"] = len(self._relay_paths)
        out["unproven peers: bytes held"] = self._unproven.used
        out["unproven peers: most bytes held"] = self._unproven.peak
        if self.relay_policy is not None:
            out["relay: most bytes queued for one side"] = self._relay_backlog_peak
        return out

    def relay_sessions(self) -> list[RelaySessionInfo]:
        """As a relay: the sessions we forward packets for now."""
        sessions = self._relay_sessions.values()
        return [RelaySessionInfo(s.id, s.a.addr, s.b.addr, s.bytes) for s in sessions]

    @property
    def node_info(self) -> NodeInfo:
        """Our NodeInfo at the bound address (see ``our_connection_info``)."""
        return NodeInfo(self.local_addr, self._cert.cert_der)

    @property
    def our_certificate(self) -> bytes:
        return self._cert.cert_der

    def is_hard_coded_contact(self, node_info: NodeInfo) -> bool:
        return node_info in self.config.hard_coded_contacts

    def connected_peers(self) -> list[Peer]:
        return [r.peer() for r in self._records.values() if r.connected]

    def relayed_via(self, peer: Peer | NodeInfo | Address) -> Address | None:
        """The relay our packets to a connected ``peer`` go through, or None
        when they go directly (or we are not connected to it)."""
        addr = peer.peer_addr if isinstance(peer, (Peer, NodeInfo)) else normalize_address(peer)
        record = self._records.get(addr)
        if record is None or not record.connected or record.relay is None:
            return None
        return record.relay.relay.addr

    # ------------------------------------------------------------ public API
    async def events(self) -> AsyncIterator[Event]:
        """Every event in order; ends after ``Finish``."""
        async for event in self._channel:
            yield event

    async def next_event(self) -> Event:
        """The next event, waiting for one."""
        return await self._channel.get()

    def poll_event(self) -> Event | None:
        """The next event if one is already queued, else None (no waiting)."""
        return self._channel.get_nowait()

    async def connect_to(
        self,
        node: NodeInfo,
        *,
        via: NodeInfo | Peer | Address | None = None,
        punch: bool = True,
        relay: bool = True,
    ) -> Peer:
        """Connects to a Node; returns once it is connected (for a Node peer:
        both directions proven). Raises ``ConnectionFailedError``.

        ``via``: a Node we are connected to that is also connected to ``node``
        (a rendezvous; ``node`` is given as the rendezvous knows it). Both
        sides must be Nodes. With ``punch``, the rendezvous tells each side
        the other's address as it sees them and a common start time, and both
        dial at once from their one socket, so NAT mappings open both ways
        (hole punching). With ``relay``, if the first punch fails (or
        ``punch`` is off), packets go through the rendezvous when it offers to
        relay (``RelayPolicy``): the peer is connected, ``relayed_via`` names
        the relay, and the remaining punches run in the background; one that
        succeeds moves the connection to the direct path (``UpgradedToDirect``).
        Called again for a relayed peer, it tries one punch now and returns
        the peer, direct or still relayed."""
        self._check_running()
        if not isinstance(node, NodeInfo):
            raise TypeError("connect_to takes a NodeInfo")
        if self._is_us(node):
            raise ConnectionFailedError(
                node.peer_addr, "that is us (our own address or certificate)"
            )
        record = self._records.get(node.peer_addr)
        if record is not None and record.connected:
            problem = _pin_problem(record, node.peer_cert_der)
            if problem is not None:
                raise ConnectionFailedError(node.peer_addr, problem)
        if via is None:
            if record is not None and record.connected:
                return record.peer()
            return await self._connect_and_wait(node, HANDSHAKE_TIMEOUT)
        if not (punch or relay):
            raise QuicP2pError("connect_to via a rendezvous needs punch or relay (or both)")
        if self.config.our_type is not OurType.NODE:
            raise QuicP2pError("punching and relaying connect Nodes; a Client connects directly")
        via_addr = via.peer_addr if isinstance(via, (NodeInfo, Peer)) else normalize_address(via)
        if record is not None and record.connected:
            if record.relay is not None and punch:
                await self._try_upgrade(record, via_addr)
            return record.peer()
        return await self._connect_via(node, via_addr, punch=punch, relay=relay)

    async def _connect_and_wait(
        self, node: NodeInfo, handshake_timeout: float, relay: _RelayPath | None = None
    ) -> Peer:
        record = self._connect(node, we_contacted=True, timeout=handshake_timeout, relay=relay)
        if record.dead:
            raise ConnectionFailedError(node.peer_addr, record.failure)
        future: asyncio.Future[Peer] = self._running_loop().create_future()
        record.waiters.append(_Waiter(future, node.peer_cert_der))
        self._flush_soon()
        return await future

    async def _connect_via(
        self, node: NodeInfo, via_addr: Address, *, punch: bool, relay: bool
    ) -> Peer:
        """Punches (up to PUNCH_ATTEMPTS) and falls back to the relay after
        the first failed punch; ``_NoRendezvous`` ends it at once."""
        reasons: list[str] = []
        punches_left = PUNCH_ATTEMPTS if punch else 0
        relay_tried = not relay
        attempt = 0
        while True:
            if punches_left:
                punches_left -= 1
                attempt += 1
                try:
                    return await self._punch_once(node, via_addr)
                except _NoRendezvous:
                    raise
                except ConnectionFailedError as exc:
                    reasons.append(f"punch {attempt}: {exc.reason}")
            if not relay_tried:
                relay_tried = True
                try:
                    peer = await self._connect_relayed(node, via_addr)
                except _NoRendezvous:
                    raise
                except ConnectionFailedError as exc:
                    reasons.append(f"relay: {exc.reason}")
                else:
                    record = self._records.get(peer.peer_addr)
                    if punch and record is not None and record.relay is not None:
                        self._spawn(self._upgrade_loop(record, via_addr))
                    return peer
            if not punches_left:
                break
            await asyncio.sleep(PUNCH_BACKOFF * 2 ** (attempt - 1))
        if punch:
            summary = (
                f"hole punching failed after {attempt} attempts (a NAT that maps each "
                "destination to a new port, i.e. symmetric, cannot be punched)"
            )
            if relay:
                summary += " and the rendezvous did not relay"
        else:
            summary = "the rendezvous did not relay"
        raise ConnectionFailedError(node.peer_addr, f"{summary}: " + "; ".join(reasons))

    def _rendezvous_conn(self, via_addr: Address, target: Address) -> tuple[_Record, _Conn]:
        rendezvous = self._records.get(via_addr)
        conn = None if rendezvous is None else self._send_conn(rendezvous)
        if rendezvous is None or not rendezvous.connected or conn is None:
            raise _NoRendezvous(target, "not connected to the rendezvous")
        if rendezvous.relay is not None:
            raise _NoRendezvous(target, "the rendezvous is itself reached through a relay")
        return rendezvous, conn

    async def _ask(
        self, conn: _Conn, kind: FrameKind, body: bytes, within: float = ECHO_TIMEOUT
    ) -> Frame:
        """Sends a request frame and waits for the answer frame with the same
        msg_id, all within ``within`` seconds (the connection coming up
        included).
        Raises ``ConnectionFailedError`` (refused, lost, no answer)."""
        loop = self._running_loop()
        deadline = loop.time() + within
        if conn.up_future is not None and not conn.up_future.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.up_future), within)
        if conn.link.down is not None or not conn.link.up:
            raise ConnectionFailedError(conn.link.peer_addr, "connection closed")
        # From the id space of our user messages: a refusal of this request
        # must never read as the refusal of a message (freeing its slot).
        msg_id = conn.link.reserve_msg_id()
        answer: asyncio.Future[Frame] = loop.create_future()
        conn.requests[msg_id] = answer
        conn.link.send_frame(frame(kind, body, msg_id))
        self._dirty.add(conn)
        self._flush_soon()
        try:
            return await asyncio.wait_for(answer, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise ConnectionFailedError(conn.link.peer_addr, "no answer in time") from None
        finally:
            conn.requests.pop(msg_id, None)

    async def _ask_rendezvous(self, via_addr: Address, kind: FrameKind, target: Address) -> Frame:
        """A punch or relay request about ``target``; ``_NoRendezvous`` when the
        rendezvous cannot help at all."""
        paced = _REQUEST_REFUSALS[RejectReason.RATE_LIMITED]
        for attempt in range(RATE_LIMITED_RETRIES + 1):
            _, conn = self._rendezvous_conn(via_addr, target)
            try:
                return await self._ask(conn, kind, encode_address(target))
            except ConnectionFailedError as exc:
                if exc.reason != paced or attempt == RATE_LIMITED_RETRIES:
                    if exc.reason == _REQUEST_REFUSALS[RejectReason.UNKNOWN_PEER]:
                        raise _NoRendezvous(target, exc.reason) from None
                    if exc.reason in _REQUEST_REFUSALS.values():
                        raise ConnectionFailedError(target, exc.reason) from None
                    raise ConnectionFailedError(target, f"rendezvous: {exc.reason}") from None
            await asyncio.sleep(RATE_LIMITED_PAUSE)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def _punch_start(self, via_addr: Address, target: Address) -> NodeInfo:
        """Asks the rendezvous for a punch to ``target`` and waits out the start
        delay it gives; the other side as the rendezvous sees it."""
        answer = await self._ask_rendezvous(via_addr, FrameKind.PUNCH_REQUEST, target)
        try:
            delay_ms, addr, cert = decode_punch_info(answer.body)
        except WireError as exc:
            raise ConnectionFailedError(target, f"bad answer: {exc}") from None
        if addr != target:
            # It knows the target at the address we named: anything else
            # would make us dial where it likes.
            raise ConnectionFailedError(target, "bad answer: it names another address")
        await asyncio.sleep(delay_ms / 1000)
        return NodeInfo(addr, cert)

    async def _punch_once(self, node: NodeInfo, via_addr: Address) -> Peer:
        other = await self._punch_start(via_addr, node.peer_addr)
        return await self._connect_and_wait(
            NodeInfo(other.peer_addr, node.peer_cert_der or other.peer_cert_der),
            PUNCH_HANDSHAKE_TIMEOUT,
        )

    async def _connect_relayed(self, node: NodeInfo, via_addr: Address) -> Peer:
        busy = "a direct connection to that address is in progress"
        existing = self._records.get(node.peer_addr)
        if existing is not None and not self._punch_only(existing, via_addr):
            raise ConnectionFailedError(node.peer_addr, busy)
        answer = await self._ask_rendezvous(via_addr, FrameKind.RELAY_REQUEST, node.peer_addr)
        rendezvous = self._records[via_addr]  # _ask_rendezvous checked it
        try:
            session, addr, cert = decode_relay_open(answer.body)
        except WireError as exc:
            raise ConnectionFailedError(node.peer_addr, f"bad answer: {exc}") from None
        problem = None
        existing = self._records.get(addr)
        if addr != node.peer_addr:
            problem = "bad answer: it names another address"
        elif not (node.peer_cert_der or cert):
            problem = "bad answer: no certificate for the peer"
        elif existing is not None and not self._punch_only(existing, via_addr):
            problem = busy  # (it started while we asked)
        path = None
        if problem is None:
            # The peer must prove the certificate we dialled with (else the
            # one the relay saw it present), end to end.
            path = self._open_path(rendezvous, session, addr, node.peer_cert_der or cert)
            if path is None:
                problem = "relay session id already in use"
        if path is None:
            if (rconn := self._send_conn(rendezvous)) is not None:
                rconn.link.send_frame(encode_relay_close(session, RelayClose.CLOSED, "declined"))
                self._dirty.add(rconn)
                self._flush_soon()
            raise ConnectionFailedError(node.peer_addr, problem or "declined")
        self._replace_punch(addr)
        return await self._connect_and_wait(
            NodeInfo(addr, path.expect), HANDSHAKE_TIMEOUT, relay=path
        )

    async def _upgrade_loop(self, record: _Record, via_addr: Address) -> None:
        for delay in RELAY_UPGRADE_DELAYS:
            await asyncio.sleep(delay)
            if record.dead or record.relay is None:
                return
            with contextlib.suppress(ConnectionFailedError):
                if await self._try_upgrade(record, via_addr):
                    return

    async def _try_upgrade(self, record: _Record, via_addr: Address) -> bool:
        """One punch for a relayed peer: both sides probe the direct path with
        a throwaway connection; each side that reaches the other (pinned
        certificate checked) sends its packets directly from then on."""
        other = await self._punch_start(via_addr, record.addr)
        return await self._probe(
            record, NodeInfo(other.peer_addr, record.cert or other.peer_cert_der)
        )

    async def _probe(self, record: _Record, node: NodeInfo) -> bool:
        if record.dead or record.relay is None:
            return record.relay is None and not record.dead
        reached = await self._reaches(node)
        if reached and not record.dead:
            self._go_direct(record)
        self._bump("path probes succeeded" if reached else "path probes failed")
        return reached

    def _probe_later(self, record: _Record, node: NodeInfo, delay: float) -> None:
        self._punches_pending += 1

        async def probe() -> None:
            try:
                await asyncio.sleep(delay)
                await self._probe(record, node)
            finally:
                self._punches_pending -= 1

        self._spawn(probe())

    async def send(
        self, peer: Peer | NodeInfo, msg: bytes, token: int = 0
    ) -> SentUserMessage | UnsentUserMessage:
        """Sends ``msg``; resolves to ``SentUserMessage`` once the peer received
        it, or ``UnsentUserMessage`` (the message handed back) — the same
        outcome is also reported on ``events()``. Sending to a Node we are not
        connected to connects first, as the seed did."""
        if isinstance(peer, NodeInfo):
            peer = Peer.node(peer)
        if not isinstance(peer, Peer):
            raise TypeError("send takes a Peer or NodeInfo")
        if not isinstance(msg, (bytes, bytearray, memoryview)):
            raise TypeError("msg must be bytes")
        if not isinstance(token, int) or not 0 <= token < 2**64:
            raise QuicP2pError("token must be an integer in 0..2**64-1")
        loop = self._running_loop()
        pin = peer.node_info.peer_cert_der if peer.node_info is not None else b""
        s = _Send(peer.peer_addr, bytes(msg), token, loop.create_future(), pin)
        self._submit(peer, s)
        self._flush_soon()
        try:
            return await s.future
        except asyncio.CancelledError:
            # The caller stopped waiting: the outcome goes to events() instead
            # (``_resolve`` sees the cancelled future), or, if it was decided
            # just before the cancellation reached us, it goes there now.
            if s.future.done() and not s.future.cancelled() and not self.outcome_events:
                self._channel.push(s.future.result())
            raise

    def bootstrap_cache(self) -> list[NodeInfo]:
        """Cached nodes, most recently connected first."""
        return self._cache.peers()

    async def bootstrap(self) -> NodeInfo:
        """Joins the network: tries the cached nodes (healthy, most recent first)
        and then the hard-coded contacts, ``BOOTSTRAP_PARALLEL`` at a time. The
        first to complete the role handshake wins (``BootstrappedTo``); the
        others are closed. Raises ``BootstrapError`` (and reports
        ``BootstrapFailure``) with each contact's reason when all fail."""
        self._check_running()
        if self._bootstrap is not None:
            raise QuicP2pError("a bootstrap is already in progress")
        contacts = self._cache.bootstrap_order()
        contacts += [c for c in self.config.hard_coded_contacts if c not in contacts]
        if not contacts:
            self._channel.push(BootstrapFailure({}))
            raise BootstrapError(
                "nothing to bootstrap from: no hard-coded contacts and an empty bootstrap cache",
                {},
            )
        group = _BootstrapGroup(self._running_loop().create_future())
        self._bootstrap = group
        reasons: dict[Address, str] = {}
        slots = asyncio.Semaphore(BOOTSTRAP_PARALLEL)

        async def attempt(contact: NodeInfo) -> None:
            async with slots:
                if group.winner.done():
                    return
                try:
                    await self._bootstrap_member(contact, group)
                except ConnectionFailedError as exc:
                    reasons[contact.peer_addr] = exc.reason
                    if self._cache.record_failure(contact):
                        self._schedule_cache_save()

        tasks = [asyncio.ensure_future(attempt(c)) for c in contacts]
        everyone = asyncio.gather(*tasks)
        waitables: set[asyncio.Future[Any]] = {group.winner, everyone}
        try:
            await asyncio.wait(
                waitables,
                timeout=BOOTSTRAP_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._bootstrap = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(everyone, return_exceptions=True)
            for record in group.members:
                if record.bootstrap is group and not record.connected:
                    record.bootstrap = None
                    self._fail(record, "bootstrap done", ErrorCode.NO_ERROR, report=False)
            self._flush_soon()
        if group.winner.done() and not group.winner.cancelled():
            return group.winner.result()
        for contact in contacts:
            reasons.setdefault(contact.peer_addr, "no answer in time")
        self._channel.push(BootstrapFailure(dict(reasons)))
        raise BootstrapError("bootstrap failed", reasons)

    async def _bootstrap_member(self, contact: NodeInfo, group: _BootstrapGroup) -> None:
        existing = self._records.get(contact.peer_addr)
        if existing is not None and existing.connected and existing.kind is PeerKind.NODE:
            problem = _pin_problem(existing, contact.peer_cert_der)
            if problem is not None:
                raise ConnectionFailedError(contact.peer_addr, problem)
            if not group.winner.done():
                info = NodeInfo(existing.addr, existing.cert)
                self._channel.push(BootstrappedTo(info))
                group.winner.set_result(info)
            return
        record = self._connect(contact, we_contacted=True)
        if record.dead:
            raise ConnectionFailedError(contact.peer_addr, record.failure)
        if record.bootstrap is None and not record.connected:
            record.bootstrap = group
            record.bootstrap_pin = contact.peer_cert_der
            group.members.append(record)
        waiter: asyncio.Future[Peer] = self._running_loop().create_future()
        record.waiters.append(_Waiter(waiter, contact.peer_cert_der))
        self._flush_soon()
        await waiter

    async def disconnect_from(self, peer_addr: Address) -> None:
        """Closes every connection with the peer (``ConnectionFailure`` if it was
        connected)."""
        record = self._records.get(normalize_address(peer_addr))
        if record is not None:
            self._fail(record, "disconnected by us", ErrorCode.DISCONNECTED)
            self._flush_soon()

    async def our_connection_info(self) -> NodeInfo:
        """Our NodeInfo as the network sees us: asks up to three connected
        Nodes (or hard-coded contacts) which address they see. Two or more
        answers must agree; ``EchoDisagreementError`` reports when they do not."""
        self._check_running()
        targets: list[_Conn] = [
            r.out
            for r in self._records.values()
            if r.connected and r.kind is PeerKind.NODE and r.out is not None
        ][:ECHO_QUORUM]
        temporary: list[_Conn] = []
        if not targets:
            contacts = list(self.config.hard_coded_contacts)[:ECHO_QUORUM]
            if not contacts:
                host = self.local_addr[0]
                if host in ("0.0.0.0", "::"):
                    raise EchoError(
                        "no node to ask for our address (no connected node, no hard-coded"
                        " contact) and we are bound to an unspecified address"
                    )
                return self.node_info
            early: list[str] = []
            for contact in contacts:
                try:
                    temporary.append(self._dial(contact, echo_only=True))
                except ConnectionFailedError as exc:
                    early.append(str(exc))
            if not temporary:
                raise EchoError("no contact to ask for our address: " + "; ".join(early))
            targets = temporary
        self._flush_soon()
        try:
            results = await asyncio.gather(
                *(self._ask_echo(c) for c in targets), return_exceptions=True
            )
        finally:
            for conn in temporary:
                self._close_conn(conn, ErrorCode.NO_ERROR, "echo done")
            self._flush_soon()
        answers: dict[Address, Address] = {}
        errors: list[str] = []
        for conn, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(f"{conn.link.peer_addr[0]}:{conn.link.peer_addr[1]}: {result}")
            else:
                answers[conn.link.peer_addr] = result
        if not answers:
            raise EchoError("no node answered our echo request: " + "; ".join(errors))
        seen = set(answers.values())
        if len(seen) > 1:
            raise EchoDisagreementError(answers)
        return NodeInfo(seen.pop(), self._cert.cert_der)

    async def check_reachability(self, via: NodeInfo | Peer | Address) -> Reachability:
        """Asks ``via``, a Node we are connected to, to dial us from a fresh
        socket — a port we never sent anything to — at the address it sees us
        at. The reverse connection of the Node handshake comes from the very
        socket we dialled, which a NAT lets in as a reply; this dial does not
        ride any mapping we opened, so it tells whether *anyone* can reach us
        (a public address, or a NAT without filtering) or only nodes we
        contact first (then others reach us by ``connect_to(via=...)``).
        Raises ``ConnectionFailedError`` when ``via`` cannot check."""
        self._check_running()
        if self.config.our_type is not OurType.NODE:
            raise QuicP2pError("a Client accepts no connections: nothing to check")
        via_addr = via.peer_addr if isinstance(via, (NodeInfo, Peer)) else normalize_address(via)
        _, conn = self._rendezvous_conn(via_addr, via_addr)
        # The checker dials us back first (up to PROBE_TIMEOUT, plus a socket).
        answer = await self._ask(
            conn, FrameKind.REACH_REQUEST, b"", within=PROBE_TIMEOUT + ECHO_TIMEOUT
        )
        try:
            reached, addr = decode_reach_result(answer.body)
        except (WireError, ValueError) as exc:
            raise ConnectionFailedError(via_addr, f"bad reachability answer: {exc}") from None
        return Reachability(reached, addr, via_addr)

    # ------------------------------------------------------------ sending
    def _submit(self, peer: Peer, s: _Send) -> None:
        if self._closing or self._transport is None:
            self._resolve(s, False, "endpoint closed")
            return
        if len(s.msg) > FRAME_MAX_BODY:
            self._resolve(s, False, "message larger than a frame can carry")
            return
        record = self._records.get(peer.peer_addr)
        if record is not None and record.connected:
            if peer.is_node and record.kind is PeerKind.CLIENT:
                self._resolve(s, False, "the peer at that address is a Client")
                return
            problem = _pin_problem(record, s.pin)
            if problem is not None:
                self._resolve(s, False, problem)
                return
            self._send_on(record, s)
        elif peer.is_node and peer.node_info is not None:
            record = self._connect(peer.node_info, we_contacted=True)
            if record.dead:
                self._resolve(s, False, f"could not connect: {record.failure}")
            else:
                record.pending_sends.append(s)
        else:
            self._resolve(s, False, "not connected to that client")

    def _send_on(self, record: _Record, s: _Send) -> None:
        conn = self._send_conn(record)
        if conn is None:
            self._resolve(s, False, "connection lost")
            return
        if conn.waiting or (
            conn.outstanding and conn.unacked_bytes + len(s.msg) > self.max_unacked_bytes
        ):
            conn.waiting.append(s)  # backpressure: handed over as acks make room
            return
        self._hand_over(conn, s)

    def _hand_over(self, conn: _Conn, s: _Send) -> None:
        if not conn.outstanding:
            conn.progress_at = self._now()
        msg_id = conn.link.send_user_message(s.msg)
        conn.outstanding[msg_id] = s
        conn.unacked_bytes += len(s.msg)
        self._dirty.add(conn)

    def _settled(self, conn: _Conn, msg_id: int) -> _Send | None:
        """The send ``msg_id`` the peer answered (acked or refused), if ours;
        waiting sends take the room it leaves."""
        s = conn.outstanding.pop(msg_id, None)
        if s is None:
            return None
        conn.unacked_bytes -= len(s.msg)
        conn.progress_at = self._now()
        while conn.waiting and (
            not conn.outstanding
            or conn.unacked_bytes + len(conn.waiting[0].msg) <= self.max_unacked_bytes
        ):
            self._hand_over(conn, conn.waiting.popleft())
        return s

    def _resolve(self, s: _Send, sent: bool, reason: str = "") -> None:
        """Decides a send's one outcome: returned by ``send()``, and put on
        ``events()`` when asked for (``outcome_events``) or when the caller
        stopped waiting (its future was cancelled)."""
        if s.resolved:
            return
        s.resolved = True
        outcome: SentUserMessage | UnsentUserMessage
        if sent:
            outcome = SentUserMessage(s.peer_addr, s.msg, s.token)
        else:
            outcome = UnsentUserMessage(s.peer_addr, s.msg, s.token, reason)
        if not s.future.done():
            s.future.set_result(outcome)
        if self.outcome_events or s.future.cancelled():
            self._channel.push(outcome)

    # ------------------------------------------------------------ connecting
    def _connect(
        self,
        node: NodeInfo,
        *,
        we_contacted: bool,
        timeout: float = HANDSHAKE_TIMEOUT,
        relay: _RelayPath | None = None,
    ) -> _Record:
        record = self._records.get(node.peer_addr)
        if record is None:
            record = self._records[node.peer_addr] = _Record(node.peer_addr)
            if relay is not None:
                record.relay = relay
                relay.record = record
        record.we_contacted |= we_contacted
        if record.to is ToPeer.NONE:
            if not record.cert:
                record.cert = node.peer_cert_der
            try:
                conn = self._dial(node, echo_only=False, timeout=timeout, relay=record.relay)
            except ConnectionFailedError as exc:
                self._fail(record, exc.reason, ErrorCode.REFUSED)
                return record
            record.to = ToPeer.CONNECTING
            record.out = conn
            conn.record = record
            if not we_contacted:
                # A dial-back or a punch: the peer chose us, not the user.
                conn.link.budget = self._unproven
            if self.config.our_type is OurType.CLIENT:
                record.frm = FromPeer.NOT_NEEDED
        return record

    def _dial(
        self,
        node: NodeInfo,
        *,
        echo_only: bool,
        timeout: float = HANDSHAKE_TIMEOUT,
        relay: _RelayPath | None = None,
    ) -> _Conn:
        """Starts an outgoing connection (through ``relay`` if given);
        ``ConnectionFailedError`` when it cannot even start (unusable
        certificate in the NodeInfo, limit)."""
        try:
            # Our certificate goes along: our Nodes ask every client for one.
            cfg = tls.client_configuration(
                self.config, node, our_cert=self._cert, connection_id_length=CID_LENGTH
            )
        except certs.CertificateError as exc:
            raise ConnectionFailedError(
                node.peer_addr, f"bad certificate in NodeInfo: {exc}"
            ) from None
        if len(self._conns) >= self.max_connections:
            raise ConnectionFailedError(node.peer_addr, "connection limit reached")
        if ":" in node.peer_addr[0] and not self._v6_socket:
            raise ConnectionFailedError(
                node.peer_addr, "an IPv6 address, but we are bound to IPv4 (bind '::' for both)"
            )
        if ":" not in node.peer_addr[0] and not self._ipv4_ok:
            raise ConnectionFailedError(
                node.peer_addr,
                "an IPv4 address, but we are bound to IPv6 only (bind '::' for both)",
            )
        quic = QuicConnection(configuration=cfg)
        conn = _Conn(
            quic,
            Link(
                quic,
                initiator=True,
                peer_addr=node.peer_addr,
                max_msg_size=self.config.max_msg_size_allowed,
            ),
            outgoing=True,
            target=node,
            echo_only=echo_only,
        )
        loop = self._running_loop()
        conn.up_future = loop.create_future()
        conn.timeout = timeout
        conn.deadline = loop.call_later(timeout, self._handshake_timeout, conn)
        self._register(conn, quic.host_cid)
        self._route(conn, relay)
        quic.connect(node.peer_addr, now=self._now())
        self._dirty.add(conn)
        return conn

    def _report_failure(self, addr: Address, reason: str) -> None:
        log.info("connection to %s:%d failed: %s", addr[0], addr[1], reason)
        self._channel.push(ConnectionFailure(addr, reason))

    # ------------------------------------------------------------ datagrams
    def _datagram_received(self, data: bytes, addr_raw: tuple[Any, ...]) -> None:
        if self._closing:
            return
        addr = self._addr_cache.get(addr_raw)
        if addr is None:
            # ipaddress parsing costs more than the rest of the demux, and
            # peers are few: remember each source's canonical form.
            try:
                addr = normalize_address(addr_raw)
            except ValueError as exc:
                self._bump(f"dropped: {exc}")
                return
            if len(self._addr_cache) >= ADDRESS_CACHE_SIZE:
                self._addr_cache.clear()
            self._addr_cache[addr_raw] = addr
        self._receive(data, addr, None)

    def _side_datagram(self, data: bytes, addr_raw: tuple[Any, ...]) -> None:
        try:
            conn = self._cids.get(classify_datagram(data, CID_LENGTH).dcid)
            addr = normalize_address(addr_raw)
        except (DatagramError, ValueError) as exc:
            self._bump(f"dropped: {exc}")
            return
        if self._closing or conn is None or conn.transport is None:
            self._bump("dropped: not for the check's connection")
            return
        self._receive(data, addr, None)
        self._flush()

    def _receive(self, data: bytes, addr: Address, relay: _RelayPath | None) -> None:
        """One QUIC datagram from ``addr``, off the socket or out of a relay
        session. A session carries one incoming connection (no Retry: the
        session is the path, and only its other side can use it); that peer
        proves the session's certificate at TLS (``_on_up``)."""
        try:
            info = classify_datagram(data, CID_LENGTH)
        except (DatagramError, ValueError) as exc:
            self._bump(f"dropped: {exc}")
            return
        conn = self._cids.get(info.dcid)
        if conn is None:
            if not info.long_header:
                self._bump("dropped: unknown connection")
                return
            if relay is not None and (relay.accepted or relay.direct):
                self._bump("relay: dropped a second connection on one session")
                return
            refusal = self._refusal(addr)
            skip_retry = relay is not None or (not info.token and self._skip_retry(addr))
            decision = self._admission.decide(
                info, len(data), addr, self._now(), accepting=refusal is None, skip_retry=skip_retry
            )
            if isinstance(decision, Reply):
                if decision.what == "refused":
                    self._bump(f"refused: {refusal}")
                self._send_datagrams(relay, [(decision.datagram, addr)])
                return
            if isinstance(decision, Ignore):
                self._bump(f"dropped: {decision.reason}")
                return
            conn = self._accept(decision, info.dcid, addr)
            if relay is not None:
                relay.accepted = True
                conn.came_via = relay
            # Answer the way it came.
            self._route(conn, relay)
            fresh = True
        else:
            fresh = False
        try:
            conn.quic.receive_datagram(data, addr, now=self._now())
        except Exception:  # aioquic closes on bad packets; this is a safety net
            log.exception("aioquic failed on a datagram from %s", addr)
            self._bump("dropped: aioquic error")
        if fresh and not self._answers(conn):
            # An Initial that does not decrypt elicits nothing: keep no state
            # for it (with retry off, junk would otherwise hold a slot).
            self._forget(conn)
            self._bump("dropped: undecryptable Initial")
            return
        self._dirty.add(conn)
        self._process(conn)
        # (The protocol transmits once the socket is drained.)

    def _answers(self, conn: _Conn) -> bool:
        """Sends what a new connection has to say; False when it has nothing."""
        datagrams = conn.quic.datagrams_to_send(now=self._now())
        self._send_datagrams(conn.relay, datagrams, conn.transport)
        return bool(datagrams)

    def _route(self, conn: _Conn, relay: _RelayPath | None) -> None:
        conn.relay = relay
        if relay is not None:
            relay.conns.add(conn)

    def _send_datagrams(
        self,
        relay: _RelayPath | None,
        datagrams: list[tuple[bytes, Address]],
        transport: asyncio.DatagramTransport | None = None,
    ) -> None:
        """Onto the socket (ours, or ``transport``), or into the relay session
        (dropped once it closed: its connections are being torn down)."""
        if relay is None:
            transport = transport or self._transport
            if transport is not None and not transport.is_closing():
                if self._v6_socket:
                    for data, addr in datagrams:
                        transport.sendto(data, _v6_form(addr))
                else:
                    for data, addr in datagrams:
                        transport.sendto(data, addr)
            return
        rconn = None if relay.closed else self._send_conn(relay.relay)
        if rconn is None or not datagrams:
            return
        for data, _ in datagrams:
            rconn.link.send_frame(frame(FrameKind.RELAY_PACKET, data, relay.session))
        self._dirty.add(rconn)

    def _skip_retry(self, addr: Address) -> bool:
        """A Node we dialled, whose certificate we verified, must now connect
        back to us from the very address we reached it at: that address is
        already validated by our own handshake with it (RFC 9000 §8.1 lets a
        server skip the Retry then). Its first Initial is accepted directly,
        saving a round trip and a second ClientHello on its side; once only,
        so a spoofer of that address gains at most one connection attempt."""
        record = self._records.get(addr)
        if (
            record is None
            or record.reverse_timer is None
            or record.connected
            or record.dead
            or record.reverse_admitted
        ):
            return False
        record.reverse_admitted = True
        self._bump("retry skipped: awaited reverse connection")
        return True

    def _is_us(self, node: NodeInfo) -> bool:
        """``node`` names this endpoint: our certificate, or the address we
        are bound to (other addresses of ours are caught at TLS: the peer
        would present our certificate)."""
        return (bool(node.peer_cert_der) and node.peer_cert_der == self._cert.cert_der) or (
            self._local_addr is not None and node.peer_addr == self._local_addr
        )

    def _refusal(self, addr: Address) -> str | None:
        """Why a new connection from ``addr`` would be refused, or None."""
        if self._server_cfg is None:
            return "we are a Client"
        if len(self._conns) - self._punch_conns >= self.max_connections:
            return "connection limit"
        if self._per_ip.get(_ip_key(addr), 0) >= self.max_connections_per_ip:
            return "per-IP connection limit"
        return None

    def _accept(self, decision: Accept, dcid: bytes, addr: Address) -> _Conn:
        assert self._server_cfg is not None
        # Asks for the client's certificate from its very first datagram on.
        quic = tls.ServerConnection(
            configuration=self._server_cfg,
            original_destination_connection_id=decision.original_destination_cid,
            retry_source_connection_id=decision.retry_source_cid,
        )
        conn = _Conn(
            quic,
            Link(
                quic,
                initiator=False,
                peer_addr=addr,
                max_msg_size=self.config.max_msg_size_allowed,
            ),
            outgoing=False,
        )
        conn.link.budget = self._unproven  # until the peer is proven
        conn.ip_key = _ip_key(addr)
        self._per_ip[conn.ip_key] = self._per_ip.get(conn.ip_key, 0) + 1
        self._register(conn, dcid)
        self._register(conn, quic.host_cid)
        conn.deadline = self._running_loop().call_later(
            HANDSHAKE_TIMEOUT, self._handshake_timeout, conn
        )
        return conn

    def _register(self, conn: _Conn, cid: bytes) -> None:
        self._conns.add(conn)
        conn.cids.add(cid)
        self._cids[cid] = conn

    def _forget(self, conn: _Conn) -> None:
        for cid in conn.cids:
            if self._cids.get(cid) is conn:
                del self._cids[cid]
        conn.cids.clear()
        if conn in self._conns:
            conn.link.release_all()
        self._conns.discard(conn)
        self._dirty.discard(conn)
        if conn.punch:
            conn.punch = False
            self._punch_conns -= 1
        if conn.ip_key is not None:
            left = self._per_ip.get(conn.ip_key, 1) - 1
            if left > 0:
                self._per_ip[conn.ip_key] = left
            else:
                self._per_ip.pop(conn.ip_key, None)
            conn.ip_key = None
        if conn.relay is not None:
            conn.relay.conns.discard(conn)
        for handle in (conn.timer, conn.deadline):
            if handle is not None:
                handle.cancel()
        conn.timer = conn.deadline = None

    # ------------------------------------------------------------ the adapter loop
    def _process(self, conn: _Conn) -> None:
        """Drains aioquic's events for one connection."""
        while (event := conn.quic.next_event()) is not None:
            if isinstance(event, qe.ConnectionIdIssued):
                self._register(conn, event.connection_id)
            elif isinstance(event, qe.ConnectionIdRetired):
                conn.cids.discard(event.connection_id)
                if self._cids.get(event.connection_id) is conn:
                    del self._cids[event.connection_id]
            for le in conn.link.handle(event):
                self._on_link_event(conn, le)
            if isinstance(event, qe.ConnectionTerminated):
                conn.finished = True
        if conn.finished:
            self._forget(conn)
        else:
            # The peer closed: act now, not when aioquic's draining ends.
            for le in conn.link.poll_close():
                self._on_link_event(conn, le)

    def _flush_soon(self) -> None:
        """Transmits once the current batch of callbacks (datagrams, API calls,
        timers) has run, so many small writes leave in full packets, as
        aioquic's own protocol does."""
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Transmits whatever any touched connection has queued, and re-arms
        its timer."""
        self._flush_scheduled = False
        # (A relayed connection's packets mark its relay connection dirty,
        # which this loop then flushes too.)
        while self._dirty:
            conn = self._dirty.pop()
            conn.link.flush()
            datagrams = conn.quic.datagrams_to_send(now=self._now())
            self._send_datagrams(conn.relay, datagrams, conn.transport)
            self._arm_timer(conn)

    def _arm_timer(self, conn: _Conn) -> None:
        at = conn.quic.get_timer()
        if at == conn.timer_at:
            return
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conn.timer_at = at
        if at is not None and not conn.finished and conn in self._conns:
            conn.timer = self._running_loop().call_at(at, self._on_timer, conn)

    def _on_timer(self, conn: _Conn) -> None:
        armed = conn.timer_at
        conn.timer = None
        conn.timer_at = None
        # The loop may fire a hair early; aioquic's own driver clamps to the
        # time it armed, or the timer would do nothing and be re-armed.
        now = self._now()
        conn.quic.handle_timer(now=now if armed is None else max(armed, now))
        self._dirty.add(conn)
        self._process(conn)
        self._flush_soon()

    # ------------------------------------------------------------ link events
    def _on_link_event(self, conn: _Conn, ev: LinkEvent) -> None:
        if isinstance(ev, LinkFrame):
            self._on_frame(conn, ev.frame)
        elif isinstance(ev, LinkAcked):
            for msg_id in ev.msg_ids:
                s = self._settled(conn, msg_id)
                if s is not None:
                    self._resolve(s, True)
                elif msg_id == conn.handshake_id and conn.record is not None:
                    conn.handshake_id = 0
                    self._complete(conn.record)  # the Node accepted us as a Client
        elif isinstance(ev, LinkRefused):
            refused = f"refused by the peer: {ev.reason.name.lower()}"
            waiter = conn.requests.get(ev.msg_id)
            if waiter is not None:
                if not waiter.done():
                    reason = _REQUEST_REFUSALS.get(ev.reason, refused)
                    waiter.set_exception(ConnectionFailedError(conn.link.peer_addr, reason))
                return
            s = self._settled(conn, ev.msg_id)
            if s is not None:
                self._resolve(s, False, refused)
        elif isinstance(ev, LinkUp):
            self._on_up(conn)
        elif isinstance(ev, LinkDown):
            self._on_down(conn, _describe_close(ev))

    def _on_up(self, conn: _Conn) -> None:
        if conn.up_future is not None and not conn.up_future.done():
            conn.up_future.set_result(None)
        if tls.check_pinned_peer(conn.quic, self._cert.cert_der) is None:
            # The peer holds our certificate and its key: it is this very
            # endpoint, reached through another of our addresses.
            self._bump("refused: a connection to ourselves")
            reason = "that is us (the peer presents our own certificate)"
            self._close_conn(conn, ErrorCode.REFUSED, reason)
            self._on_down(conn, reason)
            return
        if not conn.outgoing:
            # Before anything the peer sent is read (the link delivers nothing
            # once closed): a CA mode admits only certificates of the CA, and
            # no mode admits one outside its validity period.
            problem = tls.check_client_certificate(
                conn.quic, self.config, now=datetime.datetime.now(datetime.UTC)
            )
            if problem is None and conn.came_via is not None:
                problem = tls.check_pinned_peer(conn.quic, conn.came_via.expect)
            if problem is not None:
                self._bump("refused: peer certificate")
                log.warning(
                    "refusing %s:%d: %s", conn.link.peer_addr[0], conn.link.peer_addr[1], problem
                )
                self._close_conn(conn, ErrorCode.CERTIFICATE_REFUSED, problem)
                self._on_down(conn, problem)
            return
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        target = conn.target
        # The certificate to insist on: the one dialled, else the one the peer
        # already claimed on its own connection to us (simultaneous connect).
        expected = target.peer_cert_der if target is not None else b""
        if not expected and conn.record is not None:
            expected = conn.record.cert
        # Dates always: in UNVERIFIED mode aioquic checks none (CERT_NONE).
        code, problem = (
            ErrorCode.CERTIFICATE_REFUSED,
            tls.check_server_certificate(conn.quic, now=datetime.datetime.now(datetime.UTC)),
        )
        if problem is None and expected:
            code, problem = (
                ErrorCode.CERTIFICATE_MISMATCH,
                tls.check_pinned_peer(conn.quic, expected),
            )
        if problem is not None:
            self._close_conn(conn, code, problem)
            self._on_down(conn, problem)
            return
        if conn.echo_only:
            return
        record = conn.record
        if record is None or record.dead:
            return
        if self.config.our_type is OurType.NODE:
            conn.link.send_frame(frame(FrameKind.HANDSHAKE_NODE, self._cert.cert_der))
        else:
            # The Node acknowledges it once it accepted us (limits, roles,
            # certificate checks); only then is the peer usable.
            conn.handshake_id = conn.link.reserve_msg_id()
            conn.link.send_frame(frame(FrameKind.HANDSHAKE_CLIENT, b"", conn.handshake_id))
        self._dirty.add(conn)
        record.to = ToPeer.ESTABLISHED
        if record.kind is None:
            record.kind = PeerKind.NODE
        action, _ = on_outgoing_up(record.frm)
        if action is Action.COMPLETE and not conn.handshake_id:
            self._complete(record)
        elif record.reverse_timer is None and self._loop is not None:
            # (A Client waits the same time for the Node's acceptance.)
            record.reverse_timer = self._loop.call_later(
                REVERSE_CONNECT_TIMEOUT, self._reverse_timeout, record
            )

    def _on_down(self, conn: _Conn, reason: str) -> None:
        """Once per connection: its sends come back unsent, its peer record
        loses that side."""
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        for s in [*conn.outstanding.values(), *conn.waiting]:
            self._resolve(s, False, f"connection lost: {reason}")
        conn.outstanding.clear()
        conn.waiting.clear()
        conn.unacked_bytes = 0
        for waiter in conn.requests.values():
            if not waiter.done():
                waiter.set_exception(
                    ConnectionFailedError(conn.link.peer_addr, f"connection lost: {reason}")
                )
        conn.requests.clear()
        if conn.up_future is not None and not conn.up_future.done():
            conn.up_future.set_result(None)  # waiters check link.down
        record = conn.record
        conn.record = None
        if record is None or record.dead:
            return
        if record.out is conn:
            record.out = None
            record.to = ToPeer.NONE
        if record.inn is conn:
            record.inn = None
            record.frm = FromPeer.NONE
        self._fail(record, reason, ErrorCode.DISCONNECTED)

    def _on_frame(self, conn: _Conn, f: Frame) -> None:
        kind = f.kind
        if kind == FrameKind.ECHO_REQUEST:
            conn.link.send_frame(
                frame(FrameKind.ECHO_RESPONSE, encode_address(conn.link.peer_addr), f.msg_id)
            )
            self._dirty.add(conn)
        elif kind in _ANSWERS and f.msg_id:
            # The answer to one of our requests (its waiter decodes it).
            waiter = conn.requests.get(f.msg_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(f)
            else:
                self._bump("answers dropped: not to a request of ours")
        elif kind in (FrameKind.HANDSHAKE_NODE, FrameKind.HANDSHAKE_CLIENT):
            self._on_handshake(conn, f)
        elif kind == FrameKind.USER_MESSAGE:
            self._on_user_message(conn, f)
        elif kind == FrameKind.PUNCH_REQUEST:
            self._on_punch_request(conn, f)
        elif kind == FrameKind.PUNCH_INFO:
            self._on_punch_info(conn, f)
        elif kind == FrameKind.RELAY_PACKET:
            self._on_relay_packet(conn, f)
        elif kind == FrameKind.RELAY_REQUEST:
            self._on_relay_request(conn, f)
        elif kind == FrameKind.RELAY_OPEN:
            self._on_relay_open(conn, f)
        elif kind == FrameKind.RELAY_CLOSE:
            self._on_relay_close(conn, f)
        elif kind == FrameKind.REACH_REQUEST:
            self._on_reach_request(conn, f)
        else:
            self._violation(conn, ErrorCode.BAD_FRAME, f"unexpected frame kind {kind}")

    def _on_handshake(self, conn: _Conn, f: Frame) -> None:
        if conn.outgoing:
            self._violation(conn, ErrorCode.BAD_HANDSHAKE, "handshake from the accepting side")
            return
        if conn.handshake is not None:
            self._violation(conn, ErrorCode.DUPLICATE_HANDSHAKE, "second handshake")
            return
        conn.handshake = FrameKind(f.kind)
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        is_node = f.kind == FrameKind.HANDSHAKE_NODE
        addr = conn.link.peer_addr
        if is_node:
            try:
                certs.parse_certificate(f.body)
            except certs.CertificateError:
                self._violation(conn, ErrorCode.BAD_HANDSHAKE, "unparsable certificate")
                return
        elif f.body:
            self._violation(conn, ErrorCode.BAD_HANDSHAKE, "client handshake with a body")
            return
        record = self._records.get(addr)
        if record is not None and record.relay is not None and conn.came_via is None:
            # A direct handshake proves the address (the peer receives there);
            # a relayed peer only claimed it, through the relay.
            self._fail(
                record,
                "another peer proved that address directly (the relayed peer only claimed it)",
                ErrorCode.DISCONNECTED,
            )
            record = None
        fresh = record is None
        if record is None:
            record = self._records[addr] = _Record(addr)
            path = conn.came_via
            if path is not None and path.record is None and not path.closed:
                # Reached through a relay: so is our reverse connection.
                record.relay = path
                path.record = record
        action, code = on_incoming_handshake(is_node, record.to, record.frm)
        if action is not Action.REJECT and is_node and not _claim_matches(record, f.body):
            action, code = Action.REJECT, ErrorCode.CERTIFICATE_MISMATCH
        if action is Action.REJECT:
            assert code is not None
            if fresh:
                del self._records[addr]
                if record.relay is not None:
                    record.relay.record = None
            self._violation(conn, code, f"handshake rejected: {code.name.lower()}")
            return
        record.frm = FromPeer.ESTABLISHED
        record.inn = conn
        conn.record = record
        if not is_node:
            record.kind = PeerKind.CLIENT
            record.to = ToPeer.NOT_NEEDED
            if f.msg_id:
                conn.link.acknowledge(f.msg_id)  # accepted: the Client may send
                self._dirty.add(conn)
        else:
            record.kind = PeerKind.NODE
            if not record.cert:
                record.cert = f.body
        if action is Action.DIAL_BACK:
            # Prove the claimed Node reachable where we saw it, presenting the
            # certificate it claimed.
            self._connect(NodeInfo(addr, f.body), we_contacted=False)
        elif action is Action.COMPLETE:
            self._complete(record)

    def _rendezvous_parties(
        self, conn: _Conn, f: Frame, what: str
    ) -> tuple[_Record, _Record, _Conn] | None:
        """As a rendezvous: the asker and the connected Node it names, or None
        (refused, or the asker's connection closed for a violation)."""
        asker = conn.record
        if asker is None or not asker.connected:
            self._violation(conn, ErrorCode.PROTOCOL_VIOLATION, f"{what} before handshake")
            return None
        try:
            target = self._records.get(decode_address(f.body))
        except WireError as exc:
            self._violation(conn, ErrorCode.BAD_FRAME, str(exc))
            return None
        if not asker.rendezvous_requests.take(self._now()):
            # Before anything goes to the Node it names: a flood of requests
            # must not become a flood of notices to a third party.
            self._refuse(conn, f.msg_id, RejectReason.RATE_LIMITED)
            self._bump(f"{what}s refused: rate")
            return None
        to_target = None if target is None else self._send_conn(target)
        if (
            target is None
            or to_target is None
            or target is asker
            or not self._helper(target)
            or not self._helper(asker)
        ):
            self._refuse(conn, f.msg_id, RejectReason.UNKNOWN_PEER)
            return None
        return asker, target, to_target

    def _helper(self, record: _Record | None) -> bool:
        """Whether we punch or relay with this peer (as rendezvous, or with it
        as ours): both Nodes, connected directly — addresses behind a relay
        mean nothing on the Internet, and relays are never nested."""
        return (
            record is not None
            and record.connected
            and record.kind is PeerKind.NODE
            and record.relay is None
            and self.config.our_type is OurType.NODE
        )

    def _our_rendezvous(self, record: _Record | None) -> bool:
        """Whether a Node may start punches and relay sessions at our side:
        one we connected to ourselves (a contact, a bootstrap node, a peer
        we dialled), connected directly. A Node that merely connected to us
        cannot make us dial anyone or take relayed peers from it."""
        return record is not None and record.we_contacted and self._helper(record)

    def _on_punch_request(self, conn: _Conn, f: Frame) -> None:
        """As the rendezvous: tell both sides where the other is, as we see
        them, and when to start: our info reaches each side after half its
        round-trip time, so the nearer side waits the difference and both
        dial at the same moment (plus a margin)."""
        parties = self._rendezvous_parties(conn, f, "punch request")
        if parties is None:
            return
        asker, target, to_target = parties
        rtt_a = conn.link.rtt or 0.0
        rtt_b = to_target.link.rtt or 0.0
        far = max(rtt_a, rtt_b)
        delay_a = PUNCH_START_DELAY_MS + round((far - rtt_a) * 500)
        delay_b = PUNCH_START_DELAY_MS + round((far - rtt_b) * 500)
        conn.link.send_frame(encode_punch_info(f.msg_id, delay_a, target.addr, target.cert))
        to_target.link.send_frame(encode_punch_info(0, delay_b, asker.addr, asker.cert))
        self._dirty.update((conn, to_target))
        self._bump("punches relayed")

    def _on_punch_info(self, conn: _Conn, f: Frame) -> None:
        try:
            delay_ms, addr, cert = decode_punch_info(f.body)
        except WireError as exc:
            self._violation(conn, ErrorCode.BAD_FRAME, str(exc))
            return
        # A rendezvous we chose asks us to dial the other side too.
        existing = self._records.get(addr)
        relayed = existing is not None and existing.connected and existing.relay is not None
        rendezvous = conn.record
        if rendezvous is None or not self._our_rendezvous(rendezvous):
            self._bump("punches declined: not a rendezvous we chose")
            return
        if self._is_us(NodeInfo(addr, cert)):
            self._bump("punches declined: names us")
            return
        if not could_observe(rendezvous.addr, addr):
            self._bump("punches declined: an address the rendezvous could not have seen")
            return
        if self._punches_pending >= PUNCH_MAX_PENDING or (existing is not None and not relayed):
            self._bump("punches declined")
            return
        now = self._now()
        if not rendezvous.punch_notices.take(now) or not self._punch_dials.take(now):
            self._bump("punches declined: rate")
            return
        if existing is not None:
            # Relayed to that peer: probe the direct path instead.
            self._probe_later(existing, NodeInfo(addr, existing.cert or cert), delay_ms / 1000)
            return
        self._punches_pending += 1
        self._running_loop().call_later(
            delay_ms / 1000, self._punch, NodeInfo(addr, cert), rendezvous.addr
        )

    def _punch(self, node: NodeInfo, rendezvous: Address) -> None:
        self._punches_pending -= 1
        if not self._closing and node.peer_addr not in self._records:
            record = self._connect(node, we_contacted=False, timeout=PUNCH_HANDSHAKE_TIMEOUT)
            if record.out is not None and not record.out.punch:
                record.out.punch = True
                self._punch_conns += 1
                record.punched_by = rendezvous
            self._flush_soon()

    def _on_reach_request(self, conn: _Conn, f: Frame) -> None:
        """Dial the asker back from a fresh socket and say whether it worked."""
        asker = conn.record
        if asker is None or not asker.connected:
            self._violation(conn, ErrorCode.PROTOCOL_VIOLATION, "check request before handshake")
            return
        if not self._helper(asker) or self._reach_pending >= REACH_MAX_PENDING:
            self._refuse(conn, f.msg_id, RejectReason.CHECK_REFUSED)
            return
        self._reach_pending += 1
        self._spawn(self._reach_check(conn, f.msg_id, NodeInfo(asker.addr, asker.cert)))

    async def _reach_check(self, conn: _Conn, msg_id: int, target: NodeInfo) -> None:
        try:
            reached = await self._dial_from_fresh_socket(target)
        finally:
            self._reach_pending -= 1
        if conn.link.down is None:
            conn.link.send_frame(encode_reach_result(msg_id, reached, target.peer_addr))
            self._dirty.add(conn)
            self._flush_soon()
        self._bump(f"reachability checks: {'reached' if reached else 'not reached'}")

    async def _dial_from_fresh_socket(self, target: NodeInfo) -> bool:
        """An echo-only connection to ``target`` (its certificate pinned) from
        a new ephemeral socket; True once its TLS handshake completed."""
        loop = self._running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _SideProtocol(self), local_addr=(self.config.bind_ip, 0)
        )
        try:
            return await self._reaches(target, transport)
        finally:
            transport.close()

    async def _reaches(
        self, node: NodeInfo, transport: asyncio.DatagramTransport | None = None
    ) -> bool:
        """A throwaway echo-only connection to ``node`` (its certificate
        pinned), from our socket or from ``transport``; True once its TLS
        handshake completed within PROBE_TIMEOUT."""
        try:
            conn = self._dial(node, echo_only=True, timeout=PROBE_TIMEOUT)
        except ConnectionFailedError:
            return False
        conn.transport = transport
        self._flush_soon()
        assert conn.up_future is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(conn.up_future), PROBE_TIMEOUT + 1)
        reached = conn.link.up and conn.link.down is None
        self._close_conn(conn, ErrorCode.NO_ERROR, "probe done")
        self._flush()
        return reached

    # ------------------------------------------------------------ relaying
    def _on_relay_request(self, conn: _Conn, f: Frame) -> None:
        """As the rendezvous: open a relay session between the asker and the
        Node it names, if our policy allows. Quotas count the sessions each
        asker holds, so nobody can spend another pair's share."""
        parties = self._rendezvous_parties(conn, f, "relay request")
        if parties is None:
            return
        asker, target, to_target = parties
        policy = self.relay_policy
        if (
            policy is None
            or len(self._relay_sessions) >= policy.max_sessions
            or sum(s.a is asker for s in self._relay_sessions.values())
            >= policy.max_sessions_per_peer
        ):
            self._refuse(conn, f.msg_id, RejectReason.RELAY_REFUSED)
            self._bump("relay requests refused")
            return
        session = _RelaySession(self._next_relay_session, asker, target)
        self._next_relay_session = self._next_relay_session % 0xFFFF_FFFF + 1
        self._relay_sessions[session.id] = session
        session.timer = self._running_loop().call_later(
            policy.max_seconds,
            self._end_relay_session,
            session,
            f"relay time limit reached ({policy.max_seconds:g} s)",
        )
        to_target.link.send_frame(encode_relay_open(0, session.id, asker.addr, asker.cert))
        conn.link.send_frame(encode_relay_open(f.msg_id, session.id, target.addr, target.cert))
        self._dirty.update((conn, to_target))
        self._bump("relay sessions opened")
        log.info(
            "relaying between %s:%d and %s:%d (session %d)", *asker.addr, *target.addr, session.id
        )

    def _on_relay_open(self, conn: _Conn, f: Frame) -> None:
        """As the target: a relay we chose announces a Node that asked it to
        reach us. The announced certificate is the identity that Node must
        prove end to end; the session never displaces a peer we have or are
        connecting to."""
        try:
            session, addr, cert = decode_relay_open(f.body)
        except WireError as exc:
            self._violation(conn, ErrorCode.BAD_FRAME, str(exc))
            return
        relay = conn.record
        problem = self._relay_open_problem(relay, addr, cert)
        path = None
        if problem is None:
            assert relay is not None
            path = self._open_path(relay, session, addr, cert)
            if path is None:
                problem = "too many relay sessions"
        if path is None:
            conn.link.send_frame(encode_relay_close(session, RelayClose.CLOSED, "declined"))
            self._dirty.add(conn)
            self._bump(f"relay sessions declined: {problem}")
            return
        self._replace_punch(addr)

    def _relay_open_problem(self, relay: _Record | None, addr: Address, cert: bytes) -> str | None:
        """Why we decline a relay session announced by ``relay`` for the Node
        at ``addr`` with certificate ``cert``, or None."""
        if relay is None or not self._our_rendezvous(relay):
            return "not a relay we chose"
        if not cert or cert == relay.cert:
            return "no certificate of its own for the peer"
        if self._is_us(NodeInfo(addr, cert)):
            return "names us"
        if not could_observe(relay.addr, addr):
            return "an address the relay could not have seen"
        known = self._known_cert(addr)
        if known and known != cert:
            return "not the certificate we know for that address"
        existing = self._records.get(addr)
        if existing is not None and not self._punch_only(existing, relay.addr):
            return "that address is connected or connecting"
        return None

    def _known_cert(self, addr: Address) -> bytes:
        """The certificate our contacts or bootstrap cache give for ``addr``."""
        for node in (*self.config.hard_coded_contacts, *self._cache.peers()):
            if node.peer_addr == addr and node.peer_cert_der:
                return node.peer_cert_der
        return b""

    def _punch_only(self, record: _Record, rendezvous: Address) -> bool:
        """``record`` is nothing but an unconnected punch dial that the
        rendezvous at ``rendezvous`` started (nobody waits on it, sends on
        it, or dialled in): that rendezvous's relay session may replace it."""
        return (
            record.punched_by == rendezvous
            and not record.connected
            and not record.we_contacted
            and not record.waiters
            and not record.pending_sends
            and record.inn is None
        )

    def _replace_punch(self, addr: Address) -> None:
        """A punch's leftover dial to ``addr``: the relayed connection replaces it."""
        record = self._records.get(addr)
        if record is not None and not record.connected:
            self._fail(record, "replaced by a relayed connection", ErrorCode.NO_ERROR, report=False)

    def _open_path(
        self, relay: _Record, session: int, peer_addr: Address, expect: bytes
    ) -> _RelayPath | None:
        key = (relay.addr, session)
        if key in self._relay_paths or len(self._relay_paths) >= RELAY_MAX_PATHS:
            return None
        path = self._relay_paths[key] = _RelayPath(relay, session, peer_addr, expect)
        # A session no connection ever uses is given back to the relay.
        path.deadline = self._running_loop().call_later(HANDSHAKE_TIMEOUT, self._path_unused, path)
        return path

    def _path_unused(self, path: _RelayPath) -> None:
        path.deadline = None
        if path.record is None and not path.conns:
            self._close_path(path, "unused", notify=True)
            self._flush_soon()

    def _close_path(self, path: _RelayPath, reason: str, *, notify: bool) -> None:
        """Ends our side of a relay session; connections still sending through
        it are lost (their peers see ``ConnectionFailure``)."""
        if path.closed:
            return
        path.closed = True
        if self._relay_paths.get((path.relay.addr, path.session)) is path:
            del self._relay_paths[(path.relay.addr, path.session)]
        if path.deadline is not None:
            path.deadline.cancel()
            path.deadline = None
        if notify and (rconn := self._send_conn(path.relay)) is not None:
            rconn.link.send_frame(encode_relay_close(path.session, RelayClose.CLOSED, reason))
            self._dirty.add(rconn)
        for conn in list(path.conns):
            lost = f"relay session closed: {reason}"
            self._close_conn(conn, ErrorCode.DISCONNECTED, lost)
            self._on_down(conn, lost)
        path.conns.clear()

    def _go_direct(self, record: _Record) -> None:
        """Our packets to this peer take the socket from now on; what the
        relay still forwards to us is taken until it closes the session."""
        path = record.relay
        if path is None or path.closed:
            return
        record.relay = None
        path.direct = True
        for conn in path.conns:
            conn.relay = None
        path.conns.clear()
        if (rconn := self._send_conn(path.relay)) is not None:
            rconn.link.send_frame(
                encode_relay_close(path.session, RelayClose.DIRECT, "direct path works")
            )
            self._dirty.add(rconn)
        self._flush_soon()
        log.info("%s:%d is now reached directly (was via %s:%d)", *record.addr, *path.relay.addr)
        self._channel.push(UpgradedToDirect(record.addr, path.relay.addr))

    def _on_relay_packet(self, conn: _Conn, f: Frame) -> None:
        sender = conn.record
        if sender is None or not sender.connected:
            self._violation(conn, ErrorCode.PROTOCOL_VIOLATION, "relay packet before handshake")
            return
        if f.msg_id & FROM_RELAY:  # our relay forwards the other side's packet
            path = self._relay_paths.get((sender.addr, f.msg_id & ~FROM_RELAY))
            if path is None:
                self._bump("relay: dropped a packet of an unknown session")
                return
            self._receive(f.body, path.peer_addr, path)
            return
        session = self._relay_sessions.get(f.msg_id)
        if session is None or sender not in (session.a, session.b):
            self._bump("relay: dropped a packet of an unknown session")
            return
        policy = self.relay_policy
        assert policy is not None  # sessions exist only under a policy
        session.bytes += len(f.body)
        if session.bytes > policy.max_bytes:
            self._end_relay_session(session, f"relay byte limit reached ({policy.max_bytes} bytes)")
            return
        other = session.b if sender is session.a else session.a
        out = self._send_conn(other)
        if out is None:
            self._end_relay_session(session, "the other side left the relay")
            return
        packet = frame(FrameKind.RELAY_PACKET, f.body, session.id | FROM_RELAY)
        queued = out.link.control_backlog + len(packet)
        if queued > RELAY_MAX_BACKLOG:
            # That side is not taking what we send it: drop, as a full
            # router queue does; the pair's own QUIC resends what matters.
            self._bump("relay: packets dropped, the receiving side is not reading")
            return
        self._relay_backlog_peak = max(self._relay_backlog_peak, queued)
        out.link.send_frame(packet)
        self._dirty.add(out)
        self._bump("relay: bytes forwarded", len(f.body))

    def _on_relay_close(self, conn: _Conn, f: Frame) -> None:
        sender = conn.record
        try:
            code, reason = decode_relay_close(f.body)
        except WireError as exc:
            self._violation(conn, ErrorCode.BAD_FRAME, str(exc))
            return
        if sender is None or not sender.connected:
            self._violation(conn, ErrorCode.PROTOCOL_VIOLATION, "relay close before handshake")
            return
        if f.msg_id & FROM_RELAY:  # our relay ended the session
            path = self._relay_paths.get((sender.addr, f.msg_id & ~FROM_RELAY))
            if path is not None:
                self._close_path(path, reason, notify=False)
            return
        session = self._relay_sessions.get(f.msg_id)
        if session is None or sender not in (session.a, session.b):
            return  # (already ended: the two sides' closes crossed)
        if code is RelayClose.DIRECT:
            session.direct.add(sender.addr)
            if len(session.direct) == 2:
                self._end_relay_session(session, "both sides are direct")
        else:
            self._end_relay_session(session, f"the other side closed it ({reason})")

    def _end_relay_session(self, session: _RelaySession, reason: str) -> None:
        """As the relay: forget a session and tell both sides why."""
        if self._relay_sessions.get(session.id) is not session:
            return
        del self._relay_sessions[session.id]
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        for party in (session.a, session.b):
            if (out := self._send_conn(party)) is not None:
                out.link.send_frame(
                    encode_relay_close(session.id | FROM_RELAY, RelayClose.CLOSED, reason)
                )
                self._dirty.add(out)
        self._flush_soon()
        self._bump("relay sessions closed")
        log.info("relay session %d closed: %s", session.id, reason)

    def _send_conn(self, record: _Record) -> _Conn | None:
        """The connection we send to a connected peer on."""
        conn = record.out if record.out is not None else record.inn
        return conn if conn is not None and conn.link.down is None else None

    def _on_user_message(self, conn: _Conn, f: Frame) -> None:
        record = conn.record
        if record is None or record.dead:
            self._violation(conn, ErrorCode.PROTOCOL_VIOLATION, "message before handshake")
            return
        if not record.connected:
            # Not proven yet: held, unacknowledged, within a count and a
            # byte budget shared by every unproven peer.
            if len(record.pending_reads) >= MAX_PENDING_READS or not self._unproven.take(
                len(f.body)
            ):
                self._refuse(conn, f.msg_id, RejectReason.BUSY)
                self._bump("refused: message from a peer not yet proven (budget)")
            else:
                record.pending_reads.append((conn, f))
                record.pending_bytes += len(f.body)
            return
        self._deliver(record, conn, f)

    def _deliver(self, record: _Record, conn: _Conn, f: Frame) -> None:
        if not self._channel.has_room():
            self._refuse(conn, f.msg_id, RejectReason.BUSY)
            return
        self._channel.push(NewMessage(record.addr, f.body))
        conn.link.acknowledge(f.msg_id)
        self._dirty.add(conn)

    def _refuse(self, conn: _Conn, msg_id: int, reason: RejectReason) -> None:
        conn.link.send_frame(encode_reject(msg_id, reason))
        self._dirty.add(conn)

    # ------------------------------------------------------------ peer records
    def _complete(self, record: _Record) -> None:
        if record.connected or record.dead:
            return
        record.connected = True
        if record.reverse_timer is not None:
            record.reverse_timer.cancel()
            record.reverse_timer = None
        for conn in (record.out, record.inn):
            if conn is not None:
                conn.link.budget = None  # proven: its messages are no longer held
                if conn.punch:  # a peer now: it counts like any other
                    conn.punch = False
                    self._punch_conns -= 1
        peer = record.peer()
        group, record.bootstrap = record.bootstrap, None
        if group is not None and _pin_problem(record, record.bootstrap_pin) is not None:
            group = None  # not the contact it pinned: its waiter fails below
        if group is not None and group.winner.done():
            # Another contact won this bootstrap first (the seed's "Connection
            # already bootstrapped").
            self._fail(record, "bootstrap already completed", ErrorCode.NO_ERROR, report=False)
            return
        log.info("connected to %s %s:%d", peer.kind.value, *record.addr)
        if group is not None and peer.node_info is not None:
            self._channel.push(BootstrappedTo(peer.node_info))
            group.winner.set_result(peer.node_info)
        else:
            relay = None if record.relay is None else record.relay.relay.addr
            self._channel.push(ConnectedTo(peer, relay))
        if (
            peer.node_info is not None
            and record.we_contacted
            and self._cache.add(peer.node_info, time.time())
        ):
            self._schedule_cache_save()
        for waiter in record.waiters:
            if not waiter.future.done():
                # A pin must hold for the peer we actually reached, whoever
                # started the connection.
                problem = _pin_problem(record, waiter.pin)
                if problem is None:
                    waiter.future.set_result(peer)
                else:
                    waiter.future.set_exception(ConnectionFailedError(record.addr, problem))
        record.waiters.clear()
        sends, record.pending_sends = record.pending_sends, []
        for s in sends:
            problem = _pin_problem(record, s.pin)
            if problem is None:
                self._send_on(record, s)
            else:
                self._resolve(s, False, problem)
        reads, record.pending_reads = record.pending_reads, []
        self._unproven.give(record.pending_bytes)
        record.pending_bytes = 0
        for conn, f in reads:
            self._deliver(record, conn, f)

    def _fail(self, record: _Record, reason: str, code: ErrorCode, *, report: bool = True) -> None:
        """Tears the peer down: closes both connections, fails its waiters and
        queued sends, and reports it once."""
        if record.dead:
            return
        record.dead = True
        record.failure = reason
        if self._records.get(record.addr) is record:
            del self._records[record.addr]
        if record.reverse_timer is not None:
            record.reverse_timer.cancel()
            record.reverse_timer = None
        # A half-open Node whose reverse connection failed: tell it why (the
        # reason goes with the code). A refusal of ours (a limit) stays one.
        if (
            not record.connected
            and record.inn is not None
            and record.to is not ToPeer.NOT_NEEDED
            and code is not ErrorCode.REFUSED
        ):
            code = ErrorCode.REVERSE_CONNECT_FAILED
        for conn in (record.out, record.inn):
            if conn is not None:
                conn.record = None
                self._close_conn(conn, code, reason)
                self._on_down(conn, reason)
        for path in list(self._relay_paths.values()):
            if path.relay is record:  # our relay is gone: so are the peers behind it
                self._close_path(path, f"lost the relay: {reason}", notify=False)
            elif path.record is record:
                self._close_path(path, reason, notify=True)
        for session in list(self._relay_sessions.values()):
            if record in (session.a, session.b):
                self._end_relay_session(session, "the other side left the relay")
        for s in record.pending_sends:
            self._resolve(s, False, reason)
        record.pending_sends.clear()
        record.pending_reads.clear()  # never acknowledged: their senders see unsent
        self._unproven.give(record.pending_bytes)
        record.pending_bytes = 0
        for waiter in record.waiters:
            if not waiter.future.done():
                waiter.future.set_exception(ConnectionFailedError(record.addr, reason))
        # Report a peer the user knew (connected) or asked for (we dialled it);
        # a half-open incoming Node that could not be reached back was never
        # visible to the user and is only logged.
        visible = record.connected or record.we_contacted or bool(record.waiters)
        record.waiters.clear()
        if report and visible and not self._closing:
            self._report_failure(record.addr, reason)
        else:
            log.info("dropped peer %s:%d: %s", record.addr[0], record.addr[1], reason)

    def _close_conn(self, conn: _Conn, code: ErrorCode, reason: str) -> None:
        if conn.link.down is None:
            conn.link.close(code, reason)
        self._dirty.add(conn)

    def _violation(self, conn: _Conn, code: ErrorCode, reason: str) -> None:
        log.warning(
            "closing connection with %s:%d: %s",
            conn.link.peer_addr[0],
            conn.link.peer_addr[1],
            reason,
        )
        self._close_conn(conn, code, reason)
        self._on_down(conn, f"protocol error: {reason}")

    def _handshake_timeout(self, conn: _Conn) -> None:
        """Outgoing: the QUIC handshake did not complete in time. Incoming: the
        peer sent no role handshake in time."""
        conn.deadline = None
        if conn.link.down is not None:
            return
        if conn.outgoing and not conn.link.up:
            reason = f"no answer within {conn.timeout:g} s"
        elif not conn.outgoing and conn.handshake is None:
            reason = "no role handshake"
        else:
            return
        self._close_conn(conn, ErrorCode.HANDSHAKE_TIMEOUT, reason)
        self._on_down(conn, reason)
        self._flush_soon()

    def _reverse_timeout(self, record: _Record) -> None:
        record.reverse_timer = None
        if not record.connected and not record.dead:
            if self.config.our_type is OurType.CLIENT:
                reason, code = "the node did not accept us as a Client in time", ErrorCode.REFUSED
            else:
                reason = "the peer did not connect back to us (are we reachable as a Node?)"
                code = ErrorCode.REVERSE_CONNECT_FAILED
            self._fail(record, reason, code)
            self._flush_soon()

    # ------------------------------------------------------------ echo
    async def _ask_echo(self, conn: _Conn) -> Address:
        try:
            answer = await self._ask(conn, FrameKind.ECHO_REQUEST, b"")
            return decode_address(answer.body)
        except ConnectionFailedError as exc:
            raise EchoError(exc.reason) from None
        except (WireError, ValueError) as exc:
            raise EchoError(f"bad echo response: {exc}") from None

    # ------------------------------------------------------------ housekeeping
    async def _housekeeping(self) -> None:
        """Keep-alive PINGs and send timeouts, for all connections at once."""
        interval = self.config.keep_alive_interval_msec / 1000.0
        tick = min(x for x in (interval, self.send_timeout or 0.0, 1.0) if x > 0)
        last_ping = self._now()
        while not self._closing:
            await asyncio.sleep(tick)
            now = self._now()
            if interval > 0 and now - last_ping >= interval:
                last_ping = now
                for conn in list(self._conns):
                    if conn.link.up and conn.link.down is None:
                        conn.quic.send_ping(0)
                        self._dirty.add(conn)
            if self.send_timeout:
                for conn in list(self._conns):
                    if conn.outstanding and now - conn.progress_at >= self.send_timeout:
                        self._send_timed_out(conn)
            self._flush_soon()

    def _send_timed_out(self, conn: _Conn) -> None:
        """The peer acknowledged nothing for ``send_timeout`` while sends were
        outstanding. What it has not acknowledged may still sit in QUIC's
        buffers (a small message cannot be taken back out of the stream it
        shares), so the connection is closed: every send on it ends unsent
        and none of them can arrive later."""
        assert self.send_timeout is not None
        reason = f"send timed out: the peer acknowledged nothing for {self.send_timeout:g} s"
        self._bump("connections closed: send timeout")
        record = conn.record
        if record is not None and not record.dead:
            self._fail(record, reason, ErrorCode.DISCONNECTED)
        else:
            self._close_conn(conn, ErrorCode.DISCONNECTED, reason)
            self._on_down(conn, reason)

    # ------------------------------------------------------------ the cache file
    def _schedule_cache_save(self) -> None:
        if self._cache_save is None and self._loop is not None and not self._closing:
            self._cache_save = self._loop.call_later(CACHE_SAVE_DELAY, self._save_cache)

    def _save_cache(self) -> None:
        """Writes (merge, atomic replace) on the loop: a 200-entry save takes
        about a millisecond, and doing it here keeps the cache single-threaded."""
        self._cache_save = None
        if self._cache_store is not None:
            self._cache_store.save(self._cache)

    # ------------------------------------------------------------ helpers
    def _spawn(self, coro: Any) -> None:
        task = self._running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise EndpointClosedError("endpoint not started")
        return self._loop

    def _check_running(self) -> None:
        if self._transport is None or self._closing:
            raise EndpointClosedError("endpoint is not running")

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def _bump(self, key: str, n: int = 1) -> None:
        self._counters[key] = self._counters.get(key, 0) + n


#: Frame kinds that answer a request (msg_id: the request's); with msg_id 0,
#: PUNCH_INFO and RELAY_OPEN are notices from a rendezvous instead.
_ANSWERS = frozenset(
    {FrameKind.ECHO_RESPONSE, FrameKind.PUNCH_INFO, FrameKind.RELAY_OPEN, FrameKind.REACH_RESULT}
)
#: Refusals of our requests to a rendezvous, and what they mean.
_REQUEST_REFUSALS = {
    RejectReason.UNKNOWN_PEER: "the rendezvous is not connected to that peer",
    RejectReason.RELAY_REFUSED: "the rendezvous does not relay (or is at its relay limits)",
    RejectReason.RATE_LIMITED: "the rendezvous refuses: too many punch or relay requests from us "
    "(try again in a second)",
    RejectReason.CHECK_REFUSED: "the node runs no reachability check for us now (we are a "
    "Client, or it is busy)",
}


def _drain_socket(transport: asyncio.DatagramTransport) -> socket.socket | None:
    """Enlarges the socket buffers and returns a non-blocking duplicate of the
    transport's socket (asyncio exposes no read call on it), or ``None`` if the
    loop's transport has no socket (then we read one datagram per wake-up)."""
    tsock = transport.get_extra_info("socket")
    if tsock is None:
        return None
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):  # a platform refusing is harmless
            tsock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    try:
        sock: socket.socket = tsock.dup()
    except (AttributeError, OSError):  # pragma: no cover
        return None
    sock.setblocking(False)
    return sock


def _v6_form(addr: Address) -> tuple[str, int]:
    """An address as an IPv6 socket sends to it (IPv4 as ``::ffff:a.b.c.d``)."""
    return addr if ":" in addr[0] else ("::ffff:" + addr[0], addr[1])


def _ip_key(addr: Address) -> bytes:
    """What the per-IP limit counts by: the IPv4 address, or the IPv6 /64
    (one host is commonly given a whole /64)."""
    packed = ipaddress.ip_address(addr[0]).packed
    return packed if len(packed) == 4 else packed[:8]


def _pin_problem(record: _Record, pin: bytes) -> str | None:
    """Why a connected peer is not the holder of the pinned certificate
    ``pin`` (None: no pin, or it is). A record's certificate is the one its
    peer proved on a TLS connection with us."""
    if not pin or record.cert == pin:
        return None
    if record.kind is PeerKind.CLIENT:
        return "the peer at that address is a Client (it holds no pinned certificate)"
    if not record.cert:
        # Dialled without a pin and never told its certificate (we are a
        # Client): check what it presented on our connection.
        out = record.out
        if out is not None and out.link.up:
            return tls.check_pinned_peer(out.quic, pin)
        return "cannot tell which certificate the peer at that address holds"
    presented = certs.fingerprint(record.cert).hex()[:16] if record.cert else "none"
    return (
        "the peer at that address presents another certificate than the one pinned "
        f"(presented sha256 {presented}..., pinned {certs.fingerprint(pin).hex()[:16]}...)"
    )


def _claim_matches(record: _Record, claimed: bytes) -> bool:
    """A Node's claimed certificate must be the one we know for that address:
    pinned when we dialled it, or presented on our own connection to it."""
    if record.cert:
        return record.cert == claimed
    out = record.out
    if out is not None and out.link.up:
        return tls.check_pinned_peer(out.quic, claimed) is None
    return True  # nothing known yet: our reverse connection will pin it


def _reverse_cause(reason: str) -> str:
    """What the peer's reason for a failed reverse connection means for us."""
    lowered = reason.lower()
    if not reason:
        return " (we are not reachable as a Node)"
    if "tls" in lowered or "certificate" in lowered or "alert" in lowered:
        return f": its check of our certificate failed ({reason})"
    if "no answer" in lowered or "did not connect back" in lowered or "idle" in lowered:
        return f" (we are not reachable as a Node: {reason})"
    return f": {reason}"


def _describe_close(ev: LinkDown) -> str:
    """A human reason for a closed connection: our application codes by name,
    QUIC transport codes (and TLS alerts) by theirs."""
    detail = f": {ev.reason}" if ev.reason else ""
    if ev.application:
        if ev.error_code == ErrorCode.REVERSE_CONNECT_FAILED:
            return f"the peer could not connect back to us{_reverse_cause(ev.reason)}"
        if ev.error_code == ErrorCode.REFUSED and ev.by_peer:
            return f"the peer refused us{detail}"
        if ev.error_code == ErrorCode.CERTIFICATE_REFUSED and ev.by_peer:
            return f"the peer refused our certificate{detail}"
        try:
            name = ErrorCode(ev.error_code).name.lower().replace("_", " ")
        except ValueError:
            name = f"code {ev.error_code:#x}"
        return f"{'peer' if ev.by_peer else 'we'} closed the connection ({name}){detail}"
    if ev.reason == "Idle timeout":
        return "idle timeout: no packets from the peer in time"
    if ev.error_code == QuicErrorCode.CONNECTION_REFUSED:
        return "the peer refused the connection (its connection limit, or it is a Client)"
    if ev.error_code == QuicErrorCode.INVALID_TOKEN:
        return "the peer rejected our retry token"
    if 0x100 <= ev.error_code <= 0x1FF:
        return (
            f"TLS handshake failed (alert {ev.error_code - 0x100}, code {ev.error_code:#x}){detail}"
        )
    try:
        name = QuicErrorCode(ev.error_code).name
    except ValueError:
        name = f"{ev.error_code:#x}"
    return f"connection closed by QUIC ({name}){detail}"
