"""``Engine``: the whole protocol as a state machine, no I/O.

The contract is aioquic's and quinn-proto's: datagrams and ``now`` in
(``handle_datagram``), datagrams out (``datagrams_to_send``), one deadline
(``poll_timeout`` / ``handle_timeout``), the user's events out
(``poll_event``), and commands in (send, connect, ask, probe, ...), each
returning an id whose outcome comes out of ``poll_result`` as a ``Result``.
It never reads a clock (every entry point takes ``now``; the wall clock for
certificate dates and the cache is injected), draws no randomness it was not
given, and touches no socket, file or task: ``aio`` drives it.
"""

from __future__ import annotations

import dataclasses

from ..accel.types import Frame, FrameKind
from ..errors import ConnectionFailedError, DatagramError
from ..events import BootstrappedTo, Datagram, Event
from ..peer import MAX_CONTACT_ADDRESSES, Address, NodeInfo, Peer, PeerId, PeerKind
from ..reasons import Cause, Reason
from ..stats import EndpointStats, EndpointTotals, PathKind, PeerPath, PeerStats
from .base import Transmit
from .conns import connection_info, describe_close
from .limits import ECHO_QUORUM, HANDSHAKE_TIMEOUT
from .link import LinkAcked, LinkDatagram, LinkDown, LinkEvent, LinkFrame, LinkRefused, LinkUp
from .pins import Pin, pin_problem
from .relay import BUSY
from .sends import CONNECTION_CLOSED, ENDPOINT_CLOSED, REQUEST_REFUSALS
from .state import (
    BootstrapGroup,
    BootstrapWon,
    Conn,
    ConnectionInfo,
    ConnectResult,
    ProbeResult,
    Record,
    RelaySessionInfo,
    Result,
    Send,
    Waiter,
)
from .streams import Streaming
from .wire import ErrorCode, RejectReason, encode_address, frame

__all__ = ["Engine", "RelaySessionInfo"]

NO_ADDRESS = Reason(
    Cause.NOT_CONNECTED, "not connected to that peer, and no source knows an address for its id"
)

#: Frame kinds that answer a request (msg_id: the request's); with msg_id 0,
#: PUNCH_INFO and RELAY_OPEN are notices from a rendezvous instead.
_ANSWERS = frozenset(
    {FrameKind.ECHO_RESPONSE, FrameKind.PUNCH_INFO, FrameKind.RELAY_OPEN, FrameKind.REACH_RESULT}
)


class Engine(Streaming):
    """One endpoint's protocol state: connections, peers, sends, requests,
    relay sessions and rendezvous duties. See the module docstring."""

    # ------------------------------------------------------------ lifecycle
    def start(self, now: float, local_addr: Address, *, v6_socket: bool, ipv4_ok: bool) -> None:
        """The driver bound its socket at ``local_addr``."""
        self._advance(now)
        self._started = True
        self._local_addr = local_addr
        self._v6_socket = v6_socket
        self._ipv4_ok = ipv4_ok
        interval = self.config.keep_alive_interval_msec / 1000.0
        if interval > 0 or self.send_timeout:
            tick = min(x for x in (interval, self.send_timeout or 0.0, 1.0) if x > 0)
            self._call_later(tick, self._housekeeping, tick, now)

    def close(self, now: float) -> None:
        """Closes everything: pending sends resolve unsent, peers are dropped
        without a ``ConnectionFailure``."""
        self._advance(now)
        if self._closing:
            return
        self._closing = True
        for record in self._records:
            self._fail(record, ENDPOINT_CLOSED, ErrorCode.SHUTDOWN, report=False)
        for path in list(self._relay_paths.values()):
            self._close_path(path, ENDPOINT_CLOSED, notify=False)
        for session in list(self._relay_sessions.values()):
            self._end_relay_session(session, "endpoint closed")
        for conn in list(self._conns):
            self._close_conn(conn, ErrorCode.SHUTDOWN, "endpoint closed")
        for s in list(self._sends.values()):
            self._resolve(s, False, ENDPOINT_CLOSED)
        self.datagrams.close()

    def forget_all(self) -> None:
        """After ``close`` and the last transmit: drops every connection."""
        for conn in list(self._conns):
            self._forget(conn)
        self._timers.clear()

    @property
    def closing(self) -> bool:
        return self._closing

    # ------------------------------------------------------------ I/O in and out
    def handle_datagram(self, now: float, data: bytes, addr: Address, socket: int = 0) -> None:
        """One UDP datagram from ``addr`` (normalized), off our socket
        (``socket`` 0) or one the driver opened for a probe."""
        if self._closing:
            return
        if now > self._now_value:
            self._now_value = now
        totals = self._totals
        totals.packets_received += 1
        totals.bytes_received += len(data)
        self._receive(data, addr, None, socket)
        if self._inner:
            self._drain_inner()

    def handle_timeout(self, now: float) -> None:
        """Runs what was due by ``now`` (see ``poll_timeout``)."""
        self._advance(now)
        self._run_due_timers(now)
        self._drain_inner()

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        """What to send now: (payload, destination, socket) each."""
        self._advance(now)
        if self._draining:
            self._check_draining()
        self._flush()
        out, self._transmits = self._transmits, []
        return out

    def poll_event(self) -> Event | None:
        """The user's next event, if one is queued."""
        return self.events.get_nowait()

    def poll_result(self) -> Result | None:
        """The next command outcome (or driver request), if any."""
        if not self._results:
            return None
        return self._results.pop(0)

    def take_results(self) -> list[Result]:
        """Every command outcome queued so far, in order."""
        out = self._results
        if out:
            self._results = []
        return out

    def _drain_inner(self) -> None:
        # Relayed datagrams, each handled on its own, not inside the relay
        # connection's processing (bounded: each comes from a frame received).
        while self._inner:
            data, addr, path = self._inner.popleft()
            self._receive(data, addr, path, 0)

    # ------------------------------------------------------------ commands: sends
    def send(self, now: float, peer: Peer | NodeInfo | PeerId, msg: bytes, token: int) -> int:
        """Sends ``msg`` to ``peer`` (connecting to a Node first); its outcome
        is a ``SendResult``. A ``Peer`` or ``PeerId`` pins the peer's key; a
        ``NodeInfo`` what it carries (its certificate exactly, else its id).
        A ``PeerId`` not connected is looked up with ``resolve``."""
        self._advance(now)
        if isinstance(peer, PeerId):
            record = self._records.get(peer)
            if record is not None and record.connected:
                peer = record.peer()
            else:
                node = self.resolve(peer)
                if node is None:
                    s = Send(self._next_id(), ("0.0.0.0", 0), bytes(msg), token, Pin(peer), peer)
                    self._sends[s.id] = s
                    self._resolve(s, False, NO_ADDRESS)
                    return s.id
                peer = node
        if isinstance(peer, NodeInfo):
            pin = Pin.of(peer)
            peer = Peer.node(peer)
        else:
            pin = Pin(peer.peer_id)
        s = Send(self._next_id(), peer.peer_addr, bytes(msg), token, pin, pin.peer_id)
        self._sends[s.id] = s
        self._submit(peer, s)
        return s.id

    def abandon_send(self, send_id: int) -> bool:
        """Nobody waits on send ``send_id`` any more: its outcome goes to the
        events instead. False when it is already decided."""
        s = self._sends.get(send_id)
        if s is None:
            return False
        s.abandoned = True
        return True

    # ------------------------------------------------------------ commands: datagrams
    def send_datagram(self, now: float, peer: Peer | NodeInfo | PeerId, data: bytes) -> None:
        """Queues ``data`` as one unreliable datagram (RFC 9221) to a
        connected peer. Raises ``DatagramError``: not connected, the peer
        takes no datagrams, or larger than ``max_datagram_size(peer)``."""
        self._advance(now)
        conn = self._datagram_conn(peer)
        if conn is None:
            raise DatagramError("not connected to that peer")
        limit = conn.link.max_datagram_payload
        if limit == 0:
            raise DatagramError("the peer does not take datagrams")
        if len(data) > limit:
            raise DatagramError(
                f"a datagram of {len(data)} bytes: at most {limit} fit one to this peer"
            )
        conn.link.send_datagram(bytes(data))
        self._dirty.add(conn)
        self._bump("datagrams sent")
        self._totals.datagrams_sent += 1
        if conn.record is not None:
            conn.record.datagrams_sent += 1

    def max_datagram_size(self, peer: Peer | NodeInfo | PeerId) -> int:
        """The largest datagram ``send_datagram`` takes for ``peer`` now (0:
        not connected, or it takes none)."""
        conn = self._datagram_conn(peer)
        return 0 if conn is None else conn.link.max_datagram_payload

    def _datagram_conn(self, peer: Peer | NodeInfo | PeerId) -> Conn | None:
        record = self._connected_record(peer)
        return None if record is None else self._send_conn(record)

    def _on_datagram(self, conn: Conn, data: bytes) -> None:
        record = conn.record
        if record is None or not record.connected:
            # Only proven peers send us anything the user sees.
            self._bump("datagrams dropped: peer not connected")
            return
        record.datagrams_received += 1
        self._totals.datagrams_received += 1
        self.datagrams.push(Datagram(record.peer_id, record.addr, data))

    # ------------------------------------------------------------ commands: peers
    def check_connect(self, node: NodeInfo) -> Peer | None:
        """The connected peer at ``node``'s address (None: not connected).
        Raises ``ConnectionFailedError`` for a node that is us, or a
        connected peer that does not hold the certificate ``node`` pins."""
        if self._is_us(node):
            raise ConnectionFailedError(
                node.peer_addr, Reason(Cause.SELF, "that is us (our own address or key)")
            )
        record = self._records.find(node)
        if record is None or not record.connected:
            return None
        problem = pin_problem(record, Pin.of(node))
        if problem is not None:
            raise ConnectionFailedError(node.peer_addr, problem)
        return record.peer()

    def connect(self, now: float, node: NodeInfo, *, timeout: float = HANDSHAKE_TIMEOUT) -> int:
        """Connects to ``node``; a ``ConnectResult`` follows (at once when it
        is already connected). Raises as ``check_connect`` does."""
        self._advance(now)
        peer = self.check_connect(node)
        waiter = Waiter(self._next_id(), Pin.of(node))
        if peer is not None:
            self._emit(ConnectResult(waiter.id, node.peer_addr, peer))
            return waiter.id
        return self._connect_waiting(node, waiter, timeout)

    def disconnect(self, now: float, peer: Address | PeerId) -> None:
        """Closes every connection with the peer (``ConnectionFailure`` if it
        was connected)."""
        self._advance(now)
        record = self._record(peer)
        if record is not None:
            self._fail(
                record, Reason(Cause.DISCONNECTED, "disconnected by us"), ErrorCode.DISCONNECTED
            )

    # ------------------------------------------------------------ commands: requests
    def ask(self, now: float, conn_id: int, kind: FrameKind, body: bytes, within: float) -> int:
        """Sends a request on connection ``conn_id``; an ``AnswerResult``
        follows within ``within`` seconds."""
        self._advance(now)
        conn = self._conn_ids.get(conn_id)
        if conn is None:
            raise ConnectionFailedError(("", 0), CONNECTION_CLOSED)
        return self._ask(conn, kind, body, within)

    def rendezvous_conn(self, via: Address, target: Address) -> int:
        """The connection id to ask the rendezvous ``via`` about ``target``;
        ``NoRendezvousError`` when it cannot help."""
        return self._rendezvous_conn(via, target).id

    def dial_echo(self, now: float, contact: NodeInfo) -> int:
        """A connection that only asks for our address (no role handshake)."""
        self._advance(now)
        return self._dial(contact, echo_only=True).id

    def echo_conns(self) -> list[int]:
        """Connections to Nodes we may ask for our address (``ECHO_QUORUM`` at most)."""
        return [
            r.out.id
            for r in self._records
            if r.connected and r.kind is PeerKind.NODE and r.out is not None
        ][:ECHO_QUORUM]

    def close_connection(self, now: float, conn_id: int, reason: str) -> None:
        self._advance(now)
        conn = self._conn_ids.get(conn_id)
        if conn is not None:
            self._close_conn(conn, ErrorCode.NO_ERROR, reason)

    def connection_peer(self, conn_id: int) -> Address:
        conn = self._conn_ids.get(conn_id)
        return conn.link.peer_addr if conn is not None else ("", 0)

    # ------------------------------------------------------------ commands: NAT
    def probe(self, now: float, node: NodeInfo, socket: int = 0) -> int:
        """A throwaway connection to ``node`` from ``socket``; a ``ProbeResult``
        says whether its TLS handshake completed."""
        self._advance(now)
        return self._probe(node, socket)

    def probe_path(self, now: float, addr: Address, node: NodeInfo) -> int:
        """Probes the direct path to the relayed peer at ``addr`` (reached at
        ``node``); one that works is taken (``UpgradedToDirect``)."""
        self._advance(now)
        record = self._records.at(addr)
        if record is None:
            probe = self._next_id()
            self._emit(ProbeResult(probe, False))
            return probe
        return self._probe_path(record, node)

    def relay_busy(self, addr: Address, via: Address) -> Reason | None:
        """Why a relayed connection to ``addr`` through ``via`` cannot start."""
        existing = self._records.at(addr)
        rendezvous = self._records.at(via)
        if existing is not None and (
            rendezvous is None or not self._punch_only(existing, rendezvous)
        ):
            return BUSY
        return None

    def connect_relayed(self, now: float, node: NodeInfo, via: Address, answer: Frame) -> int:
        """Connects to ``node`` through the session ``answer`` (the relay's
        RELAY_OPEN) opened; a ``ConnectResult`` follows."""
        self._advance(now)
        return self._connect_relayed(node, via, answer)

    def reach_checked(self, now: float, check: int, target: Address, reached: bool) -> None:
        """The driver's answer to a ``ReachCheckWanted``."""
        self._advance(now)
        self._reach_checked(check, target, reached)

    # ------------------------------------------------------------ commands: bootstrap
    def bootstrap_begin(self) -> int:
        group = BootstrapGroup(self._next_id())
        self._bootstraps[group.id] = group
        return group.id

    def bootstrap_connect(self, now: float, contact: NodeInfo, group_id: int) -> int | None:
        """Tries one contact for the bootstrap ``group_id``; its connect id, or
        None when a connected Node at that address won it at once."""
        self._advance(now)
        group = self._bootstraps[group_id]
        existing = self._records.find(contact)
        if existing is not None and existing.connected and existing.kind is PeerKind.NODE:
            problem = pin_problem(existing, Pin.of(contact))
            if problem is not None:
                raise ConnectionFailedError(contact.peer_addr, problem)
            if not group.won:
                info = existing.node_info()
                self.events.push(BootstrappedTo(info))
                group.won = True
                self._emit(BootstrapWon(group.id, info))
            return None
        record = self._connect(contact, we_contacted=True)
        if record.dead:
            raise ConnectionFailedError(contact.peer_addr, record.failure)
        if record.bootstrap is None and not record.connected:
            record.bootstrap = group
            record.bootstrap_pin = Pin.of(contact)
            group.members.append(record)
        waiter = Waiter(self._next_id(), Pin.of(contact))
        record.waiters.append(waiter)
        return waiter.id

    def bootstrap_end(self, now: float, group_id: int) -> None:
        """The bootstrap is over: members still connecting are dropped."""
        self._advance(now)
        group = self._bootstraps.pop(group_id, None)
        if group is None:
            return
        group.won = True
        for record in group.members:
            if record.bootstrap is group and not record.connected:
                record.bootstrap = None
                done = Reason(Cause.REPLACED, "bootstrap done")
                self._fail(record, done, ErrorCode.NO_ERROR, report=False)

    # ------------------------------------------------------------ queries
    @property
    def local_addr(self) -> Address | None:
        return self._local_addr

    @property
    def our_certificate(self) -> bytes:
        return self._cert.cert_der

    def is_us(self, node: NodeInfo) -> bool:
        return self._is_us(node)

    def connected_peers(self) -> list[Peer]:
        return [r.peer() for r in self._records if r.connected]

    def peer(self, who: Address | PeerId) -> Peer | None:
        """The connected peer with that id (or last seen at that address), or None."""
        record = self._record(who)
        return record.peer() if record is not None and record.connected else None

    def resolve(self, peer_id: PeerId) -> NodeInfo | None:
        """Where the Node ``peer_id`` may be: the address we see it at now,
        then what each of ``resolvers`` knows (the bootstrap cache and the
        hard-coded contacts first), as one NodeInfo pinning that id; None
        when no source knows an address."""
        found: list[Address] = []
        record = self._records.get(peer_id)
        if record is not None and record.kind is not PeerKind.CLIENT:
            found.append(record.addr)
        for source in self.resolvers:
            node = source.find(peer_id)
            if node is not None:
                found += node.addresses
        addrs = list(dict.fromkeys(found))[:MAX_CONTACT_ADDRESSES]
        if not addrs:
            return None
        return NodeInfo(addrs[0], peer_id=peer_id, other_addrs=tuple(addrs[1:]))

    def _record(self, who: Address | PeerId) -> Record | None:
        return self._records.get(who) if isinstance(who, PeerId) else self._records.at(who)

    def relayed_via(self, addr: Address) -> Address | None:
        """The relay our packets to the connected peer at ``addr`` go
        through, or None (direct, or not connected)."""
        record = self._records.at(addr)
        if record is None or not record.connected or record.relay is None:
            return None
        return record.relay.relay.addr

    def peer_certificate(self, addr: Address) -> bytes:
        """The certificate we know for the peer at ``addr`` (b"": none)."""
        record = self._records.at(addr)
        return record.cert if record is not None else b""

    def count(self, key: str, n: int = 1) -> None:
        """Adds to one of the ``stats`` counters (the driver's drops)."""
        self._bump(key, n)

    def is_relayed(self, addr: Address) -> bool:
        """The peer at ``addr`` is known (connected or connecting) and relayed."""
        record = self._records.at(addr)
        return record is not None and not record.dead and record.relay is not None

    def connections(self) -> list[ConnectionInfo]:
        """Every QUIC connection we hold now, oldest first."""
        return [connection_info(c) for c in sorted(self._conns, key=lambda c: c.id)]

    def connection(self, conn_id: int) -> ConnectionInfo | None:
        """Connection ``conn_id`` now (or as it was when it ended, for the
        last ``RECENTLY_CLOSED`` connections), else None."""
        conn = self._conn_ids.get(conn_id)
        return self._recently_closed.get(conn_id) if conn is None else connection_info(conn)

    def send_raw_frame(self, now: float, conn_id: int, data: bytes) -> None:
        """Puts frame bytes, as given and unchecked, on connection
        ``conn_id``'s control stream: for tools and tests that speak the wire
        protocol (docs/wire.md) directly, e.g. to play a misbehaving peer."""
        self._advance(now)
        conn = self._conn_ids.get(conn_id)
        if conn is None or conn.link.down is not None:
            raise ConnectionFailedError(("", 0), CONNECTION_CLOSED)
        conn.link.send_frame(data)
        self._dirty.add(conn)

    def relay_sessions(self) -> list[RelaySessionInfo]:
        """As a relay: the sessions we forward packets for now."""
        sessions = self._relay_sessions.values()
        return [RelaySessionInfo(s.id, s.a.addr, s.b.addr, s.bytes) for s in sessions]

    def peer_stats(self, who: Address | PeerId) -> PeerStats | None:
        """The connected peer with that id (or last seen at that address),
        now; None when not connected. See ``PeerStats``."""
        record = self._record(who)
        if record is None or not record.connected or record.dead:
            return None
        conns = [c for c in (record.out, record.inn) if c is not None]
        send = self._send_conn(record)
        rtt = None if send is None else send.link.rtt
        min_rtt, cwnd, in_flight = (None, 0, 0) if send is None else send.link.recovery
        relay = None if record.relay is None else record.relay.relay.addr
        kind = PeerKind.CLIENT if record.kind is PeerKind.CLIENT else PeerKind.NODE
        return PeerStats(
            peer_id=record.peer_id,
            kind=kind,
            path=PeerPath(
                PathKind.DIRECT if relay is None else PathKind.RELAYED, record.addr, relay
            ),
            connected_since=record.connected_at,
            connections=len(conns),
            rtt=rtt,
            min_rtt=min_rtt,
            congestion_window=cwnd,
            bytes_in_flight=in_flight,
            bytes_sent=sum(c.bytes_out for c in conns),
            bytes_received=sum(c.bytes_in for c in conns),
            packets_sent=sum(c.packets_out for c in conns),
            packets_received=sum(c.packets_in for c in conns),
            packets_lost=sum(c.quic.packets_lost for c in conns),
            messages_sent=record.messages_sent,
            messages_unsent=record.messages_unsent,
            messages_received=record.messages_received,
            datagrams_sent=record.datagrams_sent,
            datagrams_received=record.datagrams_received,
            streams_open=sum(len(c.streams) for c in conns),
        )

    def endpoint_stats(self) -> EndpointStats:
        """The endpoint now; see ``EndpointStats``."""
        counters = self.stats
        roles = {"node out": 0, "node in": 0, "client in": 0, "other": 0}
        for conn in self._conns:
            record = conn.record
            if record is None or record.kind is None:
                roles["other"] += 1
            elif record.kind is PeerKind.CLIENT:
                roles["client in"] += 1
            else:
                roles["node out" if conn.outgoing else "node in"] += 1
        peers = {"node": 0, "client": 0}
        for record in self._records:
            if record.connected:
                peers["client" if record.kind is PeerKind.CLIENT else "node"] += 1
        adm = self._admission.counters

        def total(prefix: str, where: dict[str, int]) -> int:
            return sum(v for k, v in where.items() if k.startswith(prefix))

        admissions = {
            "accepted": adm.get("accept", 0),
            "retried": adm.get("retry", 0),
            "refused": adm.get("refused", 0),
            "ignored": total("ignored: ", adm),
            "invalid token": total("invalid token: ", adm),
        }
        punches = {
            "attempts": counters.get("punches: attempts", 0),
            "succeeded": counters.get("punches: succeeded", 0),
            "failed": total("punches: failed", counters),
        }
        punches.update(
            {
                k.removeprefix("punches: "): v
                for k, v in counters.items()
                if k.startswith("punches: failed: ")
            }
        )
        streams = [st for c in self._conns for st in c.streams.values()]
        return EndpointStats(
            connections=len(self._conns),
            connections_by_role=roles,
            peers=peers,
            admissions=admissions,
            punches=punches,
            relay_sessions=len(self._relay_sessions),
            relay_bytes=counters.get("relay: bytes forwarded", 0),
            relay_paths=len(self._relay_paths),
            event_queue_depth=self.events.messages,
            event_queue_high_water=self.events.high_water,
            event_capacity=self.events.capacity,
            datagrams_dropped={
                "queue full": self.datagrams.dropped,
                "peer not connected": counters.get("datagrams dropped: peer not connected", 0),
            },
            streams_open=len(streams),
            stream_bytes_unread=sum(len(st.recv) for st in streams),
            totals=self.totals(),
            counters=counters,
        )

    def totals(self) -> EndpointTotals:
        """The endpoint's lifetime counts now; see ``EndpointTotals``."""
        live_lost = sum(c.quic.packets_lost for c in self._conns)
        snap = dataclasses.replace(self._totals)
        snap.packets_lost += live_lost
        return EndpointTotals(**vars(snap))

    @property
    def stats(self) -> dict[str, int]:
        """Every named counter (``EndpointStats.counters``)."""
        out = dict(self._counters)
        out.update({f"admission: {k}": v for k, v in self._admission.counters.items()})
        out["connections"] = len(self._conns)
        out["relay: sessions we are a side of"] = len(self._relay_paths)
        out["unproven peers: bytes held"] = self._unproven.used
        out["unproven peers: most bytes held"] = self._unproven.peak
        out["datagrams dropped: queue full"] = self.datagrams.dropped
        streams = [s for c in self._conns for s in c.streams.values()]
        out["streams open"] = len(streams)
        out["streams: bytes received, unread"] = sum(len(s.recv) for s in streams)
        if self.relay_policy is not None:
            out["relay: most bytes queued for one side"] = self._relay_backlog_peak
        return out

    # ------------------------------------------------------------ link events
    def _on_link_event(self, conn: Conn, ev: LinkEvent) -> None:
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
            cause = (
                Cause.MESSAGE_TOO_LARGE if ev.reason is RejectReason.TOO_LARGE else Cause.REFUSED
            )
            refused = Reason(cause, f"refused by the peer: {ev.reason.name.lower()}")
            req = conn.requests.get(ev.msg_id)
            if req is not None:
                self._answer(conn, req, None, REQUEST_REFUSALS.get(ev.reason, refused))
                return
            s = self._settled(conn, ev.msg_id)
            if s is not None:
                self._resolve(s, False, refused)
        elif isinstance(ev, LinkDatagram):
            self._on_datagram(conn, ev.data)
        elif isinstance(ev, LinkUp):
            self._on_up(conn)
        elif isinstance(ev, LinkDown):
            self._on_down(conn, describe_close(ev))

    def _on_frame(self, conn: Conn, f: Frame) -> None:
        kind = f.kind
        if kind == FrameKind.ECHO_REQUEST:
            conn.link.send_frame(
                frame(FrameKind.ECHO_RESPONSE, encode_address(conn.link.peer_addr), f.msg_id)
            )
            self._dirty.add(conn)
        elif kind in _ANSWERS and f.msg_id:
            # The answer to one of our requests (its asker decodes it).
            req = conn.requests.get(f.msg_id)
            if req is not None:
                self._answer(conn, req, f)
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
