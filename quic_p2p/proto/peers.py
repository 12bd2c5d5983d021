"""Peer records: dialling a peer, the role handshakes (``roles`` tables
applied), a connection coming up or going down, a peer completing or failing."""

from __future__ import annotations

import datetime

from ..accel.types import Frame, FrameKind
from ..errors import ConnectionFailedError
from ..events import BootstrappedTo, ConnectedTo, ConnectionFailure
from ..peer import Address, NodeInfo, PeerKind
from ..reasons import Cause, Reason
from . import certs, tls
from .base import log
from .config import OurType
from .limits import HANDSHAKE_TIMEOUT, REVERSE_CONNECT_TIMEOUT
from .pins import claim_matches, pin_problem
from .roles import Action, FromPeer, ToPeer, on_incoming_handshake, on_outgoing_up
from .sends import Sends
from .state import (
    BootstrapWon,
    CacheChanged,
    Conn,
    ConnectResult,
    ProbeResult,
    Record,
    RelayPath,
    Waiter,
)
from .wire import ErrorCode, frame


class Peers(Sends):
    def _wall_now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._wall_clock(), datetime.UTC)

    def _is_us(self, node: NodeInfo) -> bool:
        """``node`` names this endpoint: our certificate, or the address we
        are bound to (other addresses of ours are caught at TLS: the peer
        would present our certificate)."""
        return (bool(node.peer_cert_der) and node.peer_cert_der == self._cert.cert_der) or (
            self._local_addr is not None and node.peer_addr == self._local_addr
        )

    def _connect(
        self,
        node: NodeInfo,
        *,
        we_contacted: bool,
        timeout: float = HANDSHAKE_TIMEOUT,
        relay: RelayPath | None = None,
    ) -> Record:
        record = self._records.get(node.peer_addr)
        if record is None:
            record = self._records[node.peer_addr] = Record(node.peer_addr)
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

    def _connect_waiting(
        self, node: NodeInfo, waiter: Waiter, timeout: float, relay: RelayPath | None = None
    ) -> int:
        """Connects to ``node`` (we asked for it); ``waiter`` gets the outcome."""
        record = self._connect(node, we_contacted=True, timeout=timeout, relay=relay)
        if record.dead:
            self._emit(ConnectResult(waiter.id, node.peer_addr, None, record.failure))
        else:
            record.waiters.append(waiter)
        return waiter.id

    # ------------------------------------------------------------ up and down
    def _on_up(self, conn: Conn) -> None:
        self._check_up(conn)
        if conn.link.down is not None:
            return
        if conn.probe:
            self._probe_done(conn, True)
        else:
            self._release_requests(conn)

    def _check_up(self, conn: Conn) -> None:
        if tls.check_pinned_peer(conn.quic, self._cert.cert_der) is None:
            # The peer holds our certificate and its key: it is this very
            # endpoint, reached through another of our addresses.
            self._bump("refused: a connection to ourselves")
            reason = Reason(Cause.SELF, "that is us (the peer presents our own certificate)")
            self._close_conn(conn, ErrorCode.REFUSED, reason)
            self._on_down(conn, reason)
            return
        if not conn.outgoing:
            # Before anything the peer sent is read (the link delivers nothing
            # once closed): a CA mode admits only certificates of the CA, and
            # no mode admits one outside its validity period.
            problem = tls.check_client_certificate(conn.quic, self.config, now=self._wall_now())
            if problem is None and conn.came_via is not None:
                problem = tls.check_pinned_peer(conn.quic, conn.came_via.expect)
            if problem is not None:
                self._bump("refused: peer certificate")
                log.warning(
                    "refusing %s:%d: %s", conn.link.peer_addr[0], conn.link.peer_addr[1], problem
                )
                self._close_conn(conn, ErrorCode.CERTIFICATE_REFUSED, problem)
                self._on_down(conn, Reason(Cause.CERTIFICATE, problem))
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
        code = ErrorCode.CERTIFICATE_REFUSED
        problem = tls.check_server_certificate(conn.quic, now=self._wall_now())
        if problem is None and expected:
            code, problem = (
                ErrorCode.CERTIFICATE_MISMATCH,
                tls.check_pinned_peer(conn.quic, expected),
            )
        if problem is not None:
            self._close_conn(conn, code, problem)
            self._on_down(conn, Reason(Cause.CERTIFICATE, problem))
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
        elif record.reverse_timer is None:
            # (A Client waits the same time for the Node's acceptance.)
            record.reverse_timer = self._call_later(
                REVERSE_CONNECT_TIMEOUT, self._reverse_timeout, record
            )

    def _on_down(self, conn: Conn, reason: Reason) -> None:
        """Once per connection: its sends come back unsent, its requests
        unanswered, its peer record loses that side."""
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        for s in [*conn.outstanding.values(), *conn.waiting]:
            self._resolve(s, False, reason.wrap("connection lost: "))
        conn.outstanding.clear()
        conn.waiting.clear()
        conn.unacked_bytes = 0
        self._requests_lost(conn, reason)
        if conn.probe:
            self._probe_done(conn, False)
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

    def _probe_done(self, conn: Conn, reached: bool) -> None:
        """A probe connection ended (TLS completed, or not): it is closed, and
        a probe of a relayed peer's direct path moves the peer to it."""
        probe, conn.probe = conn.probe, 0
        record, conn.probe_for = conn.probe_for, None
        self._close_conn(conn, ErrorCode.NO_ERROR, "probe done")
        if probe in self._punch_probes:
            self._punch_probes.discard(probe)
            self._punches_pending -= 1
        if record is not None:
            if reached and not record.dead:
                self._go_direct(record)
            self._bump("path probes succeeded" if reached else "path probes failed")
        self._emit(ProbeResult(probe, reached))

    # ------------------------------------------------------------ role handshakes
    def _on_handshake(self, conn: Conn, f: Frame) -> None:
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
                Reason(
                    Cause.REPLACED,
                    "another peer proved that address directly (the relayed peer only claimed it)",
                ),
                ErrorCode.DISCONNECTED,
            )
            record = None
        fresh = record is None
        if record is None:
            record = self._records[addr] = Record(addr)
            path = conn.came_via
            if path is not None and path.record is None and not path.closed:
                # Reached through a relay: so is our reverse connection.
                record.relay = path
                path.record = record
        action, code = on_incoming_handshake(is_node, record.to, record.frm)
        if action is not Action.REJECT and is_node and not claim_matches(record, f.body):
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

    # ------------------------------------------------------------ complete / fail
    def _complete(self, record: Record) -> None:
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
        if group is not None and pin_problem(record, record.bootstrap_pin) is not None:
            group = None  # not the contact it pinned: its waiter fails below
        if group is not None and group.won:
            # Another contact won this bootstrap first.
            done = Reason(Cause.REPLACED, "bootstrap already completed")
            self._fail(record, done, ErrorCode.NO_ERROR, report=False)
            return
        log.info("connected to %s %s:%d", peer.kind.value, *record.addr)
        if group is not None and peer.node_info is not None:
            self.events.push(BootstrappedTo(peer.node_info))
            group.won = True
            self._emit(BootstrapWon(group.id, peer.node_info))
        else:
            relay = None if record.relay is None else record.relay.relay.addr
            self.events.push(ConnectedTo(peer, relay))
        if (
            peer.node_info is not None
            and record.we_contacted
            and self.cache.add(peer.node_info, self._wall_clock())
        ):
            self._emit(CacheChanged())
        for waiter in record.waiters:
            # A pin must hold for the peer we actually reached, whoever
            # started the connection.
            problem = pin_problem(record, waiter.pin)
            if problem is None:
                self._emit(ConnectResult(waiter.id, record.addr, peer))
            else:
                self._emit(ConnectResult(waiter.id, record.addr, None, problem))
        record.waiters.clear()
        sends, record.pending_sends = record.pending_sends, []
        for s in sends:
            problem = pin_problem(record, s.pin)
            if problem is None:
                self._send_on(record, s)
            else:
                self._resolve(s, False, problem)
        reads, record.pending_reads = record.pending_reads, []
        self._unproven.give(record.pending_bytes)
        record.pending_bytes = 0
        for conn, f in reads:
            self._deliver(record, conn, f)

    def _fail(
        self, record: Record, reason: Reason, code: ErrorCode, *, report: bool = True
    ) -> None:
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
        self._peer_gone(record, reason)
        for s in record.pending_sends:
            self._resolve(s, False, reason)
        record.pending_sends.clear()
        record.pending_reads.clear()  # never acknowledged: their senders see unsent
        self._unproven.give(record.pending_bytes)
        record.pending_bytes = 0
        for waiter in record.waiters:
            self._emit(ConnectResult(waiter.id, record.addr, None, reason))
        # Report a peer the user knew (connected) or asked for (we dialled it);
        # a half-open incoming Node that could not be reached back was never
        # visible to the user and is only logged.
        visible = record.connected or record.we_contacted or bool(record.waiters)
        record.waiters.clear()
        if report and visible and not self._closing:
            self._report_failure(record.addr, reason)
        else:
            log.info("dropped peer %s:%d: %s", record.addr[0], record.addr[1], reason)

    def _report_failure(self, addr: Address, reason: Reason) -> None:
        log.info("connection to %s:%d failed: %s", addr[0], addr[1], reason)
        self.events.push(ConnectionFailure(addr, reason))

    def _reverse_timeout(self, record: Record) -> None:
        record.reverse_timer = None
        if not record.connected and not record.dead:
            if self.config.our_type is OurType.CLIENT:
                reason = Reason(Cause.REFUSED, "the node did not accept us as a Client in time")
                code = ErrorCode.REFUSED
            else:
                reason = Reason(
                    Cause.NOT_REACHABLE,
                    "the peer did not connect back to us (are we reachable as a Node?)",
                )
                code = ErrorCode.REVERSE_CONNECT_FAILED
            self._fail(record, reason, code)
