"""Why something failed: a ``Cause`` to compare, with the words to print.

``UnsentUserMessage.reason``, ``ConnectionFailure.error`` and
``ConnectionFailedError.reason`` are ``Reason`` values: a ``str`` (the full,
printable detail, as before) that also carries ``.cause``, an enum member.
Code decides on the cause; people read the text::

    if outcome.reason.cause is Cause.SEND_TIMEOUT: ...
    print(outcome.reason)          # "send timed out: the peer acknowledged ..."
"""

from __future__ import annotations

import enum


class Cause(enum.Enum):
    """What kind of failure a ``Reason`` reports."""

    #: Our endpoint is not running (closed, or not started).
    ENDPOINT_CLOSED = "endpoint closed"
    #: The message is larger than we can send or the peer accepts.
    MESSAGE_TOO_LARGE = "message too large"
    #: No connection to that peer (and none can be made for this call).
    NOT_CONNECTED = "not connected"
    #: The peer has another role than needed (a Client where a Node is).
    WRONG_ROLE = "wrong role"
    #: A certificate is missing, invalid, refused, or not the pinned one.
    CERTIFICATE = "certificate"
    #: The peer refused (its limits, it is busy, it declined the message).
    REFUSED = "refused by the peer"
    #: One of our own limits (connections, pending punches) is reached.
    LIMIT = "our limit"
    #: The connection ended (the peer closed it, or QUIC did).
    CONNECTION_LOST = "connection lost"
    #: No packets from the peer within the idle timeout.
    IDLE_TIMEOUT = "idle timeout"
    #: A handshake (QUIC's, or our role handshake) did not complete in time.
    HANDSHAKE_TIMEOUT = "handshake timeout"
    #: The peer acknowledged nothing for the send timeout.
    SEND_TIMEOUT = "send timeout"
    #: A request (echo, punch, relay, reachability) was not answered in time.
    NO_ANSWER = "no answer"
    #: A Node could not be reached back (the reverse connection failed).
    NOT_REACHABLE = "not reachable"
    #: The peer broke our protocol (malformed or unexpected frames).
    PROTOCOL_ERROR = "protocol error"
    #: Closed on purpose (``disconnect_from``, or the peer disconnected).
    DISCONNECTED = "disconnected"
    #: The address or certificate is our own.
    SELF = "that is us"
    #: An IPv6 peer from an IPv4 socket, or the other way round.
    ADDRESS_FAMILY = "address family"
    #: The rendezvous cannot help (not connected, does not know the peer,
    #: refuses, or paces us).
    RENDEZVOUS = "rendezvous"
    #: Hole punching did not get through.
    PUNCH_FAILED = "hole punching failed"
    #: The relay refused, or the relay session ended.
    RELAY = "relay"
    #: Another connection took this one's place (a direct one, a relayed
    #: one, another bootstrap contact).
    REPLACED = "replaced"
    #: A peer's answer could not be used (malformed, or naming another peer).
    BAD_ANSWER = "bad answer"
    #: A rendezvous paces our requests (too many at once): try again later.
    RATE_LIMITED = "rate limited"
    #: The peer has no handler for the protocol a stream or request names.
    NO_HANDLER = "no handler"
    #: The peer's request handler raised (what it raised stays with the peer).
    HANDLER_FAILED = "handler failed"
    #: The peer reset or stopped a stream, or aborted it.
    STREAM_RESET = "stream reset"
    #: Anything else (a reason built without a cause).
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


class Reason(str):
    """A failure's printable detail (the ``str`` itself) and its ``cause``."""

    cause: Cause

    def __new__(cls, cause: Cause, detail: str = "") -> Reason:
        self = super().__new__(cls, detail or cause.value)
        self.cause = cause
        return self

    @property
    def detail(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Reason({self.cause.name}, {str.__repr__(self)})"

    def __reduce__(self) -> tuple[object, ...]:
        return (Reason, (self.cause, self.detail))

    def wrap(self, prefix: str) -> Reason:
        """The same cause, the detail said after ``prefix``."""
        return Reason(self.cause, f"{prefix}{self.detail}")


#: The reason of an outcome built without one.
NO_REASON = Reason(Cause.OTHER, "")
