"""A bounded, ordered event channel between the endpoint and its user."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from .events import Event, Finish, NewMessage


class EventChannel:
    """Events in order. Protocol events (connections, outcomes) are always
    queued; user messages only while fewer than ``capacity`` of them wait, so
    a user who stops reading makes peers see their messages refused (unsent),
    never silently lost and never an unbounded buffer. Other events do not
    count against ``capacity``: a user who never reads stays able to receive
    as soon as it does."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Event] = deque()
        self._messages = 0  # NewMessage events among _items
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def has_room(self) -> bool:
        """Whether one more user message may be queued."""
        return self._messages < self.capacity

    def push(self, event: Event) -> None:
        if self._closed:
            return
        if isinstance(event, NewMessage):
            self._messages += 1
        self._items.append(event)
        if isinstance(event, Finish):
            self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Event | None:
        """The next event if one is queued, else None."""
        if not self._items:
            return None
        event = self._items.popleft()
        if isinstance(event, NewMessage):
            self._messages -= 1
        return event

    async def get(self) -> Event:
        while not self._items:
            if self._closed:
                return Finish()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self.get_nowait()
        assert event is not None
        return event

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.get()
            yield event
            if isinstance(event, Finish):
                return
