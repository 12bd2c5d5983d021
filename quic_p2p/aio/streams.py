"""Streams and requests on asyncio: ``StreamReader`` / ``StreamWriter`` with
asyncio's method names over the engine's ``Stream``, the handlers, and
``request``."""

from __future__ import annotations

import asyncio
import logging
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..errors import (
    ConnectionFailedError,
    QuicP2pError,
    RequestError,
    StreamError,
    StreamRefusedError,
    StreamResetError,
)
from ..peer import NodeInfo, Peer, PeerId
from ..proto.limits import (
    DEFAULT_MAX_REPLY_SIZE,
    DEFAULT_MAX_REQUEST_SIZE,
    DEFAULT_MAX_STREAMS_PER_PROTOCOL,
    DEFAULT_REQUEST_TIMEOUT,
    DRAIN_LOW_WATER,
    HANDSHAKE_TIMEOUT,
)
from ..proto.streams import Stream
from ..proto.wire import StreamCode, StreamMode
from ..reasons import Cause, Reason
from .nat import Nat

log = logging.getLogger("quic_p2p.streams")

#: ``readuntil`` / ``readline`` give up (``asyncio.LimitOverrunError``) when
#: the separator is not within this many bytes, as asyncio's default.
STREAM_READ_LIMIT = 64 * 1024

StreamHandler = Callable[[Peer, "StreamReader", "StreamWriter"], Awaitable[None]]
RequestHandler = Callable[[Peer, bytes], Awaitable[bytes]]
PeerRef = Peer | NodeInfo | PeerId


class _Handle:
    """What a stream's reader and writer share: collected once both are."""

    __slots__ = ("__weakref__",)


class StreamReader:
    """The peer's side of a stream, read like ``asyncio.StreamReader``.

    Reading is what grants the peer room to send more: a peer can never have
    more than one stream window unread here. A stream the peer reset (or
    whose connection ended) raises ``StreamResetError`` once what arrived
    before has been read."""

    def __init__(self, owner: Streams, stream: Stream, limit: int = STREAM_READ_LIMIT) -> None:
        self._owner = owner
        self._stream = stream
        self._limit = limit
        self._handle: _Handle | None = None

    def at_eof(self) -> bool:
        """The peer ended its side and everything it sent was read."""
        s = self._stream
        return s.eof and not s.recv

    def exception(self) -> BaseException | None:
        s = self._stream
        return None if s.error is None else StreamResetError(s.error)

    async def _wait_readable(self) -> None:
        s = self._stream
        while not s.readable:
            await self._owner._stream_wait(s, drain=False)

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (at least one, b"" at the end); with ``n`` < 0,
        everything until the peer ends its side."""
        s = self._stream
        if n == 0:
            return b""
        if n < 0:
            parts: list[bytes] = []
            while True:
                await self._wait_readable()
                if s.recv:
                    parts.append(s.take(-1))
                    self._owner._after()
                elif s.eof:
                    return b"".join(parts)
                else:
                    s.raise_error()
        await self._wait_readable()
        if not s.recv:
            s.raise_error()
            return b""
        data = s.take(n)
        self._owner._after()
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; ``asyncio.IncompleteReadError`` if the peer
        ends its side first."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        s = self._stream
        parts: list[bytes] = []
        got = 0
        while got < n:
            await self._wait_readable()
            if not s.recv:
                s.raise_error()
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            part = s.take(n - got)
            parts.append(part)
            got += len(part)
            self._owner._after()
        return b"".join(parts)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Up to and including ``separator``; ``asyncio.IncompleteReadError``
        at the end without it, ``asyncio.LimitOverrunError`` when it is not
        within the reader's limit (the data stays to be read)."""
        if not separator:
            raise ValueError("Separator should be at least one-byte string")
        s = self._stream
        start = 0
        while True:
            at = s.recv.find(separator, start)
            if at >= 0:
                end = at + len(separator)
                if end > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is found, but chunk is longer than limit", at
                    )
                data = s.take(end)
                self._owner._after()
                return data
            if len(s.recv) > self._limit:
                raise asyncio.LimitOverrunError(
                    "Separator is not found, and chunk exceed the limit", len(s.recv)
                )
            if s.eof or s.error is not None:
                s.raise_error()
                rest = s.take(-1)
                self._owner._after()
                raise asyncio.IncompleteReadError(rest, None)
            start = max(0, len(s.recv) - len(separator) + 1)
            await self._owner._stream_wait(s, drain=False)

    async def readline(self) -> bytes:
        """A line with its b"\\n" (the rest at the end, as asyncio does)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            s = self._stream
            if s.recv.startswith(b"\n", exc.consumed):
                s.take(exc.consumed + 1)
            else:
                s.take(-1)
            self._owner._after()
            raise ValueError(exc.args[0]) from None

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line == b"":
            raise StopAsyncIteration
        return line


class StreamWriter:
    """Our side of a stream, written like ``asyncio.StreamWriter``: ``write``
    queues, ``drain`` waits while more than a couple of stream windows are
    unacknowledged (the peer reading slowly, or not at all, stops us there)."""

    def __init__(self, owner: Streams, stream: Stream) -> None:
        self._owner = owner
        self._stream = stream
        self._handle: _Handle | None = None

    @property
    def bytes_acknowledged(self) -> int:
        """Bytes written so far that the peer has acknowledged receiving
        (its QUIC stack has them; whether its application read them is up to
        the protocol): a progress bar's measure."""
        return self._stream.acknowledged

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"peer_id"``, ``"peer"`` (the ``Peer``), ``"peername"`` (its
        address), ``"protocol"`` (the stream's protocol name), ``"stream_id"``."""
        s = self._stream
        info: dict[str, Any] = {
            "peer_id": s.peer_id,
            "peer": s.peer,
            "peername": s.peer_addr,
            "protocol": s.protocol,
            "stream_id": s.sid,
        }
        return info.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queues ``data``; raises ``StreamResetError`` once the peer stopped
        reading (or the connection ended), ``StreamError`` after
        ``write_eof``/``close``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        self._stream.write(bytes(data))
        self._owner._after()

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Ends our side after what was written (the peer reads EOF)."""
        self._stream.write_eof()
        self._owner._after()

    def is_closing(self) -> bool:
        s = self._stream
        return s.send_done or s.send_error is not None

    async def drain(self) -> None:
        """Waits until the peer acknowledged enough of what we wrote; raises
        ``StreamResetError`` once it stopped reading (or the connection
        ended)."""
        s = self._stream
        if s.send_error is not None:
            raise StreamResetError(s.send_error)
        if not s.must_drain():
            return
        while not s.writable:
            await self._owner._stream_wait(s, drain=True)
        if s.send_error is not None:
            raise StreamResetError(s.send_error)

    def close(self) -> None:
        """Ends our side (after what was written) and stops reading the peer's."""
        self._stream.close()
        self._owner._after()

    def abort(self) -> None:
        """Resets the stream both ways at once: the peer's reads and writes
        raise ``StreamResetError``; what was not yet delivered is dropped."""
        self._stream.abort()
        self._owner._after()

    async def wait_closed(self) -> None:
        """Returns once everything we wrote was acknowledged by the peer (or
        the stream failed): after ``close``, the stream is over."""
        s = self._stream
        while s.send_error is None and s.backlog > 0 and s.conn.link.down is None:
            await self._owner._stream_wait(s, drain=True, low=0)


class Streams(Nat):
    """The stream, handler and request part of ``QuicP2p``."""

    def _init_streams(self) -> None:
        self._stream_handlers: dict[str, StreamHandler] = {}
        self._request_handlers: dict[str, RequestHandler] = {}
        #: Futures of readers / writers waiting, by stream id (and drain).
        self._stream_waits: dict[tuple[int, bool], asyncio.Future[None]] = {}

    # ------------------------------------------------------------ handlers
    def set_stream_handler(
        self,
        protocol: str,
        handler: StreamHandler | None,
        *,
        max_streams: int = DEFAULT_MAX_STREAMS_PER_PROTOCOL,
    ) -> None:
        """Streams peers open for ``protocol`` go to ``async def
        handler(peer, reader, writer)`` (like ``asyncio.start_server``'s
        callback), each in a task of this endpoint, cancelled when it closes.
        When the handler returns the stream is closed; if it raises, the
        stream is reset (the peer sees ``Cause.HANDLER_FAILED``). At most
        ``max_streams`` of them at once, from all peers (beyond, the opener
        gets ``StreamRefusedError``). ``None`` removes the handler: new
        streams are refused (no handler), open ones go on."""
        self._set_handler(protocol, handler, StreamMode.STREAM, max_streams, 0)

    def set_request_handler(
        self,
        protocol: str,
        handler: RequestHandler | None,
        *,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        max_streams: int = DEFAULT_MAX_STREAMS_PER_PROTOCOL,
    ) -> None:
        """Requests for ``protocol`` go to ``async def handler(peer, data) ->
        bytes``; what it returns is the reply. A request above
        ``max_request_size`` is refused before the handler sees it; a handler
        that raises is logged here and reported to the requester only as
        failed. ``None`` removes the handler."""
        self._set_handler(protocol, handler, StreamMode.REQUEST, max_streams, max_request_size)

    def _set_handler(
        self,
        protocol: str,
        handler: StreamHandler | RequestHandler | None,
        kind: StreamMode,
        max_streams: int,
        max_request_size: int,
    ) -> None:
        if not isinstance(protocol, str):
            raise TypeError("protocol must be a str")
        self._stream_handlers.pop(protocol, None)
        self._request_handlers.pop(protocol, None)
        if handler is None:
            self.engine.remove_protocol(protocol)
            return
        if not callable(handler):
            raise TypeError("handler must be an async function (or None)")
        self.engine.set_protocol(
            protocol, kind, max_streams=max_streams, max_request_size=max_request_size
        )
        if kind is StreamMode.STREAM:
            self._stream_handlers[protocol] = handler  # type: ignore[assignment]
        else:
            self._request_handlers[protocol] = handler  # type: ignore[assignment]

    # ------------------------------------------------------------ opening
    async def open_stream(
        self,
        peer: PeerRef,
        protocol: str,
        *,
        timeout: float = HANDSHAKE_TIMEOUT,  # noqa: ASYNC109 (the API's contract)
    ) -> tuple[StreamReader, StreamWriter]:
        """Opens a stream to ``peer`` for ``protocol`` (connecting to a Node
        first, as ``send`` does); returns once the peer accepted it. Raises
        ``StreamRefusedError`` (no handler there, its limits, not reachable)
        or ``TimeoutError`` when it neither accepts nor refuses within
        ``timeout`` seconds. Close the writer when done: a reader and writer
        dropped unclosed are closed for you, with a ``ResourceWarning``."""
        stream = await self._open(peer, protocol, StreamMode.STREAM, timeout)
        try:
            async with asyncio.timeout(timeout):
                while not stream.accepted and not stream.refused and stream.error is None:
                    await self._stream_wait(stream, drain=False)
        except BaseException:
            stream.abort(StreamCode.CANCELLED, "open_stream gave up")
            self._after()
            raise
        if not stream.accepted:
            stream.abort()
            self._after()
            raise StreamRefusedError(
                stream.error or Reason(Cause.STREAM_RESET, "the peer reset the stream")
            )
        reader, writer = StreamReader(self, stream), StreamWriter(self, stream)
        # Both dropped unclosed: the stream is closed for them (as asyncio
        # closes a collected StreamWriter's transport), not left holding its
        # slot in the peer's and the protocol's stream limits.
        handle = _Handle()
        reader._handle = writer._handle = handle
        weakref.finalize(handle, self._stream_dropped, stream).atexit = False
        return reader, writer

    async def _open(
        self,
        peer: PeerRef,
        protocol: str,
        mode: StreamMode,
        timeout: float,  # noqa: ASYNC109 (passed on to _reach)
        collect: int = 0,
    ) -> Stream:
        if not isinstance(peer, (Peer, NodeInfo, PeerId)):
            raise TypeError("peer must be a Peer, NodeInfo or PeerId")
        if self._transport is None or self.engine.closing:
            raise QuicP2pError("endpoint is not running")
        try:
            stream = self.engine.open_stream(self._now(), peer, protocol, mode, collect=collect)
        except StreamRefusedError:
            await self._reach(peer, timeout)
            stream = self.engine.open_stream(self._now(), peer, protocol, mode, collect=collect)
        self._after()
        return stream

    async def _reach(self, peer: PeerRef, timeout: float) -> None:  # noqa: ASYNC109
        """Connects to a Node we are not connected to (a Client peer that is
        gone cannot be reached: ``StreamRefusedError``)."""
        node: NodeInfo | None
        if isinstance(peer, PeerId):
            node = self.engine.resolve(peer)
        elif isinstance(peer, Peer):
            node = peer.node_info
        else:
            node = peer
        if node is None:
            raise StreamRefusedError(Reason(Cause.NOT_CONNECTED, "not connected to that peer"))
        try:
            async with asyncio.timeout(timeout):
                await self._connect_any(node)
        except ConnectionFailedError as exc:
            raise StreamRefusedError(exc.reason) from None

    # ------------------------------------------------------------ requests
    async def request(
        self,
        peer: PeerRef,
        data: bytes,
        protocol: str,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,  # noqa: ASYNC109 (the API's contract)
        max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
    ) -> bytes:
        """Sends ``data`` to the peer's request handler for ``protocol`` and
        returns its reply, all within ``timeout`` seconds (connecting first
        included). Raises ``RequestError``: its ``reason.cause`` tells no
        handler, no reply in time, too large (the request for the peer, or
        the reply for ``max_reply_size``), the handler failed, the peer's
        limits, or the connection."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        if not timeout > 0:
            raise QuicP2pError("timeout must be positive")
        stream: Stream | None = None
        try:
            async with asyncio.timeout(timeout):
                try:
                    stream = await self._open(
                        peer, protocol, StreamMode.REQUEST, timeout, collect=max_reply_size
                    )
                except StreamRefusedError as exc:
                    raise RequestError(exc.reason) from None
                stream.write(bytes(data), end=True)
                self._after()
                while not stream.eof and stream.error is None:
                    await self._stream_wait(stream, drain=False)
        except TimeoutError:
            if stream is not None:
                stream.abort(StreamCode.CANCELLED, "request timed out")
                self._after()
            raise RequestError(Reason(Cause.NO_ANSWER, f"no reply within {timeout:g} s")) from None
        except asyncio.CancelledError:
            if stream is not None:
                stream.abort(StreamCode.CANCELLED, "request cancelled")
                self._after()
            raise
        except StreamError as exc:
            raise RequestError(exc.reason) from None
        if stream.error is not None:
            raise RequestError(stream.error)
        return stream.take(-1)

    # ------------------------------------------------------------ from the engine
    def _stream_events(self) -> None:
        arrivals, wakes = self.engine.take_stream_events()
        waits = self._stream_waits
        for stream in wakes:
            for key in ((stream.id, False), (stream.id, True)):
                fut = waits.pop(key, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
        for stream in arrivals:
            if stream.collect:
                request_handler = self._request_handlers.get(stream.protocol)
                if request_handler is None:
                    stream.abort(StreamCode.NO_HANDLER)
                else:
                    self._spawn(self._serve_request(request_handler, stream))
            else:
                stream_handler = self._stream_handlers.get(stream.protocol)
                if stream_handler is None:
                    stream.abort(StreamCode.NO_HANDLER)
                else:
                    self._spawn(self._serve_stream(stream_handler, stream))

    async def _stream_wait(self, stream: Stream, *, drain: bool, low: int | None = None) -> None:
        """Until the engine lists ``stream`` as changed (data, end, error, or
        for ``drain`` room to write)."""
        loop = self._running_loop()
        key = (stream.id, drain)
        fut = self._stream_waits.get(key)
        if fut is None or fut.done():
            fut = self._stream_waits[key] = loop.create_future()
        if drain:
            self.engine.watch_drain(stream, DRAIN_LOW_WATER if low is None else low)
        else:
            stream.want_read = True
        try:
            await fut
        finally:
            if self._stream_waits.get(key) is fut:
                del self._stream_waits[key]

    def _stream_dropped(self, stream: Stream) -> None:
        # (Runs from the garbage collector, anywhere: the close waits for the
        # loop's next turn, outside whatever the engine was doing.)
        loop = self._loop
        if stream.finished or loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._close_dropped, stream)

    def _close_dropped(self, stream: Stream) -> None:
        if stream.finished or self._transport is None:
            return
        if not (stream.send_done and (stream.eof or stream.error is not None)):
            warnings.warn(
                f"stream {stream.protocol!r} to {stream.peer_addr} dropped without close()",
                ResourceWarning,
                stacklevel=1,
            )
        stream.close()
        self._after()

    async def _serve_stream(self, handler: StreamHandler, stream: Stream) -> None:
        assert stream.peer is not None
        reader, writer = StreamReader(self, stream), StreamWriter(self, stream)
        try:
            await handler(stream.peer, reader, writer)
        except asyncio.CancelledError:
            stream.abort(StreamCode.SHUTDOWN, "endpoint closing")
            raise
        except StreamError as exc:
            log.info("stream handler for %r: %s", stream.protocol, exc)
            stream.abort()
        except Exception:
            log.exception("stream handler for %r failed", stream.protocol)
            stream.abort(StreamCode.HANDLER_FAILED, "handler failed")
        else:
            stream.close()
        finally:
            self._after()

    async def _serve_request(self, handler: RequestHandler, stream: Stream) -> None:
        assert stream.peer is not None
        data = stream.take(-1)
        try:
            reply = await handler(stream.peer, data)
            if not isinstance(reply, (bytes, bytearray, memoryview)):
                raise TypeError(f"a request handler returns bytes, not {type(reply).__name__}")
        except asyncio.CancelledError:
            stream.abort(StreamCode.SHUTDOWN, "endpoint closing")
            self._after()
            raise
        except Exception:
            log.exception("request handler for %r failed", stream.protocol)
            stream.abort(StreamCode.HANDLER_FAILED, "handler failed")
        else:
            if stream.send_error is None and not stream.send_done:
                stream.write(bytes(reply), end=True)
        self._after()
