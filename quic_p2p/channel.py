"""Waiting for what the engine queues: its events (``QuicP2p.events()``)
and the datagrams peers send (``QuicP2p.datagrams()``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Generic, Protocol, TypeVar

from .events import Datagram, Event, Finish
from .proto.events_queue import DatagramQueue, EventQueue

T = TypeVar("T", covariant=True)


class _Queue(Protocol[T]):
    closed: bool
    on_push: Callable[[], None] | None

    def __len__(self) -> int: ...
    def get_nowait(self) -> T | None: ...


class _Waiting(Generic[T]):
    """Readers of a queue wait until it has an item (or is closed)."""

    def __init__(self, queue: _Queue[T]) -> None:
        self._queue = queue
        self._waiter: asyncio.Future[None] | None = None
        queue.on_push = self._wake

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next(self) -> T | None:
        """The next item; None once the queue is closed and empty."""
        queue = self._queue
        while not len(queue):
            if queue.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return queue.get_nowait()


class EventChannel(_Waiting[Event]):
    """The async face of an ``EventQueue``; it ends with ``Finish``."""

    def __init__(self, queue: EventQueue) -> None:
        super().__init__(queue)
        self.queue = queue

    async def get(self) -> Event:
        event = await self._next()
        return Finish() if event is None else event

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.get()
            yield event
            if isinstance(event, Finish):
                return


class DatagramChannel(_Waiting[Datagram]):
    """The async face of a ``DatagramQueue``; it ends when the endpoint closes."""

    def __init__(self, queue: DatagramQueue) -> None:
        super().__init__(queue)
        self.queue = queue

    async def __aiter__(self) -> AsyncIterator[Datagram]:
        while (datagram := await self._next()) is not None:
            yield datagram
