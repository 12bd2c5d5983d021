"""Whether a peer is the holder of a certificate someone pinned or claimed."""

from __future__ import annotations

from ..peer import PeerKind
from ..reasons import Cause, Reason
from . import certs, tls
from .state import Record


def pin_problem(record: Record, pin: bytes) -> Reason | None:
    """Why a connected peer is not the holder of the pinned certificate
    ``pin`` (None: no pin, or it is). A record's certificate is the one its
    peer proved on a TLS connection with us."""
    if not pin or record.cert == pin:
        return None
    if record.kind is PeerKind.CLIENT:
        return Reason(
            Cause.WRONG_ROLE,
            "the peer at that address is a Client (it holds no pinned certificate)",
        )
    if not record.cert:
        # Dialled without a pin and never told its certificate (we are a
        # Client): check what it presented on our connection.
        out = record.out
        if out is not None and out.link.up:
            problem = tls.check_pinned_peer(out.quic, pin)
            return None if problem is None else Reason(Cause.CERTIFICATE, problem)
        return Reason(
            Cause.CERTIFICATE, "cannot tell which certificate the peer at that address holds"
        )
    presented = certs.fingerprint(record.cert).hex()[:16] if record.cert else "none"
    return Reason(
        Cause.CERTIFICATE,
        "the peer at that address presents another certificate than the one pinned "
        f"(presented sha256 {presented}..., pinned {certs.fingerprint(pin).hex()[:16]}...)",
    )


def claim_matches(record: Record, claimed: bytes) -> bool:
    """A Node's claimed certificate must be the one we know for that address:
    pinned when we dialled it, or presented on our own connection to it."""
    if record.cert:
        return record.cert == claimed
    out = record.out
    if out is not None and out.link.up:
        return tls.check_pinned_peer(out.quic, claimed) is None
    return True  # nothing known yet: our reverse connection will pin it
