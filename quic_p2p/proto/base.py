"""The engine's shared state, its clock and timers, and what it emits.

The engine is built in layers, one module per concern (``conns`` → ``sends``
→ ``peers`` → ``rendezvous`` → ``relay`` → ``streams`` → ``engine``), each a
class adding to the one below. The few calls that go up a layer are declared
here and implemented where they belong.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aioquic.quic.configuration import QuicConfiguration

from ..accel import RetryTokens
from ..peer import Address, NodeInfo, PeerId
from ..reasons import Reason
from . import tls
from .admission import Admission
from .bootstrap_cache import BootstrapCache
from .config import CompleteCert, Config, OurType, RelayPolicy
from .events_queue import DatagramQueue, EventQueue
from .limits import (
    CID_LENGTH,
    DATAGRAM_QUEUE_CAPACITY,
    DEFAULT_MAX_STREAMS_PER_PEER,
    HANDSHAKE_TIMEOUT,
    PUNCH_DIAL_BURST,
    PUNCH_DIAL_RATE,
    UNPROVEN_MAX_BYTES,
)
from .link import HeldBytes, LinkEvent
from .peer_table import PeerTable
from .ratelimit import TokenBucket
from .resolve import Resolver, StaticContacts
from .state import (
    BootstrapGroup,
    Conn,
    ConnectionInfo,
    Record,
    RelayPath,
    RelaySession,
    Result,
    Send,
    Timer,
    Totals,
)
from .wire import ErrorCode

if TYPE_CHECKING:
    from aioquic.quic import events as qe

    from .streams import Protocol, Stream

log = logging.getLogger("quic_p2p.engine")

#: One datagram to send: payload, destination, and the socket (0: ours).
Transmit = tuple[bytes, Address, int]


class EngineBase:
    """State every layer shares; see ``Engine`` for the public contract."""

    def __init__(
        self,
        config: Config,
        *,
        cert: CompleteCert,
        random_bytes: Callable[[int], bytes],
        wall_clock: Callable[[], float],
        events: EventQueue,
        max_connections: int,
        max_connections_per_ip: int,
        stateless_retry: bool,
        retry_above_rate: float,
        send_timeout: float | None,
        max_unacked_bytes: int,
        outcome_events: bool,
        relay: RelayPolicy | None,
        datagram_capacity: int = DATAGRAM_QUEUE_CAPACITY,
        max_streams_per_peer: int = DEFAULT_MAX_STREAMS_PER_PEER,
    ) -> None:
        self.config = config
        self.relay_policy = relay
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.send_timeout = send_timeout
        self.max_unacked_bytes = max_unacked_bytes
        self.outcome_events = outcome_events
        #: The user's events, in order (bounded for user messages).
        self.events = events
        #: Datagrams from connected peers, bounded (drops counted).
        self.datagrams = DatagramQueue(datagram_capacity)
        self._wall_clock = wall_clock
        #: Called with each packet a peer sends us to relay: what a relay
        #: sees (ciphertext), for inspection.
        self.relay_tap: Callable[[bytes], None] | None = None
        self._cert = cert
        #: Ours: the key of our certificate.
        self.peer_id = PeerId.from_certificate(cert.cert_der)
        self._admission = Admission(
            RetryTokens(random_bytes=random_bytes),
            random_bytes=random_bytes,
            retry=stateless_retry,
            retry_above_rate=retry_above_rate,
            cid_length=CID_LENGTH,
        )
        #: Each connection gets a qlog trace (the driver writes them).
        self._qlog = config.qlog_dir is not None
        self._server_cfg: QuicConfiguration | None = None
        if config.our_type is OurType.NODE:
            self._server_cfg = tls.server_configuration(
                config, cert, connection_id_length=CID_LENGTH
            )
        #: The bootstrap cache (the driver loads and saves its file).
        self.cache = BootstrapCache(
            hard_coded=config.hard_coded_contacts, random_bytes=random_bytes
        )
        #: Where ``resolve`` looks for a peer's addresses, in order.
        self.resolvers: list[Resolver] = [self.cache, StaticContacts(config.hard_coded_contacts)]
        self._now_value = 0.0
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self._ids = 0
        self._results: list[Result] = []
        self._transmits: list[Transmit] = []
        #: Relayed inner datagrams, handled after the one that carried them.
        self._inner: deque[tuple[bytes, Address, RelayPath]] = deque()
        self._cids: dict[bytes, Conn] = {}
        self._conns: set[Conn] = set()
        self._conn_ids: dict[int, Conn] = {}
        #: The last connections forgotten, as they were then (oldest first).
        self._recently_closed: dict[int, ConnectionInfo] = {}
        self._records = PeerTable()
        self._dirty: set[Conn] = set()
        self._sends: dict[int, Send] = {}
        self._counters: dict[str, int] = {}
        #: Lifetime counts (``EndpointStats.totals``).
        self._totals = Totals()
        self._closing = False
        self._started = False
        self._local_addr: Address | None = None
        self._bootstraps: dict[int, BootstrapGroup] = {}
        self._punches_pending = 0
        #: Probes that count as punches (started by a rendezvous's notice).
        self._punch_probes: set[int] = set()
        #: Our sides of relay sessions, by relay and session id.
        self._relay_paths: dict[tuple[Record, int], RelayPath] = {}
        self._relay_sessions: dict[int, RelaySession] = {}
        self._next_relay_session = 1
        self._relay_backlog_peak = 0
        self._reach_pending = 0
        #: Reachability checks we run for peers: the asker's connection and msg_id.
        self._reach_checks: dict[int, tuple[Conn, int]] = {}
        #: Messages held for peers not yet proven (see UNPROVEN_MAX_BYTES).
        self._unproven = HeldBytes(UNPROVEN_MAX_BYTES)
        self._per_ip: dict[bytes, int] = {}
        #: Incoming connections not yet a connected peer's (``MAX_JOINING``),
        #: and by the address key they were counted under.
        self._joining = 0
        self._joining_per_ip: dict[bytes, int] = {}
        self._punch_dials = TokenBucket(PUNCH_DIAL_RATE, PUNCH_DIAL_BURST)
        #: Connections flagged ``punch`` (see Conn.punch).
        self._punch_conns = 0
        #: Our socket is IPv6 (maybe dual stack).
        self._v6_socket = False
        #: IPv4 peers are reachable from our socket (an IPv4 or dual-stack one).
        self._ipv4_ok = True
        #: Protocols we accept streams for, by name (``Streaming``).
        self.protocols: dict[str, Protocol] = {}
        #: Incoming streams one peer connection may have open at once.
        self.max_streams_per_peer = max_streams_per_peer
        #: Streams whose waiting reader or writer should look again.
        self.stream_wakes: list[Stream] = []
        #: Incoming streams (and whole requests) for the handlers.
        self.stream_arrivals: list[Stream] = []
        self._draining: set[Stream] = set()
        self._next_stream = 0

    # ------------------------------------------------------------ clock
    def _now(self) -> float:
        """The time of the input being handled (every entry point takes one)."""
        return self._now_value

    def _advance(self, now: float) -> None:
        # A caller's clock never runs backwards for us.
        if now > self._now_value:
            self._now_value = now

    def _call_at(self, at: float, fn: Callable[..., object], *args: Any) -> Timer:
        timer = Timer(at, fn, args)
        self._seq += 1
        heapq.heappush(self._timers, (at, self._seq, timer))
        if len(self._timers) > 4096 and len(self._timers) > 8 * (len(self._conns) + 64):
            # Re-armed connection timers leave cancelled entries behind.
            self._timers = [e for e in self._timers if not e[2].cancelled]
            heapq.heapify(self._timers)
        return timer

    def _call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Timer:
        return self._call_at(self._now_value + delay, fn, *args)

    def poll_timeout(self) -> float | None:
        """When ``handle_timeout`` is next due (None: nothing pending)."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def _run_due_timers(self, now: float) -> None:
        timers = self._timers
        due: list[Timer] = []
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                due.append(timer)
        # (Timers the callbacks set for now run on the next call.)
        for timer in due:
            if not timer.cancelled:
                timer.cancelled = True
                timer.fn(*timer.args)

    # ------------------------------------------------------------ outputs
    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _emit(self, result: Result) -> None:
        self._results.append(result)

    def _bump(self, key: str, n: int = 1) -> None:
        self._counters[key] = self._counters.get(key, 0) + n

    # ------------------------------------------------------------ upward calls
    # Implemented by the layer named; declared here so lower layers can call them.
    def _on_link_event(self, conn: Conn, ev: LinkEvent) -> None:  # engine
        raise NotImplementedError

    def _on_down(self, conn: Conn, reason: Reason) -> None:  # peers
        raise NotImplementedError

    def _on_path_change(self, conn: Conn, old: Address) -> None:  # peers
        raise NotImplementedError

    def _connect(
        self,
        node: NodeInfo,
        *,
        we_contacted: bool,
        timeout: float = HANDSHAKE_TIMEOUT,
        relay: RelayPath | None = None,
    ) -> Record:  # peers
        raise NotImplementedError

    def _fail(
        self, record: Record, reason: Reason, code: ErrorCode, *, report: bool = True
    ) -> None:  # peers
        raise NotImplementedError

    def _peer_gone(self, record: Record, reason: Reason) -> None:  # relay
        raise NotImplementedError

    def _go_direct(self, record: Record) -> None:  # relay
        raise NotImplementedError

    def _on_stream_event(self, conn: Conn, event: qe.QuicEvent) -> None:  # streams
        raise NotImplementedError

    def _streams_proven(self, record: Record) -> None:  # streams
        raise NotImplementedError

    def _streams_lost(self, conn: Conn, reason: Reason) -> None:  # streams
        raise NotImplementedError
