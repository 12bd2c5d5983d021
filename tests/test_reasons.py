"""Reasons carry a cause to decide on and the words to print."""

from __future__ import annotations

import pickle

import pytest

from quic_p2p import (
    Cause,
    ConnectionFailedError,
    ConnectionFailure,
    Peer,
    Reason,
    UnsentUserMessage,
)

from enginepair import Net


def test_a_reason_is_its_text_and_has_a_cause() -> None:
    r = Reason(Cause.SEND_TIMEOUT, "send timed out: nothing for 5 s")
    assert r == "send timed out: nothing for 5 s" and str(r) == r.detail
    assert "nothing" in r and r.cause is Cause.SEND_TIMEOUT
    assert r.wrap("connection lost: ").cause is Cause.SEND_TIMEOUT
    assert r.wrap("connection lost: ") == "connection lost: send timed out: nothing for 5 s"
    assert Reason(Cause.SELF) == "that is us"  # no detail: the cause's words
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.cause is r.cause
    assert repr(r) == "Reason(SEND_TIMEOUT, 'send timed out: nothing for 5 s')"


def test_outcomes_say_their_cause() -> None:
    net = Net()
    a = net.engine(send_timeout=2.0, idle_timeout_msec=10_000, keep_alive_interval_msec=0)
    b = net.engine(max_msg_size_allowed=16_384, idle_timeout_msec=10_000)
    command = a.engine.connect(net.now, b.node_info)
    net.run(lambda: a.result(command) is not None)
    peer = a.result(command).peer  # type: ignore[union-attr]
    assert peer is not None
    big = a.engine.send(net.now, peer, bytes(65_536), 1)
    net.run(lambda: a.result(big) is not None)
    outcome = a.result(big).outcome  # type: ignore[union-attr]
    assert isinstance(outcome, UnsentUserMessage)
    assert outcome.reason.cause is Cause.MESSAGE_TOO_LARGE
    net.allow = lambda src, dst: False
    lost = a.engine.send(net.now, peer, b"into the void", 2)
    net.run(lambda: a.result(lost) is not None, limit=10.0)
    outcome = a.result(lost).outcome  # type: ignore[union-attr]
    assert isinstance(outcome, UnsentUserMessage)
    assert outcome.reason.cause is Cause.SEND_TIMEOUT
    (failure,) = a.of_type(ConnectionFailure)
    assert failure.error.cause is Cause.SEND_TIMEOUT
    net.run(lambda: bool(b.of_type(ConnectionFailure)), limit=20.0)
    assert b.of_type(ConnectionFailure)[0].error.cause is Cause.IDLE_TIMEOUT


def test_refusals_before_connecting_say_their_cause() -> None:
    net = Net()
    a = net.engine()
    with pytest.raises(ConnectionFailedError) as info:
        a.engine.connect(net.now, a.node_info)
    assert info.value.reason.cause is Cause.SELF
    # A Client it never met: nothing to send on.
    sent = a.engine.send(net.now, Peer.client(("127.0.0.1", 9)), b"x", 1)
    net.run(lambda: a.result(sent) is not None)
    outcome = a.result(sent).outcome  # type: ignore[union-attr]
    assert outcome.reason.cause is Cause.NOT_CONNECTED
