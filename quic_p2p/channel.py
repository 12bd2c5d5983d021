"""A bounded, ordered event channel between the endpoint and its user."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from .events import Event, Finish


class EventChannel:
    """Events in order. Protocol events (connections, outcomes) are always
    queued; user messages only while fewer than ``capacity`` events wait, so a
    user who stops reading makes peers see their messages refused (unsent),
    never silently lost and never an unbounded buffer."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def has_room(self) -> bool:
        return len(self._items) < self.capacity

    def push(self, event: Event) -> None:
        if self._closed:
            return
        self._items.append(event)
        if isinstance(event, Finish):
            self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Event:
        while not self._items:
            if self._closed:
                return Finish()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.get()
            yield event
            if isinstance(event, Finish):
                return
