"""The sans-IO protocol engine: bytes and ``now`` in; datagrams, one
deadline, events and command results out. No sockets, clocks, tasks or files
(tests/test_layering.py holds every module here to that)."""

from __future__ import annotations

from .engine import Engine
from .events_queue import EventQueue
from .state import ConnectionInfo, RelaySessionInfo

__all__ = ["ConnectionInfo", "Engine", "EventQueue", "RelaySessionInfo"]
