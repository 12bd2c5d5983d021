"""What a caller pinned (a key, or an exact certificate) and whether a peer
holds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..peer import NodeInfo, PeerId, PeerKind
from ..reasons import Cause, Reason
from . import certs

if TYPE_CHECKING:
    from .state import Record


@dataclass(frozen=True)
class Pin:
    """The identity a connect or send insists on: a key (``peer_id``), and
    optionally the exact certificate (``cert``, whose key is ``peer_id``)."""

    peer_id: PeerId | None = None
    cert: bytes = b""

    @classmethod
    def of(cls, node: NodeInfo | None) -> Pin:
        """What a NodeInfo pins: its certificate exactly, else its id."""
        if node is None:
            return NO_PIN
        return cls(node.peer_id, node.peer_cert_der)

    def __bool__(self) -> bool:
        return self.peer_id is not None


NO_PIN = Pin()


def pin_problem(record: Record, pin: Pin) -> Reason | None:
    """Why a connected peer does not hold ``pin`` (None: no pin, or it does).
    A record's id and certificate are what its peer proved over TLS."""
    if not pin:
        return None
    if record.kind is PeerKind.CLIENT and pin.cert:
        return Reason(
            Cause.WRONG_ROLE,
            "the peer at that address is a Client (it holds no pinned certificate)",
        )
    if record.peer_id != pin.peer_id:
        presented = record.peer_id.short() if record.peer_id is not None else "none"
        assert pin.peer_id is not None
        return Reason(
            Cause.CERTIFICATE,
            "the peer there holds another key than the one pinned "
            f"(it proved id {presented}..., pinned {pin.peer_id.short()}...)",
        )
    if pin.cert and record.cert != pin.cert:
        presented = certs.fingerprint(record.cert).hex()[:16] if record.cert else "none"
        pinned = certs.fingerprint(pin.cert).hex()[:16]
        return Reason(
            Cause.CERTIFICATE,
            "the peer presents another certificate than the one pinned "
            f"(presented sha256 {presented}..., pinned {pinned}...)",
        )
    return None
