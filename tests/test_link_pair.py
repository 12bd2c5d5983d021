"""Our protocol over one QUIC connection (``quic_p2p.proto.link``), two links back to
back in memory on a fake clock: no sockets, no event loop (tests/linkpair.py)."""

from __future__ import annotations

import os

from quic_p2p.accel.types import FrameKind
from quic_p2p.proto.link import (
    MAX_ACTIVE_LARGE,
    LinkAcked,
    LinkDown,
    LinkFrame,
    LinkRefused,
    LinkUp,
)
from quic_p2p.proto.wire import SMALL_MESSAGE_MAX, ErrorCode, RejectReason

from linkpair import LinkPair


def _messages(events: list[object]) -> list[bytes]:
    return [
        e.frame.body
        for e in events
        if isinstance(e, LinkFrame) and e.frame.kind == FrameKind.USER_MESSAGE
    ]


def _acknowledge_all(pair: LinkPair) -> None:
    for e in pair.server_events:
        if isinstance(e, LinkFrame) and e.frame.kind == FrameKind.USER_MESSAGE:
            pair.server.acknowledge(e.frame.msg_id)
    pair.server.flush()
    pair.pump()


def test_handshake_brings_both_links_up() -> None:
    pair = LinkPair()
    pair.handshake()
    assert any(isinstance(e, LinkUp) for e in pair.client_events)
    assert any(isinstance(e, LinkUp) for e in pair.server_events)


def test_small_and_large_messages_arrive_once_and_are_acknowledged() -> None:
    pair = LinkPair()
    pair.handshake()
    small, large = b"hello", os.urandom(SMALL_MESSAGE_MAX * 3)
    ids = [pair.client.send_user_message(small), pair.client.send_user_message(large)]
    pair.pump()
    assert sorted(_messages(pair.server_events)) == sorted([small, large])
    _acknowledge_all(pair)
    acked = [i for e in pair.client_events if isinstance(e, LinkAcked) for i in e.msg_ids]
    assert sorted(acked) == sorted(ids)


def test_an_oversized_message_is_refused_without_closing_the_connection() -> None:
    pair = LinkPair(max_msg_size=64 * 1024)
    pair.handshake()
    too_big = pair.client.send_user_message(os.urandom(128 * 1024))
    fine = pair.client.send_user_message(b"still here")
    pair.pump()
    refused = [e for e in pair.client_events if isinstance(e, LinkRefused)]
    assert refused == [LinkRefused(too_big, RejectReason.TOO_LARGE)]
    assert _messages(pair.server_events) == [b"still here"]
    assert fine not in [e.msg_id for e in refused]
    assert pair.client.down is None and pair.server.down is None


def test_a_sender_keeps_at_most_four_message_streams_open() -> None:
    """Five large messages at once: four streams, the fifth once one of them
    is acknowledged, so an honest receiver never has reason to refuse one."""
    pair = LinkPair()
    pair.handshake()
    payloads = [os.urandom(SMALL_MESSAGE_MAX + 1 + i) for i in range(MAX_ACTIVE_LARGE + 1)]
    for p in payloads:
        pair.client.send_user_message(p)
    pair.pump()
    assert sorted(_messages(pair.server_events)) == sorted(payloads[:MAX_ACTIVE_LARGE])
    assert pair.client.large_messages_in_progress == MAX_ACTIVE_LARGE
    _acknowledge_all(pair)
    assert sorted(_messages(pair.server_events)) == sorted(payloads)
    assert not [e for e in pair.client_events if isinstance(e, LinkRefused)]


def test_silence_ends_the_connection_at_the_idle_timeout() -> None:
    pair = LinkPair()
    pair.handshake()
    pair.drop = {"to_server", "to_client"}
    pair.advance(31)  # idle_timeout_msec=30_000, nothing crosses any more
    assert isinstance(pair.client.down, LinkDown)
    assert any(isinstance(e, LinkDown) for e in pair.client_events)


def test_a_protocol_violation_closes_with_our_code() -> None:
    pair = LinkPair()
    pair.handshake()
    pair.client.send_frame(b"\x00" * 16)  # a header of an unknown version
    pair.pump()
    down = pair.server.down
    assert down is not None and down.error_code == ErrorCode.BAD_FRAME
