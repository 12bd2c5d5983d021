"""Bidirectional streams: named protocols, requests and their limits (sans-IO).

The application's protocols run on bidirectional QUIC streams of the peer's
connections (the message layer keeps the unidirectional ones): the opener
names the protocol in a short header (``wire.encode_stream_header``), the
acceptor routes it to the handler registered for that name or refuses it.
``Stream`` is one such stream's state and its buffer; the driver's reader
and writer call its methods, and wait for the engine to list it in
``stream_wakes`` (data, end, error, room to write) or ``stream_arrivals``
(an incoming stream or a whole request, for a handler).

Memory is bounded whatever the peer does: a stream's peer gets credit only
for what our application read plus one window (``flow.PeerConnection``);
until a stream is accepted (a handler found, the peer proven) it holds at
most the small initial window, charged to the unproven budget while the peer
is unproven; incoming streams are limited per peer connection and per
protocol; a request, or a reply, is collected up to its size limit only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aioquic.quic import events as qe

from ..errors import QuicP2pError, StreamError, StreamRefusedError, StreamResetError
from ..peer import Address, NodeInfo, Peer, PeerId
from ..reasons import Cause, Reason
from .flow import INITIAL_STREAM_WINDOW, STREAM_WINDOW
from .limits import DRAIN_HIGH_WATER
from .relay import Relaying
from .state import Conn, Record
from .wire import (
    MESSAGE_PROTOCOL,
    RESERVED_PREFIX,
    STREAM_ACCEPT,
    StreamCode,
    StreamMode,
    WireError,
    decode_stream_header,
    encode_stream_header,
)

__all__ = ["Protocol", "Stream", "Streaming", "reason_of_code"]

#: Credit is raised once the application has read this much of the window
#: (fewer MAX_STREAM_DATA frames; the peer still has 3/4 of a window).
_GRANT_STEP = STREAM_WINDOW // 4

_HEADER, _OPENING, _HELD, _OPEN = range(4)


@dataclass
class Protocol:
    """A protocol we accept streams for."""

    name: str
    #: STREAM: the handler gets a reader and a writer; REQUEST: the whole
    #: request, collected up to ``max_request_size``, and returns the reply.
    kind: StreamMode
    #: Incoming streams of this protocol open at once, all peers together.
    max_streams: int
    max_request_size: int
    active: int = 0


def reason_of_code(code: int, protocol: str) -> Reason:
    """What a peer's RESET_STREAM / STOP_SENDING code means to us."""
    if code == StreamCode.NO_HANDLER:
        return Reason(Cause.NO_HANDLER, f"the peer has no handler for {protocol!r}")
    if code == StreamCode.BUSY:
        return Reason(Cause.REFUSED, f"refused by the peer: its stream limits ({protocol!r})")
    if code == StreamCode.BAD_HEADER:
        return Reason(Cause.PROTOCOL_ERROR, "the peer found our stream header malformed")
    if code == StreamCode.TOO_LARGE:
        return Reason(Cause.MESSAGE_TOO_LARGE, "refused by the peer: above its size limit")
    if code == StreamCode.HANDLER_FAILED:
        return Reason(Cause.HANDLER_FAILED, f"the peer's handler for {protocol!r} failed")
    if code == StreamCode.SHUTDOWN:
        return Reason(Cause.DISCONNECTED, "the peer is shutting down")
    return Reason(Cause.STREAM_RESET, f"reset by the peer (code {code:#x})")


class Stream:
    """One bidirectional stream: what the peer sent that the application has
    not read yet, and the state of both directions. Not thread-safe; driven
    by one engine."""

    __slots__ = (
        "_owner",
        "collect",
        "conn",
        "consumed",
        "counted",
        "drain_to",
        "eof",
        "error",
        "finished",
        "granted",
        "header_size",
        "held",
        "id",
        "incoming",
        "mode",
        "peer",
        "protocol",
        "recv",
        "refused",
        "send_done",
        "send_error",
        "sid",
        "state",
        "want_drain",
        "want_read",
        "written",
    )

    def __init__(
        self,
        owner: Streaming,
        stream_id: int,
        conn: Conn,
        sid: int,
        *,
        incoming: bool,
        peer: Peer | None = None,
        protocol: str = "",
        mode: StreamMode = StreamMode.STREAM,
    ) -> None:
        self._owner = owner
        self.id = stream_id
        self.conn = conn
        self.sid = sid
        self.incoming = incoming
        #: The peer (for an incoming stream: once accepted).
        self.peer = peer
        self.protocol = protocol
        self.mode = mode
        #: Received and not yet read (a request or reply: the whole of it).
        self.recv = bytearray()
        #: Bytes of the peer's side taken off ``recv`` (header included).
        self.consumed = 0
        self.header_size = 0
        #: The credit the peer has on this stream (an offset).
        self.granted = INITIAL_STREAM_WINDOW if incoming else STREAM_WINDOW
        self.state = _HEADER if incoming else _OPENING
        #: The peer's side ended; everything it sent is in ``recv``.
        self.eof = False
        #: Why the peer's side ended abnormally (reset, lost), else None.
        self.error: Reason | None = None
        #: The peer refused the stream (no handler, limits) before accepting.
        self.refused = False
        #: Bytes we wrote (our header or ACCEPT byte not counted).
        self.written = 0
        #: Our side ended (write_eof, close, a reset), and why, if abnormally.
        self.send_done = False
        self.send_error: Reason | None = None
        #: 0: read as the application goes; else collect up to this many bytes
        #: (a request for a request handler, or a reply to our request).
        self.collect = 0
        #: Bytes charged to the unproven budget while held.
        self.held = 0
        #: The driver waits for data / for room to write.
        self.want_read = False
        self.want_drain = False
        #: The backlog a waiting writer waits to fall to.
        self.drain_to = 0
        #: Both sides are over: no longer in its connection's table.
        self.finished = False
        #: Counted against its protocol's and its connection's limits.
        self.counted = False

    # ------------------------------------------------------------ state
    @property
    def peer_id(self) -> PeerId | None:
        return None if self.peer is None else self.peer.peer_id

    @property
    def peer_addr(self) -> Address:
        return self.conn.link.peer_addr if self.peer is None else self.peer.peer_addr

    @property
    def accepted(self) -> bool:
        """Open both ways (an opener: the acceptor's ACCEPT byte came)."""
        return self.state == _OPEN

    @property
    def readable(self) -> bool:
        """``read`` would not wait: data, the end, or an error."""
        return bool(self.recv) or self.eof or self.error is not None

    @property
    def backlog(self) -> int:
        """Bytes we wrote that the peer has not acknowledged yet."""
        return self.conn.quic.send_backlog(self.sid)

    @property
    def acknowledged(self) -> int:
        """Bytes of ``written`` the peer has acknowledged."""
        # (The backlog runs from the first byte not acknowledged, our header
        # or ACCEPT byte included while it is outstanding.)
        return max(0, self.written - self.backlog)

    @property
    def writable(self) -> bool:
        """A waiting writer may go on: the backlog fell to what it waits for
        (``drain_to``), or our side failed."""
        return self.send_error is not None or self.backlog <= self.drain_to

    def must_drain(self) -> bool:
        """Above the high-water mark: the writer should wait."""
        return self.send_error is None and self.backlog > DRAIN_HIGH_WATER

    # ------------------------------------------------------------ reading
    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes off the buffer (all of it for a negative ``n``);
        what is read is what grants the peer more credit."""
        recv = self.recv
        if n < 0 or n >= len(recv):
            data = bytes(recv)
            recv.clear()
        else:
            data = bytes(recv[:n])
            del recv[:n]
        if data and not self.collect:
            self.consumed += len(data)
            self._owner._credit(self)
        return data

    def raise_error(self) -> None:
        """Raises why the peer's side failed (nothing if it did not)."""
        if self.error is not None:
            raise StreamResetError(self.error)

    # ------------------------------------------------------------ writing
    def write(self, data: bytes, end: bool = False) -> None:
        if self.send_error is not None:
            raise StreamResetError(self.send_error)
        if self.send_done:
            raise StreamError(Reason(Cause.OTHER, "write after write_eof() or close()"))
        if not data and not end:
            return
        self.conn.quic.send_stream_data(self.sid, data, end)
        self.written += len(data)
        if end:
            self.send_done = True
        self._owner._touched(self)

    def write_eof(self) -> None:
        """Ends our side after what was written (nothing once it ended)."""
        if not self.send_done and self.send_error is None:
            self.write(b"", end=True)

    def close(self) -> None:
        """Ends our side (after what was written) and stops reading the
        peer's: data it still sends is discarded (it sees a reset)."""
        self.write_eof()
        if not self.eof and self.error is None:
            self.error = Reason(Cause.STREAM_RESET, "closed by us")
            self._stop_receiving(StreamCode.CLOSED)
        self._owner._touched(self)

    def abort(self, code: StreamCode = StreamCode.CLOSED, why: str = "aborted by us") -> None:
        """Resets our side and stops the peer's: both raise from now on,
        here and at the peer (which sees ``code``)."""
        reason = Reason(Cause.STREAM_RESET, why)
        if not self.send_done and self.send_error is None:
            self.send_error = reason
            self._reset_sending(code)
        self.send_done = True
        if not self.eof and self.error is None:
            self.error = reason
            self._stop_receiving(code)
        self._owner._touched(self)

    def _reset_sending(self, code: int) -> None:
        if self.conn.link.down is None:
            self.conn.quic.reset_stream(self.sid, int(code))

    def _stop_receiving(self, code: int) -> None:
        self.recv.clear()
        if self.conn.link.down is None:
            # (ValueError: aioquic discarded it already, all of it received.)
            with contextlib.suppress(ValueError):
                self.conn.quic.stop_stream(self.sid, int(code))


class Streaming(Relaying):
    """The engine's stream layer (see the module docstring)."""

    # ------------------------------------------------------------ commands
    def set_protocol(
        self, name: str, kind: StreamMode, *, max_streams: int, max_request_size: int
    ) -> None:
        """Accept streams for ``name`` (replacing its settings, not its count)."""
        encode_stream_header(kind, name)  # (checks the name)
        if name.startswith(RESERVED_PREFIX):
            raise QuicP2pError(
                f"protocol names under {RESERVED_PREFIX!r} are reserved"
                f" ({MESSAGE_PROTOCOL!r} is the message protocol: send() and NewMessage)"
            )
        if max_streams < 1 or max_request_size < 0:
            raise QuicP2pError("max_streams must be positive, max_request_size not negative")
        old = self.protocols.get(name)
        self.protocols[name] = Protocol(
            name, kind, max_streams, max_request_size, 0 if old is None else old.active
        )

    def remove_protocol(self, name: str) -> None:
        """New streams for ``name`` are refused (NO_HANDLER); open ones go on."""
        self.protocols.pop(name, None)

    def open_stream(
        self,
        now: float,
        peer: Peer | NodeInfo | PeerId,
        protocol: str,
        mode: StreamMode = StreamMode.STREAM,
        *,
        collect: int = 0,
    ) -> Stream:
        """Opens a stream to a connected peer for ``protocol``; ``data`` after
        the header goes with the first packet. In STREAM mode it is
        ``accepted`` once the acceptor's ACCEPT byte arrives (or ``refused``).
        ``collect``: gather the whole reply up to that many bytes (a request).
        Raises ``StreamRefusedError`` (not connected) or ``QuicP2pError`` (a
        bad name)."""
        self._advance(now)
        header = encode_stream_header(mode, protocol)
        record = self._connected_record(peer)
        conn = None if record is None else self._send_conn(record)
        if record is None or conn is None or self._closing:
            raise StreamRefusedError(Reason(Cause.NOT_CONNECTED, "not connected to that peer"))
        sid = conn.quic.get_next_available_stream_id()
        self._next_stream += 1
        stream = Stream(
            self,
            self._next_stream,
            conn,
            sid,
            incoming=False,
            peer=record.peer(),
            protocol=protocol,
            mode=mode,
        )
        if mode is StreamMode.REQUEST:
            stream.state = _OPEN
            stream.collect = collect
        conn.streams[sid] = stream
        self._totals.streams_opened += 1
        conn.quic.send_stream_data(sid, header)
        self._dirty.add(conn)
        return stream

    def take_stream_events(self) -> tuple[list[Stream], list[Stream]]:
        """(arrivals, wakes) since the last call."""
        arrivals, wakes = self.stream_arrivals, self.stream_wakes
        if arrivals:
            self.stream_arrivals = []
        if wakes:
            self.stream_wakes = []
        return arrivals, wakes

    def watch_drain(self, stream: Stream, low: int) -> None:
        """The writer waits for room: wake it once the backlog is ``low``
        bytes or less."""
        stream.want_drain = True
        stream.drain_to = low
        self._draining.add(stream)

    # ------------------------------------------------------------ from aioquic
    def _on_stream_event(self, conn: Conn, event: qe.QuicEvent) -> None:
        if conn.link.down is not None:
            return
        if isinstance(event, qe.StreamDataReceived):
            self._on_stream_data(conn, event.stream_id, event.data, event.end_stream)
            return
        assert isinstance(event, (qe.StreamReset, qe.StopSendingReceived))
        stream = conn.streams.get(event.stream_id)
        if stream is None:
            return
        if isinstance(event, qe.StreamReset):
            if not stream.eof and stream.error is None:
                stream.error = reason_of_code(event.error_code, stream.protocol)
                if stream.state == _OPENING:
                    stream.refused = True
            if stream.collect:
                stream.recv.clear()  # a partial request or reply is no use
        elif isinstance(event, qe.StopSendingReceived):
            # (aioquic has reset our side already, with the same code.)
            if stream.send_error is None:
                stream.send_error = reason_of_code(event.error_code, stream.protocol)
                if stream.state == _OPENING:
                    stream.refused = True
            stream.send_done = True
        self._touched(stream)

    def _on_stream_data(self, conn: Conn, sid: int, data: bytes, end: bool) -> None:
        stream = conn.streams.get(sid)
        if stream is None:
            if (sid & 1) == (0 if conn.outgoing else 1) or sid <= conn.last_peer_stream:
                return  # one of ours, or the peer's, that is over: late data
            conn.last_peer_stream = sid
            self._next_stream += 1
            stream = Stream(self, self._next_stream, conn, sid, incoming=True)
            conn.streams[sid] = stream
            self._totals.streams_opened += 1
        if stream.error is not None:
            return
        state = stream.state
        if state == _OPEN:
            recv = stream.recv
            recv += data
            if stream.collect:
                if len(recv) > stream.collect:
                    self._refuse_stream(stream, StreamCode.TOO_LARGE, Cause.MESSAGE_TOO_LARGE)
                    return
                self._credit(stream)
        elif state == _HEADER:
            stream.recv += data
            if not self._on_header(stream, end):
                return
        elif state == _OPENING:
            if not data and not end:
                return
            stream.recv += data
            if stream.recv:
                if stream.recv[0] != STREAM_ACCEPT:
                    stream.abort(StreamCode.BAD_HEADER, "the peer answered our stream header wrong")
                    self._touched(stream)
                    return
                del stream.recv[:1]
                stream.consumed = 1
                stream.state = _OPEN
        else:  # held: the peer is not proven yet
            if not self._unproven.take(len(data)):
                self._refuse_stream(stream, StreamCode.BUSY, Cause.REFUSED)
                return
            stream.held += len(data)
            stream.recv += data
        if end:
            stream.eof = True
            if stream.incoming and stream.collect and stream.state == _OPEN:
                self.stream_arrivals.append(stream)  # the whole request
        self._touched(stream)

    def _on_header(self, stream: Stream, end: bool) -> bool:
        """A new stream's first bytes: True once accepted or held (its data
        after the header is in ``recv``); False while incomplete or refused."""
        try:
            parsed = decode_stream_header(stream.recv)
        except WireError as exc:
            self._refuse_stream(stream, StreamCode.BAD_HEADER, Cause.PROTOCOL_ERROR, str(exc))
            return False
        if parsed is None:
            if end:
                self._refuse_stream(stream, StreamCode.BAD_HEADER, Cause.PROTOCOL_ERROR)
            return False
        stream.mode, stream.protocol, size = parsed
        del stream.recv[:size]
        stream.consumed = stream.header_size = size
        proto = self.protocols.get(stream.protocol)
        conn = stream.conn
        if proto is None:
            self._bump("streams refused: no handler")
            self._refuse_stream(stream, StreamCode.NO_HANDLER, Cause.NO_HANDLER)
            return False
        if conn.incoming_streams >= self.max_streams_per_peer:
            self._bump("streams refused: per-peer limit")
            self._refuse_stream(stream, StreamCode.BUSY, Cause.REFUSED)
            return False
        if proto.active >= proto.max_streams:
            self._bump("streams refused: per-protocol limit")
            self._refuse_stream(stream, StreamCode.BUSY, Cause.REFUSED)
            return False
        conn.incoming_streams += 1
        proto.active += 1
        stream.counted = True
        if proto.kind is StreamMode.REQUEST:
            stream.collect = proto.max_request_size
            if len(stream.recv) > stream.collect:
                self._refuse_stream(stream, StreamCode.TOO_LARGE, Cause.MESSAGE_TOO_LARGE)
                return False
        record = conn.record
        if record is None or not record.connected:
            if not self._unproven.take(len(stream.recv)):
                self._refuse_stream(stream, StreamCode.BUSY, Cause.REFUSED)
                return False
            stream.held = len(stream.recv)
            stream.state = _HELD
            self._bump("streams held: peer not proven yet")
            return True
        self._accept_stream(stream, record)
        return True

    def _accept_stream(self, stream: Stream, record: Record) -> None:
        self._unproven.give(stream.held)
        stream.held = 0
        stream.state = _OPEN
        stream.peer = record.peer()
        if stream.mode is StreamMode.STREAM:
            stream.conn.quic.send_stream_data(stream.sid, bytes([STREAM_ACCEPT]))
            self._dirty.add(stream.conn)
        if stream.collect:
            if len(stream.recv) > stream.collect:
                self._refuse_stream(stream, StreamCode.TOO_LARGE, Cause.MESSAGE_TOO_LARGE)
                return
            if stream.eof:
                self.stream_arrivals.append(stream)
        else:
            self.stream_arrivals.append(stream)
        self._credit(stream)

    def _streams_proven(self, record: Record) -> None:
        """The peer is connected now: its held streams go to their handlers."""
        for conn in (record.out, record.inn):
            if conn is None:
                continue
            for stream in list(conn.streams.values()):
                if stream.state == _HELD and stream.error is None:
                    self._accept_stream(stream, record)
                    self._touched(stream)

    def _refuse_stream(
        self, stream: Stream, code: StreamCode, cause: Cause, detail: str = ""
    ) -> None:
        """Resets and stops a stream the peer opened (or whose reply is too
        large): it ends here, the peer reads ``code``."""
        stream.abort(code, detail or f"refused: {code.name.lower()}")
        stream.error = Reason(cause, detail or f"refused: {code.name.lower()}")

    # ------------------------------------------------------------ bookkeeping
    def _credit(self, stream: Stream) -> None:
        """More credit for the peer once the application (or a request
        being collected) took a quarter window off what it had."""
        if stream.state != _OPEN or stream.error is not None:
            return
        if stream.collect:
            # What is buffered counts as read, up to the limit (+1: a byte
            # beyond it is how an oversized request shows itself).
            cap = stream.header_size + stream.collect + 1
            target = min(stream.header_size + len(stream.recv) + STREAM_WINDOW, cap)
            due = target - stream.granted >= _GRANT_STEP or target == cap
        else:
            target = stream.consumed + STREAM_WINDOW
            due = target - stream.granted >= _GRANT_STEP
        if due and target > stream.granted:
            stream.granted = target
            if stream.conn.quic.grant(stream.sid, target):
                self._dirty.add(stream.conn)

    def _touched(self, stream: Stream) -> None:
        """Something changed for ``stream``: its waiters look again, and a
        stream over on both sides leaves its connection's table."""
        self._dirty.add(stream.conn)
        if stream.want_read or stream.want_drain:
            stream.want_read = stream.want_drain = False
            self._draining.discard(stream)
            self.stream_wakes.append(stream)
        if (
            not stream.finished
            and (stream.eof or stream.error is not None)
            and (stream.send_done or stream.send_error is not None)
        ):
            self._finish(stream)

    def _finish(self, stream: Stream) -> None:
        stream.finished = True
        conn = stream.conn
        if conn.streams.get(stream.sid) is stream:
            del conn.streams[stream.sid]
        if stream.held:
            self._unproven.give(stream.held)
            stream.held = 0
        if stream.counted:
            stream.counted = False
            conn.incoming_streams -= 1
            proto = self.protocols.get(stream.protocol)
            if proto is not None:
                proto.active -= 1

    def _check_draining(self) -> None:
        """Wakes writers whose backlog fell (acknowledgements arrived)."""
        for stream in list(self._draining):
            if stream.writable or stream.conn.link.down is not None:
                self._touched(stream)

    def _streams_lost(self, conn: Conn, reason: Reason) -> None:
        """The connection ended: every stream on it fails."""
        lost = reason.wrap("connection lost: ")
        for stream in list(conn.streams.values()):
            if not stream.eof and stream.error is None:
                stream.error = lost
                if stream.state == _OPENING:
                    stream.refused = True
            if not stream.send_done:
                stream.send_error = lost
                stream.send_done = True
            self._touched(stream)
        conn.streams.clear()
