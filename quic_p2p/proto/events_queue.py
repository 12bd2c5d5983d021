"""The user's events, in order, bounded where a peer could fill it."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from ..events import Datagram, Event, EventQueueWarning, Finish, NewMessage

log = logging.getLogger("quic_p2p.events")


class EventQueue:
    """Events in order. Protocol events (connections, outcomes) are always
    queued; user messages only while fewer than ``capacity`` of them wait, so
    a user who stops reading makes peers see their messages refused (unsent),
    never silently lost and never an unbounded buffer. Other events do not
    count against ``capacity``: a user who never reads stays able to receive
    as soon as it does. ``on_push`` (the driver's) runs after each push."""

    def __init__(self, capacity: int, on_push: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self.on_push = on_push
        self._items: deque[Event] = deque()
        self._messages = 0  # NewMessage events among _items
        #: The most user messages ever queued at once.
        self.high_water = 0
        #: An ``EventQueueWarning`` went out and the queue has not drained
        #: below half its capacity since (one warning per episode).
        self.warned = False
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def messages(self) -> int:
        """User messages queued now (what ``capacity`` bounds)."""
        return self._messages

    def has_room(self) -> bool:
        """Whether one more user message may be queued."""
        return self._messages < self.capacity

    def push(self, event: Event) -> None:
        if self.closed:
            return
        self._items.append(event)
        if isinstance(event, NewMessage):
            self._messages += 1
            if self._messages > self.high_water:
                self.high_water = self._messages
            if not self.warned and self._messages * 5 >= self.capacity * 4:
                self._warn()
        if isinstance(event, Finish):
            self.closed = True
        if self.on_push is not None:
            self.on_push()

    def get_nowait(self) -> Event | None:
        """The next event if one is queued, else None."""
        if not self._items:
            return None
        event = self._items.popleft()
        if isinstance(event, NewMessage):
            self._messages -= 1
            if self.warned and self._messages * 2 < self.capacity:
                self.warned = False
        return event

    def _warn(self) -> None:
        """80% full: the reader is falling behind, and past 100% messages
        are refused (their senders see them unsent): say so once."""
        self.warned = True
        log.warning(
            "events() is %d%% full (%d of %d user messages): read it faster, or"
            " messages will be refused",
            100 * self._messages // self.capacity,
            self._messages,
            self.capacity,
        )
        self._items.append(EventQueueWarning(self._messages, self.capacity))


class DatagramQueue:
    """Datagrams received, oldest first, at most ``capacity``: when the user
    does not keep up, new ones are dropped and counted (``dropped``), as a
    full socket buffer would; datagrams promise no delivery."""

    def __init__(self, capacity: int, on_push: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self.on_push = on_push
        self._items: deque[Datagram] = deque()
        self.dropped = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def push(self, datagram: Datagram) -> None:
        if self.closed:
            return
        if len(self._items) >= self.capacity:
            self.dropped += 1
            return
        self._items.append(datagram)
        if self.on_push is not None:
            self.on_push()

    def close(self) -> None:
        self.closed = True
        if self.on_push is not None:
            self.on_push()

    def get_nowait(self) -> Datagram | None:
        return self._items.popleft() if self._items else None
