"""Sends and their acknowledgements, messages we receive, our requests
(echo, punch, relay, reach) and their answers, keep-alives and send timeouts."""

from __future__ import annotations

from ..accel.types import FRAME_MAX_BODY, Frame, FrameKind
from ..events import NewMessage, SentUserMessage, UnsentUserMessage
from ..peer import NodeInfo, Peer, PeerId, PeerKind
from ..reasons import NO_REASON, Cause, Reason
from .base import log
from .conns import Conns
from .limits import MAX_PENDING_READS
from .pins import pin_problem
from .state import AnswerResult, Conn, Record, Request, Send, SendResult
from .wire import ErrorCode, RejectReason, frame

#: Refusals of our requests to a rendezvous, and what they mean.
REQUEST_REFUSALS = {
    RejectReason.UNKNOWN_PEER: Reason(
        Cause.RENDEZVOUS, "the rendezvous is not connected to that peer"
    ),
    RejectReason.RELAY_REFUSED: Reason(
        Cause.RELAY, "the rendezvous does not relay (or is at its relay limits)"
    ),
    RejectReason.RATE_LIMITED: Reason(
        Cause.RATE_LIMITED,
        "the rendezvous refuses: too many punch or relay requests from us (try again in a second)",
    ),
    RejectReason.CHECK_REFUSED: Reason(
        Cause.REFUSED,
        "the node runs no reachability check for us now (we are a Client, or it is busy)",
    ),
}
ENDPOINT_CLOSED = Reason(Cause.ENDPOINT_CLOSED, "endpoint closed")
CONNECTION_CLOSED = Reason(Cause.CONNECTION_LOST, "connection closed")
NEVER_UP = Reason(Cause.HANDSHAKE_TIMEOUT, "the connection did not come up in time")


class Sends(Conns):
    # ------------------------------------------------------------ sending
    def _submit(self, peer: Peer, s: Send) -> None:
        if self._closing or not self._started:
            self._resolve(s, False, ENDPOINT_CLOSED)
            return
        if len(s.msg) > FRAME_MAX_BODY:
            self._resolve(
                s, False, Reason(Cause.MESSAGE_TOO_LARGE, "message larger than a frame can carry")
            )
            return
        record = self._record_of(peer)
        if record is not None and record.connected:
            if peer.is_node and record.kind is PeerKind.CLIENT:
                self._resolve(
                    s, False, Reason(Cause.WRONG_ROLE, "the peer at that address is a Client")
                )
                return
            problem = pin_problem(record, s.pin)
            if problem is not None:
                self._resolve(s, False, problem)
                return
            self._send_on(record, s)
        elif peer.is_node and peer.node_info is not None:
            record = self._connect(peer.node_info, we_contacted=True)
            if record.dead:
                self._resolve(s, False, record.failure.wrap("could not connect: "))
            else:
                record.pending_sends.append(s)
        else:
            self._resolve(s, False, Reason(Cause.NOT_CONNECTED, "not connected to that client"))

    def _record_of(self, peer: Peer) -> Record | None:
        """The record of a peer named by a Peer value: by its NodeInfo (its
        id, or its address while that is unknown), else by id or address."""
        if peer.node_info is not None:
            return self._records.find(peer.node_info)
        return self._records.lookup(peer.peer_id, peer.peer_addr)

    def _connected_record(self, peer: Peer | NodeInfo | PeerId) -> Record | None:
        """The record of a connected peer named any of the ways the API takes."""
        if isinstance(peer, PeerId):
            record = self._records.get(peer)
        elif isinstance(peer, NodeInfo):
            record = self._records.find(peer)
        else:
            record = self._record_of(peer)
        if record is None or not record.connected or record.dead:
            return None
        return record

    def _send_on(self, record: Record, s: Send) -> None:
        s.peer_addr, s.peer_id = record.addr, record.peer_id
        conn = self._send_conn(record)
        if conn is None:
            self._resolve(s, False, Reason(Cause.CONNECTION_LOST, "connection lost"))
            return
        if conn.waiting or (
            conn.outstanding and conn.unacked_bytes + len(s.msg) > self.max_unacked_bytes
        ):
            conn.waiting.append(s)  # backpressure: handed over as acks make room
            return
        self._hand_over(conn, s)

    def _hand_over(self, conn: Conn, s: Send) -> None:
        if not conn.outstanding:
            conn.progress_at = self._now()
        msg_id = conn.link.send_user_message(s.msg)
        conn.outstanding[msg_id] = s
        conn.unacked_bytes += len(s.msg)
        self._dirty.add(conn)

    def _settled(self, conn: Conn, msg_id: int) -> Send | None:
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

    def _resolve(self, s: Send, sent: bool, reason: Reason = NO_REASON) -> None:
        """Decides a send's one outcome: a ``SendResult`` for whoever waits on
        it, and an event when asked for (``outcome_events``) or when the caller
        stopped waiting (``abandon_send``)."""
        if s.resolved:
            return
        s.resolved = True
        self._sends.pop(s.id, None)
        outcome: SentUserMessage | UnsentUserMessage
        if sent:
            outcome = SentUserMessage(s.peer_addr, s.msg, s.token, s.peer_id)
        else:
            outcome = UnsentUserMessage(s.peer_addr, s.msg, s.token, reason, s.peer_id)
        record = None if s.peer_id is None else self._records.get(s.peer_id)
        if sent:
            self._totals.messages_sent += 1
        else:
            self._totals.messages_unsent += 1
        if record is not None:
            if sent:
                record.messages_sent += 1
            else:
                record.messages_unsent += 1
        if not s.abandoned:
            self._emit(SendResult(s.id, outcome))
        if self.outcome_events or s.abandoned:
            self.events.push(outcome)

    # ------------------------------------------------------------ receiving
    def _on_user_message(self, conn: Conn, f: Frame) -> None:
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

    def _deliver(self, record: Record, conn: Conn, f: Frame) -> None:
        if not self.events.has_room():
            self._refuse(conn, f.msg_id, RejectReason.BUSY)
            return
        self.events.push(NewMessage(record.addr, f.body, record.peer_id))
        record.messages_received += 1
        self._totals.messages_received += 1
        conn.link.acknowledge(f.msg_id)
        self._dirty.add(conn)

    # ------------------------------------------------------------ requests
    def _ask(self, conn: Conn, kind: FrameKind, body: bytes, within: float) -> int:
        """Sends a request frame once ``conn`` is up; its answer (the frame
        with the same msg_id), or why none came, within ``within`` seconds
        (the connection coming up included), is an ``AnswerResult``."""
        req = Request(self._next_id(), kind, body)
        req.deadline = self._call_later(within, self._request_timeout, conn, req)
        if conn.link.down is None and conn.link.up:
            self._send_request(conn, req)
        elif conn.link.down is None and conn.outgoing:
            conn.unsent_requests.append(req)
        else:
            self._answer(conn, req, None, CONNECTION_CLOSED)
        return req.id

    def _send_request(self, conn: Conn, req: Request) -> None:
        # From the id space of our user messages: a refusal of this request
        # must never read as the refusal of a message (freeing its slot).
        req.msg_id = conn.link.reserve_msg_id()
        conn.requests[req.msg_id] = req
        conn.link.send_frame(frame(req.kind, req.body, req.msg_id))
        self._dirty.add(conn)

    def _release_requests(self, conn: Conn) -> None:
        """``conn`` is up: the requests waiting for it go out."""
        waiting, conn.unsent_requests = conn.unsent_requests, []
        for req in waiting:
            self._send_request(conn, req)

    def _request_timeout(self, conn: Conn, req: Request) -> None:
        req.deadline = None
        if req.msg_id:
            self._answer(conn, req, None, Reason(Cause.NO_ANSWER, "no answer in time"))
        else:  # never sent: the connection did not come up in time
            self._answer(conn, req, None, NEVER_UP)

    def _answer(self, conn: Conn, req: Request, f: Frame | None, error: Reason = NO_REASON) -> None:
        if req.deadline is not None:
            req.deadline.cancel()
            req.deadline = None
        if conn.requests.get(req.msg_id) is req:
            del conn.requests[req.msg_id]
        if req in conn.unsent_requests:
            conn.unsent_requests.remove(req)
        self._emit(AnswerResult(req.id, conn.link.peer_addr, f, error))

    def _requests_lost(self, conn: Conn, reason: Reason) -> None:
        for req in list(conn.requests.values()):
            # (Lost, whatever ended it: a refusal here is a request's answer.)
            lost = Reason(Cause.CONNECTION_LOST, f"connection lost: {reason}")
            self._answer(conn, req, None, lost)
        for req in list(conn.unsent_requests):
            # Never sent: why the connection ended is why (a refused
            # certificate, a handshake that timed out), not "lost".
            self._answer(conn, req, None, reason)

    # ------------------------------------------------------------ housekeeping
    def _housekeeping(self, tick: float, last_ping: float) -> None:
        """Keep-alive PINGs and send timeouts, for all connections at once."""
        if self._closing:
            return
        now = self._now()
        interval = self.config.keep_alive_interval_msec / 1000.0
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
        self._call_later(tick, self._housekeeping, tick, last_ping)

    def _send_timed_out(self, conn: Conn) -> None:
        """The peer acknowledged nothing for ``send_timeout`` while sends were
        outstanding. What it has not acknowledged may still sit in QUIC's
        buffers (a small message cannot be taken back out of the stream it
        shares), so the connection is closed: every send on it ends unsent
        and none of them can arrive later."""
        assert self.send_timeout is not None
        reason = Reason(
            Cause.SEND_TIMEOUT,
            f"send timed out: the peer acknowledged nothing for {self.send_timeout:g} s",
        )
        self._bump("connections closed: send timeout")
        log.info("%s:%d: %s", *conn.link.peer_addr, reason)
        record = conn.record
        if record is not None and not record.dead:
            self._fail(record, reason, ErrorCode.DISCONNECTED)
        else:
            self._close_conn(conn, ErrorCode.DISCONNECTED, reason)
            self._on_down(conn, reason)
