"""Role policy (sans-IO): per-peer connection states and what each role
handshake leads to.

A peer record has a *to-peer* side (our outgoing connection) and a
*from-peer* side (its incoming connection), as in the seed. A Node is
connected when both sides are established: it dialled us and we dialled it
back, at the address we saw and checking the certificate it claimed, which
proves it is reachable. A Client is connected over its one connection.

The decisions are transition tables over the two states; a combination not
in a table is a protocol error, answered with the error code it names.
"""

from __future__ import annotations

from enum import Enum, auto

from .wire import ErrorCode


class ToPeer(Enum):
    NONE = auto()
    NOT_NEEDED = auto()  # the peer is a Client: it is served on its own connection
    CONNECTING = auto()
    ESTABLISHED = auto()


class FromPeer(Enum):
    NONE = auto()
    NOT_NEEDED = auto()  # we are a Client: nobody connects to us
    ESTABLISHED = auto()


class Action(Enum):
    """What the endpoint does next."""

    DIAL_BACK = auto()  # prove the claimed Node reachable: connect to it
    COMPLETE = auto()  # both sides are up: the peer is connected
    WAIT = auto()  # the other side is still coming up
    REJECT = auto()  # close the new connection (error code alongside)


Decision = tuple[Action, ErrorCode | None]

#: A Node handshake arrives on a new incoming connection, by our to-peer state
#: (the from-peer side is NONE: a second incoming connection is a duplicate).
ON_NODE_HANDSHAKE: dict[ToPeer, Decision] = {
    ToPeer.NONE: (Action.DIAL_BACK, None),
    ToPeer.CONNECTING: (Action.WAIT, None),  # simultaneous connect: ours completes it
    ToPeer.ESTABLISHED: (Action.COMPLETE, None),
    ToPeer.NOT_NEEDED: (Action.REJECT, ErrorCode.ROLE_MISMATCH),  # it said Client before
}

#: A Client handshake arrives on a new incoming connection.
ON_CLIENT_HANDSHAKE: dict[ToPeer, Decision] = {
    ToPeer.NONE: (Action.COMPLETE, None),
    ToPeer.CONNECTING: (Action.REJECT, ErrorCode.ROLE_MISMATCH),  # we know it as a Node
    ToPeer.ESTABLISHED: (Action.REJECT, ErrorCode.ROLE_MISMATCH),
    ToPeer.NOT_NEEDED: (Action.REJECT, ErrorCode.DUPLICATE_HANDSHAKE),
}

#: Our outgoing connection is up and our handshake sent, by from-peer state.
ON_OUTGOING_UP: dict[FromPeer, Decision] = {
    FromPeer.NONE: (Action.WAIT, None),  # until it dials us back
    FromPeer.ESTABLISHED: (Action.COMPLETE, None),
    FromPeer.NOT_NEEDED: (Action.COMPLETE, None),  # we are a Client
}


def on_incoming_handshake(is_node: bool, to_peer: ToPeer, from_peer: FromPeer) -> Decision:
    """A role handshake on a new incoming connection from a peer's address."""
    if from_peer is not FromPeer.NONE:
        return (Action.REJECT, ErrorCode.DUPLICATE_HANDSHAKE)
    table = ON_NODE_HANDSHAKE if is_node else ON_CLIENT_HANDSHAKE
    return table[to_peer]


def on_outgoing_up(from_peer: FromPeer) -> Decision:
    return ON_OUTGOING_UP[from_peer]
