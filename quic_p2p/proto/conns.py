"""Connections: the CID table, admitting and dialling, aioquic's adapter loop
(feed, drain events, transmit, re-arm the timer), closing."""

from __future__ import annotations

import ipaddress

from aioquic.quic import events as qe
from aioquic.quic.packet import QuicErrorCode

from ..accel import classify_datagram
from ..accel.types import DatagramError, FrameKind
from ..errors import ConnectionFailedError
from ..peer import Address, NodeInfo
from ..reasons import Cause, Reason
from . import certs, tls
from .admission import Accept, Ignore, Reply
from .base import EngineBase, log
from .flow import PeerConnection
from .limits import (
    CID_LENGTH,
    HANDSHAKE_TIMEOUT,
    MAX_JOINING,
    MAX_JOINING_PER_IP,
    RECEIVE_BUDGET,
    RECENTLY_CLOSED,
)
from .link import Link, LinkDown
from .qlog import ConnectionQlog, with_logger
from .state import Conn, ConnectionInfo, Record, RelayPath
from .wire import ErrorCode, RejectReason, encode_reject, frame

#: aioquic's events about one stream (routed by the stream's direction).
_STREAM_EVENTS = frozenset({qe.StreamDataReceived, qe.StreamReset, qe.StopSendingReceived})


class Conns(EngineBase):
    def _new_conn(self, quic: PeerConnection, link: Link, *, outgoing: bool) -> Conn:
        conn = Conn(self._next_id(), quic, link, outgoing)
        self._totals.connections_opened += 1
        self._conn_ids[conn.id] = conn
        return conn

    def _dial(
        self,
        node: NodeInfo,
        *,
        echo_only: bool,
        timeout: float = HANDSHAKE_TIMEOUT,
        relay: RelayPath | None = None,
    ) -> Conn:
        """Starts an outgoing connection (through ``relay`` if given);
        ``ConnectionFailedError`` when it cannot even start (unusable
        certificate in the NodeInfo, limit)."""
        qlog = ConnectionQlog() if self._qlog else None
        try:
            # Our certificate goes along: our Nodes ask every client for one.
            cfg = tls.client_configuration(
                self.config,
                node,
                our_cert=self._cert,
                connection_id_length=CID_LENGTH,
                quic_logger=qlog,
            )
        except certs.CertificateError as exc:
            raise ConnectionFailedError(
                node.peer_addr, Reason(Cause.CERTIFICATE, f"bad certificate in NodeInfo: {exc}")
            ) from None
        if len(self._conns) >= self.max_connections:
            raise ConnectionFailedError(
                node.peer_addr, Reason(Cause.LIMIT, "connection limit reached")
            )
        if ":" in node.peer_addr[0] and not self._v6_socket:
            raise ConnectionFailedError(
                node.peer_addr,
                Reason(
                    Cause.ADDRESS_FAMILY,
                    "an IPv6 address, but we are bound to IPv4 (bind '::' for both)",
                ),
            )
        if ":" not in node.peer_addr[0] and not self._ipv4_ok:
            raise ConnectionFailedError(
                node.peer_addr,
                Reason(
                    Cause.ADDRESS_FAMILY,
                    "an IPv4 address, but we are bound to IPv6 only (bind '::' for both)",
                ),
            )
        quic = tls.ClientConnection(configuration=cfg)
        link = Link(
            quic,
            initiator=True,
            peer_addr=node.peer_addr,
            max_msg_size=self.config.max_msg_size_allowed,
            receive_budget=RECEIVE_BUDGET,
            count=self._bump,
        )
        conn = self._new_conn(quic, link, outgoing=True)
        conn.qlog = qlog
        conn.target = node
        conn.echo_only = echo_only
        conn.timeout = timeout
        conn.deadline = self._call_later(timeout, self._handshake_timeout, conn)
        self._register(conn, quic.host_cid)
        self._route(conn, relay)
        quic.connect(node.peer_addr, now=self._now())
        self._dirty.add(conn)
        return conn

    def _receive(self, data: bytes, addr: Address, relay: RelayPath | None, socket: int) -> None:
        """One QUIC datagram from ``addr``, off a socket or out of a relay
        session. A session carries one incoming connection (no Retry: the
        session is the path, and only its other side can use it); that peer
        proves the session's certificate at TLS (``_on_up``). A socket the
        driver opened for one connection (a reachability check) takes only
        that connection's packets."""
        try:
            info = classify_datagram(data, CID_LENGTH)
        except (DatagramError, ValueError) as exc:
            self._bump(f"dropped: {exc}")
            return
        conn = self._cids.get(info.dcid)
        fresh = False
        if socket:
            if conn is None or conn.socket != socket:
                self._bump("dropped: not for the check's connection")
                return
        elif conn is None:
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
        conn.heard_at = self._now_value
        conn.packets_in += 1
        conn.bytes_in += len(data)
        try:
            conn.quic.receive_datagram(data, addr, now=self._now_value)
        except Exception:  # aioquic closes on bad packets; this is a safety net
            log.exception("aioquic failed on a datagram from %s", addr)
            self._bump("dropped: aioquic error")
        if relay is None and conn.relay is None and not socket and addr != conn.link.peer_addr:
            # Before its events: what arrived on the new path is the peer's
            # at its new address.
            self._check_path(conn)
        if fresh and not self._answers(conn):
            # An Initial that does not decrypt elicits nothing: keep no state
            # for it (with retry off, junk would otherwise hold a slot), nor
            # a qlog file (junk would fill the disk).
            conn.qlog = None
            self._forget(conn)
            self._bump("dropped: undecryptable Initial")
            return
        self._dirty.add(conn)
        self._process(conn)

    def _answers(self, conn: Conn) -> bool:
        """Sends what a new connection has to say; False when it has nothing."""
        datagrams = conn.quic.datagrams_to_send(now=self._now())
        conn.packets_out += len(datagrams)
        conn.bytes_out += sum(len(d) for d, _ in datagrams)
        self._send_datagrams(conn.relay, datagrams, conn.socket)
        return bool(datagrams)

    def _route(self, conn: Conn, relay: RelayPath | None) -> None:
        conn.relay = relay
        if relay is not None:
            relay.conns.add(conn)

    def _send_datagrams(
        self, relay: RelayPath | None, datagrams: list[tuple[bytes, Address]], socket: int = 0
    ) -> None:
        """Onto a socket (queued for the driver), or into the relay session
        (dropped once it closed: its connections are being torn down)."""
        if relay is None:
            totals = self._totals
            totals.packets_sent += len(datagrams)
            totals.bytes_sent += sum(len(d) for d, _ in datagrams)
            self._transmits.extend((data, addr, socket) for data, addr in datagrams)
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
        record = self._records.at(addr)
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

    def _refusal(self, addr: Address) -> str | None:
        """Why a new connection from ``addr`` would be refused, or None."""
        if self._server_cfg is None:
            return "we are a Client"
        if len(self._conns) - self._punch_conns >= self.max_connections:
            return "connection limit"
        if self._per_ip.get(ip_key(addr), 0) >= self.max_connections_per_ip:
            return "per-IP connection limit"
        if self._joining >= MAX_JOINING:
            return "busy: too many joining at once"
        if (
            self._joining >= MAX_JOINING // 2
            and self._joining_per_ip.get(ip_key(addr), 0) >= MAX_JOINING_PER_IP
        ):
            return "busy: too many joining from one address"
        return None

    def _accept(self, decision: Accept, dcid: bytes, addr: Address) -> Conn:
        assert self._server_cfg is not None
        cfg, qlog = self._server_cfg, None
        if self._qlog:
            cfg, qlog = with_logger(cfg)
        # Asks for the client's certificate from its very first datagram on.
        quic = tls.ServerConnection(
            configuration=cfg,
            original_destination_connection_id=decision.original_destination_cid,
            retry_source_connection_id=decision.retry_source_cid,
        )
        link = Link(
            quic,
            initiator=False,
            peer_addr=addr,
            max_msg_size=self.config.max_msg_size_allowed,
            receive_budget=RECEIVE_BUDGET,
            count=self._bump,
        )
        conn = self._new_conn(quic, link, outgoing=False)
        conn.qlog = qlog
        conn.link.budget = self._unproven  # until the peer is proven
        conn.ip_key = conn.joining = ip_key(addr)
        self._joining += 1
        self._joining_per_ip[conn.joining] = self._joining_per_ip.get(conn.joining, 0) + 1
        self._per_ip[conn.ip_key] = self._per_ip.get(conn.ip_key, 0) + 1
        self._register(conn, dcid)
        self._register(conn, quic.host_cid)
        conn.deadline = self._call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout, conn)
        return conn

    def _register(self, conn: Conn, cid: bytes) -> None:
        self._conns.add(conn)
        conn.cids.add(cid)
        self._cids[cid] = conn

    def _forget(self, conn: Conn) -> None:
        self._done_joining(conn)
        for cid in conn.cids:
            if self._cids.get(cid) is conn:
                del self._cids[cid]
        conn.cids.clear()
        if conn in self._conns:
            conn.link.release_all()
            self._totals.packets_lost += conn.quic.packets_lost
            self._totals.connections_closed += 1
        if conn.streams:
            self._streams_lost(conn, Reason(Cause.CONNECTION_LOST, "connection closed"))
        if self._conn_ids.pop(conn.id, None) is not None:
            self._recently_closed[conn.id] = connection_info(conn)
            if len(self._recently_closed) > RECENTLY_CLOSED:
                del self._recently_closed[next(iter(self._recently_closed))]
        self._conns.discard(conn)
        self._dirty.discard(conn)
        if conn.punch:
            conn.punch = False
            self._punch_conns -= 1
        if conn.ip_key is not None:
            self._uncount_ip(conn)
            conn.ip_key = None
        if conn.relay is not None:
            conn.relay.conns.discard(conn)
        for timer in (conn.timer, conn.deadline):
            if timer is not None:
                timer.cancel()
        conn.timer = conn.deadline = None
        conn.timer_at = None
        if conn.qlog is not None:
            trace = conn.qlog.finish()
            conn.qlog = None
            if trace is not None:
                self._emit(trace)

    def _done_joining(self, conn: Conn) -> None:
        """``conn`` no longer counts as joining (its peer is connected, or
        it is gone)."""
        key, conn.joining = conn.joining, None
        if key is not None:
            self._joining -= 1
            left = self._joining_per_ip.get(key, 0) - 1
            if left > 0:
                self._joining_per_ip[key] = left
            else:
                self._joining_per_ip.pop(key, None)

    def _uncount_ip(self, conn: Conn) -> None:
        assert conn.ip_key is not None
        left = self._per_ip.get(conn.ip_key, 1) - 1
        if left > 0:
            self._per_ip[conn.ip_key] = left
        else:
            self._per_ip.pop(conn.ip_key, None)

    # ------------------------------------------------------------ the adapter loop
    def _process(self, conn: Conn) -> None:
        """Drains aioquic's events for one connection."""
        while (event := conn.quic.next_event()) is not None:
            if type(event) in _STREAM_EVENTS and not event.stream_id & 2:  # type: ignore[attr-defined]
                # A bidirectional stream: an application protocol's.
                self._on_stream_event(conn, event)
                continue
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

    def _flush(self) -> None:
        """Queues whatever any touched connection has to send, and re-arms
        its timer."""
        now = self._now()
        # (A relayed connection's packets mark its relay connection dirty,
        # which this loop then flushes too.)
        while self._dirty:
            conn = self._dirty.pop()
            conn.link.flush()
            datagrams = conn.quic.datagrams_to_send(now=now)
            if datagrams:
                conn.packets_out += len(datagrams)
                conn.bytes_out += sum(len(d) for d, _ in datagrams)
                self._send_datagrams(conn.relay, datagrams, conn.socket)
            self._arm_timer(conn)

    def _check_path(self, conn: Conn) -> None:
        """Whether aioquic moved the connection to another peer address:
        after a datagram from a new one (a NAT rebinding, a migration; RFC
        9000 §9), and after a timer (aioquic validates the new path and goes
        back if that fails)."""
        addr = conn.quic.get_peer_address()
        if addr is None or addr == conn.link.peer_addr:
            return
        old = conn.link.peer_addr
        conn.link.peer_addr = addr = (addr[0], addr[1])
        self._bump("connections moved to a new peer address")
        if conn.ip_key is not None and conn.ip_key != ip_key(addr):
            self._uncount_ip(conn)
            conn.ip_key = ip_key(addr)
            self._per_ip[conn.ip_key] = self._per_ip.get(conn.ip_key, 0) + 1
        self._on_path_change(conn, old)

    def _arm_timer(self, conn: Conn) -> None:
        at = conn.quic.get_timer()
        if at == conn.timer_at:
            return
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conn.timer_at = at
        if at is not None and not conn.finished and conn in self._conns:
            conn.timer = self._call_at(at, self._on_timer, conn)

    def _on_timer(self, conn: Conn) -> None:
        armed = conn.timer_at
        conn.timer = None
        conn.timer_at = None
        # aioquic's own driver clamps to the time it armed, or a timer run a
        # hair early would do nothing and be re-armed.
        now = self._now()
        conn.quic.handle_timer(now=now if armed is None else max(armed, now))
        if conn.relay is None and not conn.socket:
            # A failed path validation sends aioquic back to the old address.
            self._check_path(conn)
        self._dirty.add(conn)
        self._process(conn)

    # ------------------------------------------------------------ closing
    def _send_conn(self, record: Record) -> Conn | None:
        """The connection we send to a connected peer on."""
        conn = record.out if record.out is not None else record.inn
        return conn if conn is not None and conn.link.down is None else None

    def _close_conn(self, conn: Conn, code: ErrorCode, reason: str) -> None:
        if conn.link.down is None:
            conn.link.close(code, reason)
        self._dirty.add(conn)

    def _violation(self, conn: Conn, code: ErrorCode, reason: str) -> None:
        log.warning(
            "closing connection with %s:%d: %s",
            conn.link.peer_addr[0],
            conn.link.peer_addr[1],
            reason,
        )
        self._close_conn(conn, code, reason)
        self._on_down(conn, Reason(Cause.PROTOCOL_ERROR, f"protocol error: {reason}"))

    def _refuse(self, conn: Conn, msg_id: int, reason: RejectReason) -> None:
        conn.link.send_frame(encode_reject(msg_id, reason))
        self._dirty.add(conn)

    def _handshake_timeout(self, conn: Conn) -> None:
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
        self._on_down(conn, Reason(Cause.HANDSHAKE_TIMEOUT, reason))


def connection_info(conn: Conn) -> ConnectionInfo:
    down = conn.link.down
    return ConnectionInfo(
        conn.id,
        conn.link.peer_addr,
        conn.peer_id,
        conn.outgoing,
        conn.link.up,
        down is not None,
        "" if down is None else describe_close(down),
        None if down is None else down.error_code,
        down is not None and down.by_peer,
        conn.link.rtt,
        conn.relay is not None,
        tuple(conn.cids),
    )


def ip_key(addr: Address) -> bytes:
    """What the per-IP limit counts by: the IPv4 address, or the IPv6 /64
    (one host is commonly given a whole /64)."""
    packed = ipaddress.ip_address(addr[0]).packed
    return packed if len(packed) == 4 else packed[:8]


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


#: What each of our close codes means, as a cause.
_CLOSE_CAUSES = {
    ErrorCode.NO_ERROR: Cause.CONNECTION_LOST,
    ErrorCode.SHUTDOWN: Cause.CONNECTION_LOST,
    ErrorCode.DISCONNECTED: Cause.DISCONNECTED,
    ErrorCode.REFUSED: Cause.REFUSED,
    ErrorCode.HANDSHAKE_TIMEOUT: Cause.HANDSHAKE_TIMEOUT,
    ErrorCode.REVERSE_CONNECT_FAILED: Cause.NOT_REACHABLE,
    ErrorCode.CERTIFICATE_MISMATCH: Cause.CERTIFICATE,
    ErrorCode.CERTIFICATE_REFUSED: Cause.CERTIFICATE,
    ErrorCode.MESSAGE_TOO_LARGE: Cause.MESSAGE_TOO_LARGE,
}


def describe_close(ev: LinkDown) -> Reason:
    """Why a connection closed: our application codes by name, QUIC
    transport codes (and TLS alerts) by theirs."""
    detail = f": {ev.reason}" if ev.reason else ""
    if ev.application:
        try:
            code: ErrorCode | None = ErrorCode(ev.error_code)
        except ValueError:
            code = None
        cause = Cause.OTHER if code is None else _CLOSE_CAUSES.get(code, Cause.PROTOCOL_ERROR)
        if code is ErrorCode.REVERSE_CONNECT_FAILED:
            text = f"the peer could not connect back to us{_reverse_cause(ev.reason)}"
            return Reason(cause, text)
        if code is ErrorCode.REFUSED and ev.by_peer:
            return Reason(cause, f"the peer refused us{detail}")
        if code is ErrorCode.CERTIFICATE_REFUSED and ev.by_peer:
            return Reason(cause, f"the peer refused our certificate{detail}")
        name = code.name.lower().replace("_", " ") if code else f"code {ev.error_code:#x}"
        text = f"{'peer' if ev.by_peer else 'we'} closed the connection ({name}){detail}"
        return Reason(cause, text)
    if ev.reason == "Idle timeout":  # (aioquic's words: it closes with NO_ERROR)
        return Reason(Cause.IDLE_TIMEOUT, "idle timeout: no packets from the peer in time")
    if ev.error_code == QuicErrorCode.CONNECTION_REFUSED:
        return Reason(
            Cause.REFUSED,
            "the peer refused the connection (its connection limit, or it is a Client)",
        )
    if ev.error_code == QuicErrorCode.INVALID_TOKEN:
        return Reason(Cause.REFUSED, "the peer rejected our retry token")
    if 0x100 <= ev.error_code <= 0x1FF:
        alert = ev.error_code - 0x100
        return Reason(
            Cause.CERTIFICATE,
            f"TLS handshake failed (alert {alert}, code {ev.error_code:#x}){detail}",
        )
    try:
        name = QuicErrorCode(ev.error_code).name
    except ValueError:
        name = f"{ev.error_code:#x}"
    return Reason(Cause.CONNECTION_LOST, f"connection closed by QUIC ({name}){detail}")
