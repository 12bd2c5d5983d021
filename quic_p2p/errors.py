"""Exception hierarchy.

``QuicP2pError`` and its subclasses are what *our caller* caused (bad arguments,
bad configuration, a call in the wrong state). ``RemoteProtocolError`` is what a
*remote peer* did wrong: the endpoint catches it, closes that peer's connection
with ``error_code`` and reports a ``ConnectionFailure``; it never escapes to the
application (h11's LocalProtocolError / RemoteProtocolError split, with h2's
error codes).
"""

from __future__ import annotations

from .reasons import Reason


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


#: A peer's (host, port); the same type as ``peer.Address``, spelled out here
#: so this module imports nothing of ours but ``reasons``.
_Addr = tuple[str, int]


class ConnectionFailedError(QuicP2pError):
    """``connect_to`` did not end with a connected peer; ``reason`` says why
    (``reason.cause`` to decide on, the text to print)."""

    def __init__(self, peer_addr: _Addr, reason: Reason) -> None:
        super().__init__(f"connection to {peer_addr[0]}:{peer_addr[1]} failed: {reason}")
        self.peer_addr = peer_addr
        self.reason = reason


class NoRendezvousError(ConnectionFailedError):
    """The rendezvous cannot help at all (not connected, does not know the
    peer): no further punch or relay attempt is made."""


class EchoError(QuicP2pError):
    """``our_connection_info`` could not learn our address."""


class EchoDisagreementError(EchoError):
    """Nodes we asked saw us at different addresses (NAT, or a lying node)."""

    def __init__(self, answers: dict[_Addr, _Addr]) -> None:
        seen = ", ".join(f"{k[0]}:{k[1]} saw {v[0]}:{v[1]}" for k, v in answers.items())
        super().__init__(f"echo answers disagree: {seen}")
        self.answers = answers


class BootstrapError(QuicP2pError):
    """``bootstrap`` found no contact; ``reasons`` maps each tried address to why."""

    def __init__(self, message: str, reasons: dict[_Addr, Reason]) -> None:
        detail = "; ".join(f"{a[0]}:{a[1]}: {r}" for a, r in reasons.items())
        super().__init__(f"{message}: {detail}" if detail else message)
        self.reasons = reasons


class EndpointClosedError(QuicP2pError):
    """The endpoint is not running (not started, or closed)."""


class DatagramError(QuicP2pError):
    """A datagram could not be sent: not connected to that peer, the peer
    does not take datagrams, or it is larger than ``max_datagram_size``."""


class StreamError(QuicP2pError):
    """A stream failed; ``reason`` says why (``reason.cause`` to decide on)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(str(reason))
        self.reason = reason


class StreamRefusedError(StreamError):
    """The peer would not open the stream: no handler for its protocol
    (``Cause.NO_HANDLER``), its stream limits (``Cause.REFUSED``), or it
    could not be reached (``Cause.NOT_CONNECTED``)."""


class StreamResetError(StreamError, ConnectionResetError):
    """The stream ended abnormally while in use: the peer reset or stopped
    it (``Cause.STREAM_RESET``), we aborted it, or its connection ended. A
    ``ConnectionResetError`` too, as asyncio's streams raise."""

    def __init__(self, reason: Reason) -> None:
        StreamError.__init__(self, reason)


class RequestError(QuicP2pError):
    """A ``request`` got no reply; ``reason.cause`` says why: no handler
    (``NO_HANDLER``), no reply in time (``NO_ANSWER``), request or reply above
    a size limit (``MESSAGE_TOO_LARGE``), the handler raised
    (``HANDLER_FAILED``; what it raised is not sent), the peer's limits
    (``REFUSED``), or the connection (``NOT_CONNECTED``,
    ``CONNECTION_LOST``)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(str(reason))
        self.reason = reason
