"""Peer records: dialling a peer, the role handshakes (``roles`` tables
applied), a connection coming up or going down, a peer completing or failing."""

from __future__ import annotations

import datetime

from ..accel.types import Frame, FrameKind
from ..errors import ConnectionFailedError
from ..events import (
    BootstrappedTo,
    ConnectedTo,
    ConnectionFailure,
    PathChanged,
    PeerAddressChanged,
)
from ..peer import Address, InvalidContactError, NodeInfo, PeerId, PeerKind
from ..reasons import Cause, Reason
from ..stats import PathKind, PeerPath
from . import tls
from .base import log
from .config import OurType
from .limits import HANDSHAKE_TIMEOUT, REVERSE_CONNECT_TIMEOUT
from .pins import pin_problem
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
        """``node`` names this endpoint: our id, or the address we are bound
        to (other addresses of ours are caught at TLS: the peer would prove
        our key)."""
        return node.peer_id == self.peer_id or (
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
        record = self._records.find(node)
        if record is None:
            record = self._records.add(Record(node.peer_addr, node.peer_id))
            if relay is not None:
                record.relay = relay
                relay.record = record
        record.we_contacted |= we_contacted
        if record.to is ToPeer.NONE:
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
        identity = tls.peer_identity(conn.quic)
        if isinstance(identity, tuple):
            conn.peer_id, conn.peer_cert = identity
        if conn.peer_id == self.peer_id:
            # The peer holds our key: it is this very endpoint, reached
            # through another of our addresses.
            self._bump("refused: a connection to ourselves")
            reason = Reason(Cause.SELF, "that is us (the peer proves our own key)")
            self._close_conn(conn, ErrorCode.REFUSED, reason)
            self._on_down(conn, reason)
            return
        if not conn.outgoing:
            # Before anything the peer sent is read (the link delivers nothing
            # once closed): every peer proves a key; a CA mode admits only
            # certificates of the CA, and no mode one outside its validity.
            problem = tls.check_client_certificate(conn.quic, self.config, now=self._wall_now())
            if (
                problem is None
                and conn.came_via is not None
                and conn.peer_id != conn.came_via.expect
            ):
                problem = "not the key the relay announced for this peer"
            if problem is None and conn.peer_id is None:
                problem = str(identity)
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
        # The key to insist on: the one dialled, else the one the peer
        # already proved on its own connection to us (simultaneous connect).
        expected = target.peer_id if target is not None else None
        if expected is None and conn.record is not None:
            expected = conn.record.peer_id
        # Dates always: in UNVERIFIED mode aioquic checks none (CERT_NONE).
        code = ErrorCode.CERTIFICATE_REFUSED
        problem = tls.check_server_certificate(conn.quic, now=self._wall_now())
        if problem is None and conn.peer_id is None:
            problem = str(identity)
        if problem is None and expected is not None and conn.peer_id != expected:
            assert conn.peer_id is not None
            code, problem = (
                ErrorCode.CERTIFICATE_MISMATCH,
                f"the peer holds another key than expected (it proved id "
                f"{conn.peer_id.short()}..., expected {expected.short()}...)",
            )
        if problem is None and target is not None and target.peer_cert_der:
            code, problem = (
                ErrorCode.CERTIFICATE_MISMATCH,
                tls.check_pinned_peer(conn.quic, target.peer_cert_der),
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
        assert conn.peer_id is not None
        if record.peer_id is None:
            known = self._records.get(conn.peer_id)
            if known is not None and known is not record:
                self._merge(record, known)
                return
            self._records.set_id(record, conn.peer_id)
        record.cert = conn.peer_cert
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
        if conn.streams:
            self._streams_lost(conn, reason)
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
        other = self._send_conn(record)
        if (
            record.connected
            and record.kind is PeerKind.NODE
            and reason.cause is Cause.IDLE_TIMEOUT
            and other is not None
            and self._now() - other.heard_at < self._idle_window()
        ):
            # One of a Node's two connections went silent while the other
            # still hears from the peer: a NAT rebinding on its side moved its
            # packets to a new address, which aioquic follows as the server
            # but not as the client (RFC 9000 §9). The peer is still reached
            # on the other connection. (A dead peer is silent on both.)
            self._bump("peers kept on their other connection")
            log.info("%s:%d: one connection timed out, keeping the other", *record.addr)
            return
        self._fail(record, reason, ErrorCode.DISCONNECTED)

    def _on_path_change(self, conn: Conn, old: Address) -> None:
        record = conn.record
        new = conn.link.peer_addr
        if record is None or record.dead or record.addr == new:
            return
        was = record.addr
        self._records.move(record, new)
        log.info("peer %s moved from %s:%d to %s:%d", record.peer_id, *was, *new)
        out = record.out
        if (
            record.connected
            and conn is record.inn
            and out is not None
            and out.relay is None
            and out.link.peer_addr == old
        ):
            # Our connection to the Node still goes to where it was, and as
            # its client aioquic drops what the Node sends from the new
            # address: it is stranded. The peer goes on over its own.
            lost = Reason(Cause.CONNECTION_LOST, "the peer moved to another address")
            self._bump("connections dropped: stranded by a peer's move")
            self._drop_dial(record, lost)
        if record.connected and record.peer_id is not None:
            self.events.push(PeerAddressChanged(record.peer_id, was, new))
            self.events.push(
                PathChanged(
                    record.peer_id, PeerPath(PathKind.DIRECT, was), PeerPath(PathKind.DIRECT, new)
                )
            )

    def _idle_window(self) -> float:
        """How recently a live connection has heard from its peer: within
        half the idle timeout (keep-alives come more often)."""
        return tls.idle_timeout_seconds(self.config.idle_timeout_msec) / 2

    def _drop_dial(self, record: Record, reason: Reason) -> None:
        """Abandons our outgoing connection to the peer, keeping its record."""
        out = record.out
        assert out is not None
        record.out, record.to, out.record = None, ToPeer.NONE, None
        self._close_conn(out, ErrorCode.NO_ERROR, reason)
        self._on_down(out, reason)

    def _merge(self, dup: Record, known: Record) -> None:
        """Our dial reached a peer we already have a record for (at another
        address): whoever waited on the dial is served by that record."""
        self._bump("dials that reached a known peer")
        known.we_contacted |= dup.we_contacted
        waiters, dup.waiters = dup.waiters, []
        sends, dup.pending_sends = dup.pending_sends, []
        group, dup.bootstrap = dup.bootstrap, None
        pin = dup.bootstrap_pin
        done = Reason(Cause.REPLACED, "this dial reached a peer we already know")
        self._fail(dup, done, ErrorCode.NO_ERROR, report=False)
        if group is not None and known.bootstrap is None and not known.connected:
            known.bootstrap, known.bootstrap_pin = group, pin
        known.waiters += waiters
        known.pending_sends += sends
        if known.connected:
            if group is not None and not group.won and pin_problem(known, pin) is None:
                info = known.node_info()
                self.events.push(BootstrappedTo(info))
                group.won = True
                self._emit(BootstrapWon(group.id, info))
            self._serve_waiting(known)

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
        peer_id = conn.peer_id
        if peer_id is None:  # (the TLS checks refused such a peer already)
            self._violation(conn, ErrorCode.BAD_HANDSHAKE, "no proven key")
            return
        if is_node:
            try:
                claimed = PeerId.from_certificate(f.body)
            except InvalidContactError:
                self._violation(conn, ErrorCode.BAD_HANDSHAKE, "unparsable certificate")
                return
            if claimed != peer_id:
                self._violation(
                    conn,
                    ErrorCode.CERTIFICATE_MISMATCH,
                    "handshake rejected: it claims another key than it proved",
                )
                return
        elif f.body:
            self._violation(conn, ErrorCode.BAD_HANDSHAKE, "client handshake with a body")
            return
        record = self._records.get(peer_id)
        if record is None:
            dialling = self._records.at(addr)
            if dialling is not None and dialling.peer_id is None:
                # Our dial to that address, not answered yet: it is this peer.
                record = dialling
                self._records.set_id(record, peer_id)
        elif record.relay is not None and conn.came_via is None:
            # The peer we reach through a relay dialled us directly: a direct
            # path works, the relayed record gives way.
            self._fail(
                record,
                Reason(Cause.REPLACED, "the peer connected directly"),
                ErrorCode.DISCONNECTED,
            )
            record = None
        elif record.inn is not None and record.inn is not conn:
            # A second connection in from one key: the peer restarted (or lost
            # its state) while our record of it lived on. Only the holder of
            # the key can do this; the new connection replaces the old.
            self._bump("peers replaced by a new connection from the same key")
            self._fail(
                record,
                Reason(Cause.REPLACED, "the peer connected again (it restarted?)"),
                ErrorCode.DISCONNECTED,
            )
            record = None
        if (
            record is not None
            and is_node
            and record.to is ToPeer.CONNECTING
            and record.out is not None
            and record.out.link.peer_addr != addr
            and conn.came_via is None
        ):
            # We are still dialling it elsewhere (an address a contact or a
            # rendezvous gave: a guess, behind a NAT), and it reached us from
            # here: the reverse connection proves it here instead.
            self._drop_dial(record, Reason(Cause.REPLACED, "the peer reached us from elsewhere"))
            self._records.move(record, addr)
        fresh = record is None
        if record is None:
            record = self._records.add(Record(addr, peer_id))
            path = conn.came_via
            if path is not None and path.record is None and not path.closed:
                # Reached through a relay: so is our reverse connection.
                record.relay = path
                path.record = record
        action, code = on_incoming_handshake(is_node, record.to, record.frm)
        if action is Action.REJECT:
            assert code is not None
            if fresh:
                self._records.remove(record)
                if record.relay is not None:
                    record.relay.record = None
            self._violation(conn, code, f"handshake rejected: {code.name.lower()}")
            return
        record.frm = FromPeer.ESTABLISHED
        record.inn = conn
        conn.record = record
        if record.connected:
            self._done_joining(conn)  # (a second incoming one: not joining anything)
        record.cert = conn.peer_cert
        if not is_node:
            record.kind = PeerKind.CLIENT
            record.to = ToPeer.NOT_NEEDED
            if f.msg_id:
                conn.link.acknowledge(f.msg_id)  # accepted: the Client may send
                self._dirty.add(conn)
        else:
            record.kind = PeerKind.NODE
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
        record.connected_at = self._wall_clock()
        if record.inn is not None:
            self._done_joining(record.inn)
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
            # Ours to cache: a Node we dialled, or one we cached before that
            # dialled us from a new address (it restarted elsewhere).
            and (record.we_contacted or peer.node_info in self.cache)
            and self.cache.add(peer.node_info, self._wall_clock())
        ):
            self._emit(CacheChanged())
        self._serve_waiting(record)
        reads, record.pending_reads = record.pending_reads, []
        self._unproven.give(record.pending_bytes)
        record.pending_bytes = 0
        for conn, f in reads:
            self._deliver(record, conn, f)
        self._streams_proven(record)

    def _serve_waiting(self, record: Record) -> None:
        """The connected peer's waiters get it, its queued sends go out; a pin
        must hold for the peer we actually reached, whoever started the
        connection."""
        peer = record.peer()
        for waiter in record.waiters:
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

    def _fail(
        self, record: Record, reason: Reason, code: ErrorCode, *, report: bool = True
    ) -> None:
        """Tears the peer down: closes both connections, fails its waiters and
        queued sends, and reports it once."""
        if record.dead:
            return
        record.dead = True
        record.failure = reason
        self._records.remove(record)
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
            self._report_failure(record, reason)
        else:
            log.info("dropped peer %s:%d: %s", record.addr[0], record.addr[1], reason)

    def _report_failure(self, record: Record, reason: Reason) -> None:
        log.info("connection to %s:%d failed: %s", *record.addr, reason)
        self.events.push(ConnectionFailure(record.addr, reason, record.peer_id))

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
