"""Exception hierarchy.

``QuicP2pError`` and its subclasses are what *our caller* caused (bad arguments,
bad configuration, a call in the wrong state). ``RemoteProtocolError`` is what a
*remote peer* did wrong: the endpoint catches it, closes that peer's connection
with ``error_code`` and reports a ``ConnectionFailure``; it never escapes to the
application (h11's LocalProtocolError / RemoteProtocolError split, with h2's
error codes).
"""

from __future__ import annotations


class QuicP2pError(Exception):
    """Base class of every error the library raises to its caller."""


class RemoteProtocolError(Exception):
    """A peer sent something our protocol does not allow.

    ``error_code`` is the QUIC application error code we close its connection with.
    """

    error_code: int = 0x301  # wire.ErrorCode.PROTOCOL_VIOLATION; subclasses narrow it

    def __init__(self, message: str, *, error_code: int | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code
