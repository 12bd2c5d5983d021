"""The engine's peer records, by id and by the address each was last seen at.

A record is one peer. Its id is known once a TLS handshake with it completed
(or from the start, when a dial pins one); until then it is found by the
address we dialled. The address index holds the record most recently seen
at each address: a new peer on an address that once belonged to another
simply takes that address over, while the other stays reachable by its id.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..peer import Address, NodeInfo, PeerId
from .state import Record


class PeerTable:
    def __init__(self) -> None:
        self._by_id: dict[PeerId, Record] = {}
        self._by_addr: dict[Address, Record] = {}
        #: Every live record, oldest first.
        self._all: dict[Record, None] = {}

    def __iter__(self) -> Iterator[Record]:
        return iter(list(self._all))

    def __len__(self) -> int:
        return len(self._all)

    def get(self, peer_id: PeerId | None) -> Record | None:
        return None if peer_id is None else self._by_id.get(peer_id)

    def at(self, addr: Address) -> Record | None:
        """The record last seen at ``addr``."""
        return self._by_addr.get(addr)

    def find(self, node: NodeInfo) -> Record | None:
        """The record for ``node``: by its id when it names one (or a dial to
        its address whose peer is not known yet), else by its address."""
        if node.peer_id is None:
            return self.at(node.peer_addr)
        record = self._by_id.get(node.peer_id)
        if record is None:
            other = self.at(node.peer_addr)
            if other is not None and other.peer_id is None:
                return other
        return record

    def lookup(self, peer_id: PeerId | None, addr: Address) -> Record | None:
        """By id when given, else by address."""
        return self.get(peer_id) if peer_id is not None else self.at(addr)

    def add(self, record: Record) -> Record:
        self._all[record] = None
        self._by_addr[record.addr] = record
        if record.peer_id is not None:
            self._by_id[record.peer_id] = record
        return record

    def set_id(self, record: Record, peer_id: PeerId) -> None:
        """The peer behind ``record`` proved ``peer_id`` (no other record has it)."""
        if record.peer_id is not None and self._by_id.get(record.peer_id) is record:
            del self._by_id[record.peer_id]
        record.peer_id = peer_id
        if record in self._all:
            self._by_id[peer_id] = record

    def move(self, record: Record, addr: Address) -> None:
        """The peer is now at ``addr``."""
        if self._by_addr.get(record.addr) is record:
            del self._by_addr[record.addr]
        record.addr = addr
        if record in self._all:
            self._by_addr[addr] = record

    def remove(self, record: Record) -> None:
        self._all.pop(record, None)
        if self._by_addr.get(record.addr) is record:
            del self._by_addr[record.addr]
        if record.peer_id is not None and self._by_id.get(record.peer_id) is record:
            del self._by_id[record.peer_id]
