"""A user-space UDP forwarder on loopback that plays a NAT for one client.

::

    client ──> listen_addr (127.0.0.1:A) [forwarder] outside_addr (127.0.0.1:B) ──> server
    client <──                                                                  <── server

Datagrams from the client to ``listen_addr`` leave for the server from the
"outside" socket; datagrams from the server to the outside socket go back to
the client. The server only ever sees ``outside_addr``: the client's address
as a NAT would map it. :meth:`UdpForwarder.rebind` replaces the outside socket
by a fresh one on another port and closes the old one (its port is free for
anyone to bind afterwards): a NAT rebinding, as the server sees it.

Like a NAT it filters: only the server may answer on the outside socket, and
only the first address that sent to ``listen_addr`` is the client (datagrams
from anyone else are counted and dropped). With ``drop`` set it forwards
nothing (a black hole, both ways), to measure recovery from an outage.

Nothing is buffered without bound: each direction has a queue of
``queue_datagrams`` datagrams drained by its own task (which holds at most
one more); a datagram arriving at a full queue, or finding the socket's write
buffer over ``max_write_buffer`` bytes, is dropped and counted (as a router
drops, never blocking the sender). ``pause()`` holds datagrams in those
queues until ``resume()``: a stalled path that loses what does not fit.

Use it as ``async with UdpForwarder(server_addr) as fwd:`` (or ``start()`` and
``aclose()``); every counter is in :attr:`UdpForwarder.counts`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

Address = tuple[str, int]
OnDatagram = Callable[["_Socket", bytes, Address], None]


class _Socket(asyncio.DatagramProtocol):
    """One bound UDP socket; hands every datagram to ``on_datagram`` and
    resolves ``closed`` once the transport has released its socket."""

    def __init__(self, on_datagram: OnDatagram, counts: Counter[str], name: str) -> None:
        self.on_datagram = on_datagram
        self.counts = counts
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(self, data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # Loopback reports ICMP port unreachable as ConnectionRefusedError on
        # the next receive: a lost datagram, as on a real network.
        self.counts[f"{self.name} socket errors"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def addr(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    async def aclose(self) -> None:
        if self.transport is not None:
            self.transport.close()
            await self.closed


async def _bind(on_datagram: OnDatagram, counts: Counter[str], name: str, addr: Address) -> _Socket:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(
        lambda: _Socket(on_datagram, counts, name), local_addr=addr
    )
    return proto


class UdpForwarder:
    """Forwards one client's datagrams to ``server`` and the server's replies
    back, as a NAT would (see the module's docstring).

    - ``listen_addr``: where the client sends (fixed for the forwarder's life).
    - ``outside_addr``: where the server sees the client now.
    - ``old_port``: the outside port before the last :meth:`rebind` (None
      before the first); it is closed and free to bind.
    - ``client_addr``: the client, once it has sent (None before).
    - ``drop``: when True, every datagram either way is dropped (counted as
      ``"blackholed"``).
    - ``counts``: ``"to server"``, ``"to client"`` (datagrams forwarded),
      ``"blackholed"``, ``"queue full"``, ``"write buffer full"``,
      ``"not the client"``, ``"not the server"``, ``"socket closed"``,
      ``"old mapping"`` (received by the socket a rebinding replaced),
      ``"inside socket errors"``, ``"outside socket errors"``, ``"rebinds"``.
    """

    def __init__(
        self,
        server: Address,
        *,
        host: str = "127.0.0.1",
        listen_port: int = 0,
        queue_datagrams: int = 256,
        max_write_buffer: int = 256 * 1024,
    ) -> None:
        if queue_datagrams < 1 or max_write_buffer < 1:
            raise ValueError("queue_datagrams and max_write_buffer must be positive")
        self.server: Address = (server[0], server[1])
        self.host = host
        self.listen_port = listen_port
        self.max_write_buffer = max_write_buffer
        self.drop = False
        self.counts: Counter[str] = Counter()
        self.client_addr: Address | None = None
        self.old_port: int | None = None
        self._queue_datagrams = queue_datagrams
        self._inside: _Socket | None = None
        self._outside: _Socket | None = None
        self._to_server: asyncio.Queue[bytes] | None = None
        self._to_client: asyncio.Queue[bytes] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rebinding = asyncio.Lock()
        self._flowing = asyncio.Event()
        self._flowing.set()

    # ------------------------------------------------------------ lifetime
    async def start(self) -> UdpForwarder:
        if self._inside is not None:
            raise RuntimeError("forwarder already started")
        self._to_server = asyncio.Queue(self._queue_datagrams)
        self._to_client = asyncio.Queue(self._queue_datagrams)
        try:
            self._inside = await _bind(
                self._from_inside, self.counts, "inside", (self.host, self.listen_port)
            )
            self._outside = await _bind(self._from_outside, self.counts, "outside", (self.host, 0))
        except BaseException:
            await self.aclose()
            raise
        self._tasks = [
            asyncio.create_task(self._pump(self._to_server, self._server_side)),
            asyncio.create_task(self._pump(self._to_client, self._client_side)),
        ]
        return self

    async def aclose(self) -> None:
        """Stops forwarding and closes every socket (idempotent)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for sock in (self._inside, self._outside):
            if sock is not None:
                await sock.aclose()

    async def __aenter__(self) -> UdpForwarder:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ addresses
    @property
    def listen_addr(self) -> Address:
        """Where the client sends (the server's address, as the client knows it)."""
        assert self._inside is not None, "forwarder not started"
        return self._inside.addr

    @property
    def outside_addr(self) -> Address:
        """The client's address as the server sees it now."""
        assert self._outside is not None, "forwarder not started"
        return self._outside.addr

    async def rebind(self) -> Address:
        """A NAT rebinding: a new outside socket on a new port takes over (the
        queued datagrams leave from it), then the old one is closed and its
        port freed (``old_port``). Returns the new ``outside_addr``."""
        async with self._rebinding:
            old = self._outside
            assert old is not None, "forwarder not started"
            # Bound while the old socket still holds its port: never the same.
            new = await _bind(self._from_outside, self.counts, "outside", (self.host, 0))
            self._outside = new
            self.old_port = old.addr[1]
            await old.aclose()
            self.counts["rebinds"] += 1
            return new.addr

    # ------------------------------------------------------------ forwarding
    def _from_inside(self, sock: _Socket, data: bytes, addr: Address) -> None:
        if self.client_addr is None:
            self.client_addr = addr
        elif addr != self.client_addr:
            self.counts["not the client"] += 1
            return
        self._enqueue(self._to_server, data)

    def _from_outside(self, sock: _Socket, data: bytes, addr: Address) -> None:
        if sock is not self._outside:
            # A datagram the old socket had already received when it was
            # replaced: the mapping is gone, so is the datagram.
            self.counts["old mapping"] += 1
            return
        if addr != self.server:
            self.counts["not the server"] += 1
            return
        self._enqueue(self._to_client, data)

    def _enqueue(self, queue: asyncio.Queue[bytes] | None, data: bytes) -> None:
        assert queue is not None
        if self.drop:
            self.counts["blackholed"] += 1
            return
        try:
            queue.put_nowait(data)
        except asyncio.QueueFull:
            self.counts["queue full"] += 1

    def _server_side(self, data: bytes) -> None:
        self._send(self._outside, data, self.server, "to server")

    def _client_side(self, data: bytes) -> None:
        if self.client_addr is not None:
            self._send(self._inside, data, self.client_addr, "to client")

    def _send(self, sock: _Socket | None, data: bytes, to: Address, counter: str) -> None:
        if self.drop:
            self.counts["blackholed"] += 1
            return
        transport = sock.transport if sock is not None else None
        if transport is None or transport.is_closing():
            self.counts["socket closed"] += 1
            return
        # (It is a WriteTransport too; typeshed's DatagramTransport omits this.)
        if cast(asyncio.WriteTransport, transport).get_write_buffer_size() > self.max_write_buffer:
            self.counts["write buffer full"] += 1
            return
        transport.sendto(data, to)
        self.counts[counter] += 1

    def pause(self) -> None:
        """Holds datagrams in the (bounded) queues instead of sending them;
        what does not fit is dropped (``"queue full"``)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Sends what :meth:`pause` held, and forwards as before."""
        self._flowing.set()

    def queued(self) -> int:
        """Datagrams waiting in the queues now (both directions)."""
        return sum(q.qsize() for q in (self._to_server, self._to_client) if q is not None)

    async def _pump(self, queue: asyncio.Queue[bytes], send: Callable[[bytes], None]) -> None:
        while True:  # until aclose() cancels it
            data = await queue.get()
            await self._flowing.wait()
            send(data)
