"""Events an endpoint reports, in order, on ``QuicP2p.events()``.

Frozen dataclasses with the seed's names and fields (the seed's ``err`` is
spelled ``error``), plus ``peer_id`` on each that names a peer: the key the
peer proved (None only for a peer never reached, whose id is unknown).
``peer_addr`` is the address we last saw it at. ``Event`` is their union.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .peer import Address, NodeInfo, Peer, PeerId
from .reasons import NO_REASON, Reason
from .stats import PeerPath


@dataclass(frozen=True)
class BootstrapFailure:
    """Every bootstrap contact failed; ``reasons`` maps each to why."""

    reasons: dict[Address, Reason] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class BootstrappedTo:
    """The first bootstrap contact that completed the role handshake."""

    node: NodeInfo


@dataclass(frozen=True)
class ConnectionFailure:
    """A connection attempt failed, or an established peer was lost;
    ``error.cause`` says what kind of failure, ``error`` itself the detail."""

    peer_addr: Address
    error: Reason
    peer_id: PeerId | None = None


@dataclass(frozen=True)
class SentUserMessage:
    """The peer received ``msg`` (it acknowledged it)."""

    peer_addr: Address
    msg: bytes = field(repr=False)
    token: int
    peer_id: PeerId | None = None


@dataclass(frozen=True)
class UnsentUserMessage:
    """``msg`` was not delivered; it is handed back. ``reason`` says why
    (``reason.cause`` to decide on, the text to print)."""

    peer_addr: Address
    msg: bytes = field(repr=False)
    token: int
    reason: Reason = field(default=NO_REASON, compare=False)
    peer_id: PeerId | None = None


@dataclass(frozen=True)
class ConnectedTo:
    """``peer`` is connected: a Client at once, a Node once both directions are up.
    ``relay``: the Node our packets to ``peer`` go through, or None (direct)."""

    peer: Peer
    relay: Address | None = None

    @property
    def peer_id(self) -> PeerId | None:
        return self.peer.peer_id


@dataclass(frozen=True)
class UpgradedToDirect:
    """Our packets to ``peer_addr`` no longer go through ``relay``: a later hole
    punch found a direct path (the connection and its messages carry on)."""

    peer_addr: Address
    relay: Address
    peer_id: PeerId | None = None


@dataclass(frozen=True)
class NewMessage:
    """A user message from ``peer_addr``."""

    peer_addr: Address
    msg: bytes = field(repr=False)
    peer_id: PeerId | None = None


@dataclass(frozen=True)
class PeerAddressChanged:
    """A connected peer's packets now come from (and ours go to) another
    address: a NAT rebinding or a migration. Same peer, same connection."""

    peer_id: PeerId
    old: Address
    new: Address


@dataclass(frozen=True)
class PathChanged:
    """How our packets reach a connected peer changed: relayed to direct (a
    hole punch worked; ``UpgradedToDirect`` says so too), or to another
    address (``PeerAddressChanged`` too). Same peer, same connection."""

    peer_id: PeerId | None
    old: PeerPath
    new: PeerPath


@dataclass(frozen=True)
class EventQueueWarning:
    """``events()`` holds ``queued`` user messages of at most ``capacity``
    (80% or more): past the capacity, new messages are refused and their
    senders see them unsent. Once per episode (again only after the queue
    drained below half)."""

    queued: int
    capacity: int


@dataclass(frozen=True)
class Finish:
    """The endpoint has closed; no event follows."""


@dataclass(frozen=True)
class Datagram:
    """An unreliable datagram from a connected peer (``QuicP2p.datagrams()``;
    RFC 9221): delivered at most once, in any order, or not at all."""

    peer_id: PeerId | None
    peer_addr: Address
    data: bytes = field(repr=False)


Event = (
    BootstrapFailure
    | BootstrappedTo
    | ConnectionFailure
    | SentUserMessage
    | UnsentUserMessage
    | ConnectedTo
    | NewMessage
    | UpgradedToDirect
    | PeerAddressChanged
    | PathChanged
    | EventQueueWarning
    | Finish
)
