"""One QUIC connection with our framing on top (sans-IO).

A ``Link`` wraps an aioquic ``QuicConnection`` (itself sans-IO): it turns the
connection's stream events into frames and frames into ``LinkEvent``s, and
sends frames on the right stream. It owns no socket and reads no clock; the
driver feeds it aioquic events and transmits what aioquic queues.

Protocol errors by the peer close the connection with an ``ErrorCode`` and
surface as ``LinkDown``; they never raise out of ``handle``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional

from ..accel import FrameDecoder, encode_frame_header
from ..accel.types import FRAME_HEADER_SIZE, Frame, FrameError, FrameErrorCode, FrameKind
from ..errors import RemoteProtocolError
from ..peer import Address
from .flow import UNREADABLE, unacknowledged
from .limits import RECEIVE_BUDGET
from .wire import (
    CONTROL_FRAME_MAX,
    SMALL_MESSAGE_MAX,
    ErrorCode,
    RejectReason,
    WireError,
    decode_ack,
    decode_reject,
    encode_ack,
    encode_reject,
)

log = logging.getLogger(__name__)

#: Large messages in flight at once on one connection, each on its own stream.
#: A receiver refuses (BUSY) a message stream beyond this many at once: an
#: honest sender never has more, and each may buffer up to the message limit.
MAX_ACTIVE_LARGE = 4
#: What ``Link.control_backlog`` reports when aioquic's internals are not as
#: expected: more than any bound a caller sets.
UNREADABLE_BACKLOG = UNREADABLE


class HeldBytes:
    """A byte budget shared by several holders (e.g. every connection of
    peers that have not proven themselves yet): ``take`` fails rather than
    exceed ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        #: The most ever held at once.
        self.peak = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def give(self, n: int) -> None:
        self.used -= n


@dataclass(frozen=True)
class LinkUp:
    """TLS handshake completed (certificate checks by aioquic passed)."""


@dataclass(frozen=True)
class LinkFrame:
    """A frame other than ACK/REJECT, in order of arrival per stream."""

    frame: Frame


@dataclass(frozen=True)
class LinkAcked:
    msg_ids: list[int]


@dataclass(frozen=True)
class LinkRefused:
    msg_id: int
    reason: RejectReason


@dataclass(frozen=True)
class LinkDown:
    """The connection ended. ``application`` tells an application error code
    (ours, ``ErrorCode``) from a QUIC transport one (``QuicErrorCode``, TLS
    alerts at 0x100 + alert). ``by_peer``: the peer sent the close; a transport
    close may also be aioquic's own (idle timeout, a certificate we rejected)."""

    error_code: int
    reason: str
    by_peer: bool
    application: bool = True


@dataclass(frozen=True)
class LinkDatagram:
    """A DATAGRAM frame's payload (RFC 9221)."""

    data: bytes


LinkEvent = LinkUp | LinkFrame | LinkAcked | LinkRefused | LinkDown | LinkDatagram

#: What a 1-RTT packet spends besides a DATAGRAM frame's payload: the short
#: header (1 + connection id + up to 4 bytes of packet number), the AEAD tag
#: (16) and the frame's type and length (1 + 2): the payload must fit in
#: what remains of one packet, or aioquic keeps it queued forever.
DATAGRAM_OVERHEAD = 1 + 20 + 4 + 16 + 3


@dataclass
class _Inbound:
    decoder: FrameDecoder
    control: bool
    head: bytearray = field(default_factory=bytearray)  # first header, for REJECT
    frames: int = 0
    refused: bool = False
    #: Bytes taken for this message from each of ``budgets`` (the link's
    #: receive budget, and the unproven one while the peer is not proven).
    reserved: int = 0
    budgets: list[HeldBytes] = field(default_factory=list)


class Link:
    """Our protocol over one QUIC connection."""

    def __init__(
        self,
        quic: QuicConnection,
        *,
        initiator: bool,
        peer_addr: Address,
        max_msg_size: int,
        receive_budget: int = RECEIVE_BUDGET,
        count: Callable[[str], object] | None = None,
    ) -> None:
        self.quic = quic
        self.initiator = initiator
        self.peer_addr = peer_addr
        self.max_msg_size = max_msg_size
        #: The declared bytes of the large messages we are receiving on this
        #: connection (``peak``: the most at once); one maximal message always
        #: fits. A message stream that does not fit is refused (BUSY).
        self.receive_budget = HeldBytes(max(receive_budget, max_msg_size))
        #: Counts a refusal by its stats key (``Engine.stats``), if given.
        self._count = count
        self.up = False
        self.down: LinkDown | None = None
        self._control_id: int | None = None
        # The peer's control stream is its first unidirectional stream:
        # id 2 when the client (initiator) opened it, 3 when the server did.
        self._peer_control_id = 3 if initiator else 2
        self._inbound: dict[int, _Inbound] = {}
        self._next_msg_id = 1
        self._pending_acks: list[int] = []
        self._large_queue: deque[tuple[int, bytes, bytes]] = deque()
        self._large_active: set[int] = set()
        #: While set, each incoming large message must fit in this budget
        #: before it is buffered (a peer not yet proven; see ``HeldBytes``).
        self.budget: HeldBytes | None = None

    @property
    def rtt(self) -> float | None:
        """The connection's smoothed round-trip time in seconds, None before
        the first sample. aioquic keeps it private (its loss recovery's
        ``_rtt_smoothed``); this is the one place that reads it, and
        tests/test_endpoint.py fails loudly if aioquic renames it."""
        loss = getattr(self.quic, "_loss", None)
        if loss is None or not getattr(loss, "_rtt_initialized", False):
            return None
        return float(loss._rtt_smoothed)

    @property
    def recovery(self) -> tuple[float | None, int, int]:
        """(minimum RTT or None, congestion window, bytes in flight) from
        aioquic's loss recovery, read beside ``rtt`` (0s if renamed)."""
        loss = getattr(self.quic, "_loss", None)
        if loss is None:
            return None, 0, 0
        rtt_min = getattr(loss, "_rtt_min", None)
        known = getattr(loss, "_rtt_initialized", False) and isinstance(rtt_min, float)
        cwnd = getattr(loss, "congestion_window", 0)
        in_flight = getattr(loss, "bytes_in_flight", 0)
        return (
            float(rtt_min) if known and rtt_min is not None else None,
            cwnd if isinstance(cwnd, int) else 0,
            in_flight if isinstance(in_flight, int) else 0,
        )

    @property
    def large_messages_in_progress(self) -> int:
        """Our large messages on streams of their own, not yet acknowledged or
        refused (at most ``MAX_ACTIVE_LARGE``; the rest wait their turn)."""
        return len(self._large_active)

    @property
    def control_backlog(self) -> int:
        """Bytes queued on our control stream that the peer has not yet
        acknowledged: what we hold in memory for it (a peer that stops
        reading, or withholds flow-control credit, makes it grow). aioquic
        keeps it private (the stream sender's buffer offsets); this is the
        one place that reads them, and tests/test_relay_abuse.py fails if
        aioquic renames them. Unreadable internals count as full
        (``UNREADABLE_BACKLOG``): a caller bounding memory then queues
        nothing rather than grow without bound."""
        if self._control_id is None:
            return 0
        backlog = unacknowledged(self.quic, self._control_id)
        # (The control stream lives as long as the connection: missing is unexpected.)
        return UNREADABLE_BACKLOG if backlog is None else backlog

    # ------------------------------------------------------------ sending
    def send_frame(self, data: bytes) -> None:
        """Queue complete frame bytes on our control stream."""
        if self._control_id is None:
            self._control_id = self.quic.get_next_available_stream_id(is_unidirectional=True)
        self.quic.send_stream_data(self._control_id, data)

    def reserve_msg_id(self) -> int:
        """A msg_id no user message of this link will use: for a frame the
        peer acknowledges like a message (a Client's handshake), or a request
        whose answer or refusal carries it (echo, punch, relay, reach)."""
        msg_id = self._next_msg_id
        self._next_msg_id += 1
        return msg_id

    def send_user_message(self, msg: bytes) -> int:
        """Queue a user message; returns its msg_id (acknowledged by the peer)."""
        msg_id = self.reserve_msg_id()
        header = encode_frame_header(FrameKind.USER_MESSAGE, msg_id, len(msg))
        if len(msg) <= SMALL_MESSAGE_MAX:
            self.send_frame(header + msg)
        else:
            self._large_queue.append((msg_id, header, msg))
            self._pump_large()
        return msg_id

    def _pump_large(self) -> None:
        # aioquic visits every open stream for every packet it builds, so
        # hundreds of concurrent message streams make sending quadratic; a few
        # at a time keep large messages from blocking each other (and never
        # block small ones, which use the control stream).
        while self._large_queue and len(self._large_active) < MAX_ACTIVE_LARGE:
            msg_id, header, msg = self._large_queue.popleft()
            if self._control_id is None:
                # The control stream must be our first uni stream, so open it
                # (empty) before the first dedicated one.
                self.send_frame(b"")
            sid = self.quic.get_next_available_stream_id(is_unidirectional=True)
            self.quic.send_stream_data(sid, header)
            self.quic.send_stream_data(sid, msg, end_stream=True)
            self._large_active.add(msg_id)

    def _message_done(self, msg_id: int) -> None:
        if msg_id in self._large_active:
            self._large_active.discard(msg_id)
            self._pump_large()

    @property
    def max_datagram_payload(self) -> int:
        """The largest datagram payload this connection can carry now: what
        the peer accepts (its ``max_datagram_frame_size`` transport
        parameter, minus the frame's own bytes) and what fits one packet;
        0 when the peer takes no datagrams (or the handshake is not done).
        aioquic keeps the peer's parameter private; this is the one place
        that reads it (tests/test_datagrams.py fails if it is renamed)."""
        remote = getattr(self.quic, "_remote_max_datagram_frame_size", None)
        if not self.up or not isinstance(remote, int):
            return 0
        packet = self.quic.configuration.max_datagram_size - DATAGRAM_OVERHEAD
        return max(0, min(remote - 3, packet))

    def send_datagram(self, data: bytes) -> None:
        """Queue one DATAGRAM frame (``len(data) <= max_datagram_payload``)."""
        self.quic.send_datagram_frame(data)

    def acknowledge(self, msg_id: int) -> None:
        self._pending_acks.append(msg_id)

    def flush(self) -> None:
        """Send acknowledgements gathered since the last flush, as one frame."""
        if self._pending_acks and self.down is None:
            self.send_frame(encode_ack(self._pending_acks))
            self._pending_acks.clear()

    def close(self, code: int, reason: str) -> None:
        if self.down is None:
            self.quic.close(error_code=int(code), reason_phrase=reason)
            self.down = LinkDown(int(code), reason, by_peer=False)

    # ------------------------------------------------------------ receiving
    def poll_close(self) -> list[LinkEvent]:
        """``LinkDown`` as soon as the peer's CONNECTION_CLOSE has arrived.

        aioquic reports a close by the peer (``ConnectionTerminated``) only
        when the draining period ends, three probe timeouts later; until then
        a peer that disconnected and dials again would meet our stale record
        of it. The close it received is kept in the connection's private
        ``_close_event``; this is the one place that reads it (tests in
        tests/test_endpoint.py fail if aioquic renames it: reconnecting right
        after a disconnect then fails again)."""
        if self.down is not None:
            return []
        event = getattr(self.quic, "_close_event", None)
        if not isinstance(event, qe.ConnectionTerminated):
            return []
        return self.handle(event)

    def handle(self, event: qe.QuicEvent) -> list[LinkEvent]:
        """Turns one aioquic event into link events; none once the link is down.

        A closed link delivers nothing: aioquic hands over a whole datagram's
        events at once, so a peer refused at ``LinkUp`` (its certificate) may
        have its role handshake and messages queued right behind it, and they
        must never reach the layer above."""
        if self.down is not None:
            return []
        if isinstance(event, qe.StreamDataReceived):
            return self._on_stream_data(event)
        if isinstance(event, qe.DatagramFrameReceived):
            return [LinkDatagram(event.data)]
        if isinstance(event, qe.HandshakeCompleted):
            self.up = True
            return [LinkUp()]
        if isinstance(event, qe.StreamReset):
            # The sender gave up on a message stream; it reports its own unsent.
            inbound = self._inbound.pop(event.stream_id, None)
            if inbound is not None:
                self._release(inbound)
            return []
        if isinstance(event, qe.ConnectionTerminated):
            # (When we closed it ourselves, LinkDown was reported at close().)
            # aioquic reports application closes with frame_type None; it only
            # ever receives those, whereas transport closes may be its own.
            application = event.frame_type is None
            self.down = LinkDown(
                event.error_code,
                event.reason_phrase,
                by_peer=application,
                application=application,
            )
            return [self.down]
        return []

    def _on_stream_data(self, event: qe.StreamDataReceived) -> list[LinkEvent]:
        sid = event.stream_id
        if not stream_is_unidirectional(sid):
            return []  # the application's streams (proto/streams.py), not ours
        inbound = self._inbound.get(sid)
        if inbound is None:
            control = sid == self._peer_control_id
            inbound = self._inbound[sid] = _Inbound(
                FrameDecoder(CONTROL_FRAME_MAX if control else self.max_msg_size), control
            )
        if inbound.refused:
            # Whatever more aioquic hands us of a refused message is dropped.
            if event.end_stream:
                del self._inbound[sid]
            return []
        if not inbound.control and len(inbound.head) < FRAME_HEADER_SIZE:
            inbound.head += event.data[: FRAME_HEADER_SIZE - len(inbound.head)]
            if len(inbound.head) == FRAME_HEADER_SIZE and not self._admit_message(sid, inbound):
                return []
        out: list[LinkEvent] = []
        try:
            frames = inbound.decoder.feed(event.data)
        except FrameError as exc:
            out.extend(self._dispatch(inbound, exc.frames))
            if not inbound.control and exc.code is FrameErrorCode.TOO_LARGE and not inbound.frames:
                self._refuse_stream(sid, inbound, RejectReason.TOO_LARGE)
                return out
            return out + self._violation(ErrorCode.BAD_FRAME, str(exc))
        if frames and not inbound.control:
            self._release(inbound)  # complete: whoever takes the message accounts for it
        try:
            out.extend(self._dispatch(inbound, frames))
        except RemoteProtocolError as exc:
            return out + self._violation(exc.error_code, str(exc))
        if not inbound.control and inbound.frames and inbound.decoder.buffered:
            # Bytes after the message, unreserved: never buffered up to a frame.
            return out + self._violation(
                ErrorCode.BAD_FRAME, "a message stream carries exactly one user message"
            )
        if event.end_stream and self.down is None:
            if inbound.decoder.buffered:
                return out + self._violation(ErrorCode.BAD_FRAME, "stream ended inside a frame")
            del self._inbound[sid]
            self._release(inbound)
        return out

    def _admit_message(self, sid: int, inbound: _Inbound) -> bool:
        """Once a message stream's header is in: refuse it (BUSY) when the
        peer has too many messages in progress, or when its declared length
        does not fit this connection's receive budget, or the budget of a peer
        not yet proven (a message of an unproven peer takes from both)."""
        declared = int.from_bytes(inbound.head[4:8], "big")
        if declared > self.max_msg_size:
            return True  # the decoder refuses it (TOO_LARGE), unbuffered
        # (Every message stream not refused counts, this one and those whose
        # header is still incomplete included.)
        busy = sum(1 for i in self._inbound.values() if not i.control and not i.refused)
        if busy > MAX_ACTIVE_LARGE:
            return self._refuse_busy(
                sid, inbound, "too many messages in progress on one connection"
            )
        budgets = (
            [self.receive_budget] if self.budget is None else [self.receive_budget, self.budget]
        )
        for n, budget in enumerate(budgets):
            if not budget.take(declared):
                for taken in budgets[:n]:
                    taken.give(declared)
                if budget is self.receive_budget:
                    what = "message beyond the connection's receive budget"
                else:
                    what = "message from a peer not yet proven (budget)"
                return self._refuse_busy(sid, inbound, what)
        inbound.reserved, inbound.budgets = declared, budgets
        return True

    def _refuse_busy(self, sid: int, inbound: _Inbound, what: str) -> bool:
        if self._count is not None:
            self._count(f"refused: {what}")
        self._refuse_stream(sid, inbound, RejectReason.BUSY)
        return False

    @staticmethod
    def _release(inbound: _Inbound) -> None:
        for budget in inbound.budgets:
            budget.give(inbound.reserved)
        inbound.budgets, inbound.reserved = [], 0

    def release_all(self) -> None:
        """Gives back every budget this link holds (the connection is gone)."""
        for inbound in self._inbound.values():
            self._release(inbound)

    def _dispatch(self, inbound: _Inbound, frames: list[Frame]) -> list[LinkEvent]:
        out: list[LinkEvent] = []
        for f in frames:
            inbound.frames += 1
            if not inbound.control:
                if f.kind != FrameKind.USER_MESSAGE or inbound.frames > 1:
                    raise WireError("a message stream carries exactly one user message")
                if len(f.body) <= SMALL_MESSAGE_MAX:
                    raise WireError("small messages belong on the control stream")
            if f.kind == FrameKind.ACK:
                ids = decode_ack(f.body)
                for msg_id in ids:
                    self._message_done(msg_id)
                out.append(LinkAcked(ids))
            elif f.kind == FrameKind.REJECT:
                reason = decode_reject(f)
                self._message_done(f.msg_id)
                out.append(LinkRefused(f.msg_id, reason))
            else:
                out.append(LinkFrame(f))
        return out

    def _refuse_stream(self, sid: int, inbound: _Inbound, reason: RejectReason) -> None:
        """Refuses a message without closing the connection: stop the stream
        (the sender stops transmitting it) and tell the sender which."""
        inbound.refused = True
        self._release(inbound)
        msg_id = int.from_bytes(inbound.head[8:16], "big")
        log.info("refusing message %d from %s: %s", msg_id, self.peer_addr, reason.name.lower())
        code = (
            ErrorCode.MESSAGE_TOO_LARGE if reason is RejectReason.TOO_LARGE else ErrorCode.REFUSED
        )
        self.quic.stop_stream(sid, int(code))
        self.send_frame(encode_reject(msg_id, reason))

    def _violation(self, code: int, reason: str) -> list[LinkEvent]:
        log.warning("closing connection with %s: %s (code %#x)", self.peer_addr, reason, code)
        self.close(code, reason)
        assert self.down is not None
        return [self.down]
