"""Relaying: as the relay (sessions between two Nodes, forwarding, limits)
and as a relayed side (our paths through a relay, moving to direct)."""

from __future__ import annotations

from ..accel.types import Frame, FrameKind
from ..events import PathChanged, UpgradedToDirect
from ..peer import Address, NodeInfo, PeerId
from ..reasons import Cause, Reason
from ..stats import PathKind, PeerPath
from .base import log
from .limits import FROM_RELAY, HANDSHAKE_TIMEOUT, RELAY_MAX_BACKLOG, RELAY_MAX_PATHS
from .pins import Pin
from .rendezvous import Rendezvous
from .scope import could_observe
from .state import Conn, ConnectResult, Record, RelayPath, RelaySession, Waiter
from .wire import (
    ErrorCode,
    RejectReason,
    RelayClose,
    WireError,
    decode_relay_close,
    decode_relay_open,
    encode_relay_close,
    encode_relay_open,
    frame,
)

BUSY = Reason(Cause.REPLACED, "a direct connection to that address is in progress")


class Relaying(Rendezvous):
    # ------------------------------------------------------------ as the relay
    def _on_relay_request(self, conn: Conn, f: Frame) -> None:
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
        session = RelaySession(self._next_relay_session, asker, target)
        self._next_relay_session = self._next_relay_session % 0xFFFF_FFFF + 1
        self._relay_sessions[session.id] = session
        session.timer = self._call_later(
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

    def _end_relay_session(self, session: RelaySession, reason: str) -> None:
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
        self._bump("relay sessions closed")
        log.info("relay session %d closed: %s", session.id, reason)

    # ------------------------------------------------------------ as a relayed side
    def _on_relay_open(self, conn: Conn, f: Frame) -> None:
        """As the target: a relay we chose announces a Node that asked it to
        reach us. The announced certificate is the identity that Node must
        prove end to end; the session never displaces a peer we have or are
        connecting to."""
        try:
            session, node = decode_relay_open(f.body)
        except WireError as exc:
            self._violation(conn, ErrorCode.BAD_FRAME, str(exc))
            return
        addr = node.peer_addr
        relay = conn.record
        problem = self._relay_open_problem(relay, node)
        path = None
        if problem is None:
            assert relay is not None and node.peer_id is not None
            path = self._open_path(relay, session, addr, node.peer_id)
            if path is None:
                problem = "too many relay sessions"
        if path is None:
            conn.link.send_frame(encode_relay_close(session, RelayClose.CLOSED, "declined"))
            self._dirty.add(conn)
            self._bump(f"relay sessions declined: {problem}")
            return
        self._replace_punch(addr)

    def _connect_relayed(self, node: NodeInfo, via_addr: Address, answer: Frame) -> int:
        """As the asker: the relay's answer (RELAY_OPEN) to our request for a
        session with ``node``; connects through it. Returns the connect id."""
        waiter = Waiter(self._next_id(), Pin.of(node))
        try:
            session, announced_node = decode_relay_open(answer.body)
        except WireError as exc:
            bad = Reason(Cause.BAD_ANSWER, f"bad answer: {exc}")
            self._emit(ConnectResult(waiter.id, node.peer_addr, None, bad))
            return waiter.id
        addr = announced_node.peer_addr
        rendezvous = self._records.at(via_addr)
        expect = node.peer_id or announced_node.peer_id
        existing = self._records.at(addr)
        problem = None
        if rendezvous is None or not rendezvous.connected:
            problem = Reason(Cause.RENDEZVOUS, "connection lost: the rendezvous left")
        elif addr != node.peer_addr:
            problem = Reason(Cause.BAD_ANSWER, "bad answer: it names another address")
        elif expect is None:
            problem = Reason(Cause.BAD_ANSWER, "bad answer: no certificate for the peer")
        elif existing is not None and not self._punch_only(existing, rendezvous):
            problem = BUSY  # (it started while we asked)
        elif (known := self._records.get(expect)) is not None and known is not existing:
            problem = BUSY  # that peer is connected or connecting at another address
        path = None
        if problem is None:
            assert rendezvous is not None and expect is not None
            # The peer must prove the key we dialled (else the one the relay
            # saw it present), end to end.
            path = self._open_path(rendezvous, session, addr, expect)
            if path is None:
                problem = Reason(Cause.RELAY, "relay session id already in use")
        if path is None:
            rconn = None if rendezvous is None else self._send_conn(rendezvous)
            if rconn is not None:
                rconn.link.send_frame(encode_relay_close(session, RelayClose.CLOSED, "declined"))
                self._dirty.add(rconn)
            declined = problem or Reason(Cause.RELAY, "declined")
            self._emit(ConnectResult(waiter.id, node.peer_addr, None, declined))
            return waiter.id
        self._replace_punch(addr)
        target = node if node.peer_id is not None else NodeInfo(addr, peer_id=path.expect)
        return self._connect_waiting(target, waiter, HANDSHAKE_TIMEOUT, path)

    def _relay_open_problem(self, relay: Record | None, node: NodeInfo) -> str | None:
        """Why we decline a relay session announced by ``relay`` for ``node``
        (the address and certificate announced), or None."""
        addr = node.peer_addr
        if relay is None or not self._our_rendezvous(relay):
            return "not a relay we chose"
        if node.peer_id is None or node.peer_id == relay.peer_id:
            return "no certificate of its own for the peer"
        if self._is_us(node):
            return "names us"
        if not could_observe(relay.addr, addr):
            return "an address the relay could not have seen"
        known = self._known_id(addr)
        if known is not None and known != node.peer_id:
            return "not the key we know for that address"
        existing = self._records.at(addr)
        if existing is not None and not self._punch_only(existing, relay):
            return "that address is connected or connecting"
        known_peer = self._records.get(node.peer_id)
        if known_peer is not None and known_peer is not existing:
            return "that peer is connected or connecting"
        return None

    def _known_id(self, addr: Address) -> PeerId | None:
        """The id our contacts or bootstrap cache give for ``addr``."""
        for node in (*self.config.hard_coded_contacts, *self.cache.peers()):
            if addr in node.addresses and node.peer_id is not None:
                return node.peer_id
        return None

    def _punch_only(self, record: Record, rendezvous: Record) -> bool:
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
        record = self._records.at(addr)
        if record is not None and not record.connected:
            replaced = Reason(Cause.REPLACED, "replaced by a relayed connection")
            self._fail(record, replaced, ErrorCode.NO_ERROR, report=False)

    def _open_path(
        self, relay: Record, session: int, peer_addr: Address, expect: PeerId
    ) -> RelayPath | None:
        key = (relay, session)
        if key in self._relay_paths or len(self._relay_paths) >= RELAY_MAX_PATHS:
            return None
        path = self._relay_paths[key] = RelayPath(relay, session, peer_addr, expect)
        # A session no connection ever uses is given back to the relay.
        path.deadline = self._call_later(HANDSHAKE_TIMEOUT, self._path_unused, path)
        return path

    def _path_unused(self, path: RelayPath) -> None:
        path.deadline = None
        if path.record is None and not path.conns:
            self._close_path(path, Reason(Cause.RELAY, "unused"), notify=True)

    def _close_path(self, path: RelayPath, reason: Reason, *, notify: bool) -> None:
        """Ends our side of a relay session; connections still sending through
        it are lost (their peers see ``ConnectionFailure``)."""
        if path.closed:
            return
        path.closed = True
        if self._relay_paths.get((path.relay, path.session)) is path:
            del self._relay_paths[(path.relay, path.session)]
        if path.deadline is not None:
            path.deadline.cancel()
            path.deadline = None
        if notify and (rconn := self._send_conn(path.relay)) is not None:
            rconn.link.send_frame(encode_relay_close(path.session, RelayClose.CLOSED, reason))
            self._dirty.add(rconn)
        for conn in list(path.conns):
            lost = Reason(Cause.RELAY, f"relay session closed: {reason}")
            self._close_conn(conn, ErrorCode.DISCONNECTED, lost)
            self._on_down(conn, lost)
        path.conns.clear()

    def _go_direct(self, record: Record) -> None:
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
        log.info("%s:%d is now reached directly (was via %s:%d)", *record.addr, *path.relay.addr)
        self.events.push(UpgradedToDirect(record.addr, path.relay.addr, record.peer_id))
        self.events.push(
            PathChanged(
                record.peer_id,
                PeerPath(PathKind.RELAYED, path.peer_addr, path.relay.addr),
                PeerPath(PathKind.DIRECT, record.addr),
            )
        )

    def _peer_gone(self, record: Record, reason: Reason) -> None:
        """A peer failed: the paths it carried or was reached by, and the
        sessions we relayed for it, end too."""
        for path in list(self._relay_paths.values()):
            if path.relay is record:  # our relay is gone: so are the peers behind it
                self._close_path(path, reason.wrap("lost the relay: "), notify=False)
            elif path.record is record:
                self._close_path(path, reason, notify=True)
        for session in list(self._relay_sessions.values()):
            if record in (session.a, session.b):
                self._end_relay_session(session, "the other side left the relay")

    # ------------------------------------------------------------ packets and closes
    def _on_relay_packet(self, conn: Conn, f: Frame) -> None:
        sender = conn.record
        if sender is None or not sender.connected:
            self._violation(conn, ErrorCode.PROTOCOL_VIOLATION, "relay packet before handshake")
            return
        if f.msg_id & FROM_RELAY:  # our relay forwards the other side's packet
            path = self._relay_paths.get((sender, f.msg_id & ~FROM_RELAY))
            if path is None:
                self._bump("relay: dropped a packet of an unknown session")
                return
            # Handled once this connection's processing is done, not inside it.
            self._inner.append((f.body, path.peer_addr, path))
            return
        if self.relay_tap is not None:
            self.relay_tap(f.body)
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

    def _on_relay_close(self, conn: Conn, f: Frame) -> None:
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
            path = self._relay_paths.get((sender, f.msg_id & ~FROM_RELAY))
            if path is not None:
                self._close_path(path, Reason(Cause.RELAY, reason), notify=False)
            return
        session = self._relay_sessions.get(f.msg_id)
        if session is None or sender not in (session.a, session.b):
            return  # (already ended: the two sides' closes crossed)
        if code is RelayClose.DIRECT:
            session.direct.add(sender)
            if len(session.direct) == 2:
                self._end_relay_session(session, "both sides are direct")
        else:
            self._end_relay_session(session, f"the other side closed it ({reason})")
