"""Waiting for the engine's events (``QuicP2p.events()``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .events import Event, Finish
from .proto.events_queue import EventQueue


class EventChannel:
    """The async face of an ``EventQueue``: readers wait until it has an event."""

    def __init__(self, queue: EventQueue) -> None:
        self.queue = queue
        self._waiter: asyncio.Future[None] | None = None
        queue.on_push = self._wake

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Event:
        queue = self.queue
        while not len(queue):
            if queue.closed:
                return Finish()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = queue.get_nowait()
        assert event is not None
        return event

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.get()
            yield event
            if isinstance(event, Finish):
                return
