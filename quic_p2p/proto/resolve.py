"""Where a peer may be: sources that map a ``PeerId`` to its addresses.

``Engine.resolve`` asks the peer table first (where we see the peer now),
then each of ``Engine.resolvers`` in order: the bootstrap cache and the
hard-coded contacts by default. Discovery (a DHT, mDNS, peer exchange)
plugs in by adding a source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..peer import NodeInfo, PeerId


class Resolver(Protocol):
    """A source of contacts: the Node ``peer_id`` as this source knows it
    (addresses in the order to try them), or None."""

    def find(self, peer_id: PeerId) -> NodeInfo | None: ...


class StaticContacts:
    """Contacts given up front (``Config.hard_coded_contacts``), by id."""

    def __init__(self, contacts: Iterable[NodeInfo]) -> None:
        self._by_id = {c.peer_id: c for c in contacts if c.peer_id is not None}

    def find(self, peer_id: PeerId) -> NodeInfo | None:
        return self._by_id.get(peer_id)
