"""The asyncio driver: the ``QuicP2p`` endpoint over the sans-IO engine."""

from __future__ import annotations

from .endpoint import QuicP2p

__all__ = ["QuicP2p"]
