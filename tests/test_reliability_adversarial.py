"""Adversarial peers speaking our protocol (issue 7, scenario 7).

Two kinds of attacker:
- ``RawPeer``: a raw aioquic client ``QuicConnection`` on its own UDP socket,
  writing our frames by hand on whatever stream it likes (a Client-like peer:
  it accepts no incoming connections);
- a real ``QuicP2p`` driven through its internals, where the attacker must be
  a Node (accept the reverse connection, present a certificate).

Each case checks the exact ``quic_p2p.proto.wire.ErrorCode`` the victim closes the
connection with, that a ``ConnectionFailure`` is reported exactly when the
victim's application knew the peer, and that nothing escapes the endpoint (no
exception into the event loop, the victim keeps serving others).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from quic_p2p import (
    Cause,
    ConnectedTo,
    ConnectionFailedError,
    ConnectionFailure,
    NewMessage,
    NodeInfo,
    OurType,
    Peer,
    QuicP2p,
    SentUserMessage,
)
from quic_p2p.accel.types import FrameKind
from quic_p2p.proto import ConnectionInfo
from quic_p2p.proto.wire import CONTROL_FRAME_MAX, ErrorCode, encode_ack, frame

from netutil import (
    WAIT,
    closed,
    connection_to,
    dial_with_handshake,
    drain,
    endpoints,
    is_down,
    node_config,
    send_on,
    until,
    wait_for_event,
)
from rawpeer import CONTROL, RawPeer, header

# Nothing may escape into the event loop; aioquic's safety net must not fire.
pytestmark = pytest.mark.usefixtures("no_loop_errors")

#: QUIC CRYPTO_ERROR for TLS alert 42 (bad_certificate): how a pinned
#: certificate mismatch ends a handshake (the pin is checked inside TLS).
TLS_BAD_CERTIFICATE = 0x100 + 42


def test_our_close_codes_never_read_as_quic_transport_codes() -> None:
    """A close code alone (a log line, a raw peer's view) tells ours from QUIC's:
    no ErrorCode is a transport code (RFC 9000 §20.1) or a TLS alert (0x100+)."""
    from aioquic.quic.packet import QuicErrorCode

    transport = {int(c) for c in QuicErrorCode} | set(range(0x100, 0x200))
    assert not [c for c in ErrorCode if int(c) in transport]


# ------------------------------------------------------------------ raw peer
async def raw_peer(victim: QuicP2p, *, client_handshake: bool) -> RawPeer:
    peer = await RawPeer.connect(victim.local_addr)
    if client_handshake:
        peer.send(CONTROL, frame(FrameKind.HANDSHAKE_CLIENT))
        ev, _ = await wait_for_event(victim, ConnectedTo)
        assert ev.peer == Peer.client(peer.addr, peer.peer_id)
    return peer


# ------------------------------------------------------------------ raw cases
def _big_user_header() -> bytes:
    return header(FrameKind.USER_MESSAGE, 7, 20_000)


@dataclass(frozen=True)
class Case:
    name: str
    #: Sends the hostile input (the peer has done its client handshake when
    #: ``after_handshake``).
    attack: Callable[[RawPeer], None]
    code: ErrorCode
    after_handshake: bool = True
    #: Words the victim's ConnectionFailure must give (when it reports one).
    reason: str = ""


def _two_messages_on_one_stream(p: RawPeer) -> None:
    sid = p.new_stream()
    body = b"m" * 17_000
    p.send(
        sid,
        header(FrameKind.USER_MESSAGE, 1, len(body))
        + body
        + header(FrameKind.USER_MESSAGE, 2, len(body))
        + body,
        end=True,
    )


def _stream(data: bytes, end: bool = True) -> Callable[[RawPeer], None]:
    def attack(p: RawPeer) -> None:
        p.send(p.new_stream(), data, end=end)

    return attack


def _control(data: bytes, end: bool = False) -> Callable[[RawPeer], None]:
    return lambda p: p.send(CONTROL, data, end=end)


CASES = [
    Case(
        "bad frame version",
        _control(header(5, version=9)),
        ErrorCode.BAD_FRAME,
        reason="invalid frame",
    ),
    Case("frame version 0", _control(header(5, version=0)), ErrorCode.BAD_FRAME),
    Case("unknown frame kind", _control(header(99)), ErrorCode.BAD_FRAME),
    Case("frame kind 0", _control(header(0)), ErrorCode.BAD_FRAME),
    Case("non-zero flags", _control(header(5, flags=0x8000)), ErrorCode.BAD_FRAME),
    Case(
        "control frame above its limit",
        _control(header(FrameKind.USER_MESSAGE, 1, CONTROL_FRAME_MAX + 1)),
        ErrorCode.BAD_FRAME,
    ),
    Case(
        "length 2**32-1 on the control stream",
        _control(header(FrameKind.USER_MESSAGE, 1, 2**32 - 1)),
        ErrorCode.BAD_FRAME,
        reason="too_large",
    ),
    Case(
        "truncated header, control stream ends",
        _control(header(5)[:7], end=True),
        ErrorCode.BAD_FRAME,
    ),
    Case(
        "truncated body, control stream ends",
        _control(header(FrameKind.USER_MESSAGE, 1, 100) + b"x" * 10, end=True),
        ErrorCode.BAD_FRAME,
    ),
    Case("truncated large message", _stream(_big_user_header() + b"x" * 100), ErrorCode.BAD_FRAME),
    Case(
        "truncated header on a message stream", _stream(_big_user_header()[:9]), ErrorCode.BAD_FRAME
    ),
    Case(
        "small message on its own stream",
        _stream(header(FrameKind.USER_MESSAGE, 1, 5) + b"small"),
        ErrorCode.BAD_FRAME,
    ),
    Case("two messages on one stream", _two_messages_on_one_stream, ErrorCode.BAD_FRAME),
    Case("ACK on a message stream", _stream(encode_ack([1])), ErrorCode.BAD_FRAME),
    Case(
        "ACK body not a multiple of 8",
        _control(header(FrameKind.ACK, 0, 7) + bytes(7)),
        ErrorCode.BAD_FRAME,
    ),
    Case(
        "ACK above its batch limit",
        _control(header(FrameKind.ACK, 0, 8 * 1025) + bytes(8 * 1025)),
        ErrorCode.BAD_FRAME,
    ),
    Case(
        "REJECT with an unknown reason",
        _control(header(FrameKind.REJECT, 1, 1) + b"\x09"),
        ErrorCode.BAD_FRAME,
    ),
    Case(
        "REJECT with an empty body", _control(header(FrameKind.REJECT, 1, 0)), ErrorCode.BAD_FRAME
    ),
    Case(
        "second handshake",
        _control(frame(FrameKind.HANDSHAKE_CLIENT)),
        ErrorCode.DUPLICATE_HANDSHAKE,
    ),
    Case(
        "user message before the handshake",
        _control(frame(FrameKind.USER_MESSAGE, b"early", 1)),
        ErrorCode.PROTOCOL_VIOLATION,
        after_handshake=False,
    ),
    Case(
        "ACK before the handshake",
        _control(encode_ack([1]) + frame(FrameKind.USER_MESSAGE, b"x", 1)),
        ErrorCode.PROTOCOL_VIOLATION,
        after_handshake=False,
    ),
    Case(
        "Node handshake with an unparsable certificate",
        _control(frame(FrameKind.HANDSHAKE_NODE, b"\x30\x03junk")),
        ErrorCode.BAD_HANDSHAKE,
        after_handshake=False,
    ),
    Case(
        "Node handshake with an empty certificate",
        _control(frame(FrameKind.HANDSHAKE_NODE)),
        ErrorCode.BAD_HANDSHAKE,
        after_handshake=False,
    ),
    Case(
        "Client handshake with a body",
        _control(frame(FrameKind.HANDSHAKE_CLIENT, b"me")),
        ErrorCode.BAD_HANDSHAKE,
        after_handshake=False,
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_raw_peer_violation_is_closed_with_its_code(case: Case) -> None:
    async with endpoints(node_config(), node_config(our_type=OurType.CLIENT)) as (victim, good):
        good_peer = await asyncio.wait_for(good.connect_to(victim.node_info), WAIT)
        await wait_for_event(victim, ConnectedTo)
        bad = await raw_peer(victim, client_handshake=case.after_handshake)
        try:
            case.attack(bad)
            code = await bad.closed_with()
            assert code == case.code, f"closed with {code:#x}, expected {case.code!r}"
            # The victim reports a failure when it closes, before its close
            # leaves: what it reported is queued by now (and the later message
            # below shows nothing came after).
            failures = [e for e in drain(victim) if isinstance(e, ConnectionFailure)]
            if case.after_handshake:  # the application knew this peer
                assert [f.peer_addr for f in failures] == [bad.addr]
                assert case.reason in failures[0].error, failures[0].error
            else:
                assert failures == []
            assert Peer.client(bad.addr, bad.peer_id) not in victim.connected_peers()
            assert not [
                c for c in victim.engine.connections() if c.peer_addr == bad.addr and not c.closed
            ]
        finally:
            bad.close()
        # The victim keeps serving others, and reported nothing more.
        out = await asyncio.wait_for(good.send(good_peer, b"still fine", 1), WAIT)
        assert isinstance(out, SentUserMessage)
        ev, later = await wait_for_event(victim, NewMessage)
        assert ev.msg == b"still fine"
        assert not [e for e in later if isinstance(e, ConnectionFailure)], later


async def test_tolerated_oddities_keep_the_connection() -> None:
    """Inputs that are odd but not violations: acks and rejects for unknown
    messages, an unsolicited echo response, an echo request, an empty stream.
    The connection must survive them and keep delivering."""
    async with endpoints(node_config()) as (victim,):
        p = await raw_peer(victim, client_handshake=True)
        try:
            p.send(CONTROL, encode_ack([12345, 2**64 - 1]))
            p.send(CONTROL, header(FrameKind.REJECT, 999, 1) + b"\x01")
            p.send(CONTROL, frame(FrameKind.ECHO_RESPONSE, b"garbage!", 77))
            p.send(CONTROL, frame(FrameKind.ECHO_REQUEST, b"", 5))
            p.send(p.new_stream(), b"", end=True)
            p.send(CONTROL, frame(FrameKind.USER_MESSAGE, b"after oddities", 1))
            ev, _ = await wait_for_event(victim, NewMessage)
            assert ev.msg == b"after oddities"
            # The echo request was answered with our address as the victim saw it,
            # and message 1 was acknowledged.
            await p.wait(lambda: len(p.received()) >= 2 * 16 + 6 + 8)
            data = p.received()
            assert (
                frame(
                    FrameKind.ECHO_RESPONSE, bytes([127, 0, 0, 1]) + p.addr[1].to_bytes(2, "big"), 5
                )
                in data
            )
            assert encode_ack([1]) in data
            assert p.terminated is None
        finally:
            p.close()


#: What the 25 seeded junk writes below do (docs/reliability.md): the inputs
#: are fixed by the seed and the decoder is deterministic, so the figures are.
JUNK_OUTCOMES = {"BAD_FRAME": 18, "DUPLICATE_HANDSHAKE": 4, "survived": 3}


async def _closed_or_delivered(victim: QuicP2p, p: RawPeer, marker: bytes) -> str:
    """After junk: the name of the code the victim closed ``p`` with, or
    "survived" once the victim delivers ``marker``, a message ``p`` sent after
    the junk on a stream of its own (a positive sign the connection lives)."""
    p.send(p.new_stream(), header(FrameKind.USER_MESSAGE, 2, len(marker)) + marker, end=True)
    closed = asyncio.ensure_future(p.until_terminated())
    delivered = asyncio.ensure_future(wait_for_event(victim, NewMessage, lambda e: e.msg == marker))
    try:
        done, _ = await asyncio.wait(
            {closed, delivered}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (closed, delivered):
            task.cancel()
        await asyncio.gather(closed, delivered, return_exceptions=True)
    if delivered in done:
        return "survived"
    assert closed in done, "neither closed nor delivered within WAIT"
    term = closed.result()
    assert term.frame_type is None, f"a transport close, not ours: {term}"  # application close
    return ErrorCode(term.error_code).name


@pytest.mark.timeout(60)
async def test_random_junk_on_the_control_stream_closes_with_our_codes() -> None:
    """Seeded random bytes after a valid handshake: each connection is closed
    with one of our codes (an application close) or provably survives, and the
    victim never raises."""
    codes: dict[str, int] = {}
    rng = random.Random(17)
    # Every peer's socket stays open until the end: a connection that survived
    # is still the victim's peer at its address, and a later peer handed the
    # same ephemeral port would be refused as that peer's duplicate (seen once
    # in CI: "handshake rejected: duplicate_handshake", then no ConnectedTo).
    peers: list[RawPeer] = []
    async with endpoints(node_config()) as (victim,):
        try:
            for i in range(25):
                p = await raw_peer(victim, client_handshake=True)
                peers.append(p)
                junk = rng.randbytes(rng.randint(1, 64))
                if i % 3 == 0:  # a valid-looking header with a junk body
                    junk = header(rng.randint(1, 7), rng.randrange(2**64), len(junk)) + junk
                end = rng.random() < 0.5
                p.send(CONTROL, junk, end=end)
                if not end:  # then something valid, if the junk left it parseable
                    p.send(CONTROL, frame(FrameKind.USER_MESSAGE, b"x", 1))
                name = await _closed_or_delivered(victim, p, b"marker %d " % i * 2000)
                codes[name] = codes.get(name, 0) + 1
                drain(victim)
        finally:
            for p in peers:
                p.close()
    print(f"\nFIGURE random control junk: {dict(sorted(codes.items()))}")
    assert codes == JUNK_OUTCOMES


# ------------------------------------------------------------------ QuicP2p attackers
async def claim_certificate(
    bad: QuicP2p, victim: QuicP2p, cert: bytes
) -> tuple[ConnectionInfo, list[ConnectionInfo]]:
    """``bad`` dials ``victim`` claiming ``cert`` in its Node handshake; waits until
    that connection is down. Returns (bad's connection, any connections the
    victim opened back to ``bad`` meanwhile)."""
    before = {c.id for c in bad.engine.connections()}
    conn = await dial_with_handshake(bad, victim.node_info, frame(FrameKind.HANDSHAKE_NODE, cert))
    await until(lambda: is_down(bad, conn))
    reverse = [c for c in bad.engine.connections() if c.id not in before and not c.outgoing]
    return await closed(bad, conn), reverse


async def _connect(a: QuicP2p, b: QuicP2p) -> Peer:
    peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
    await wait_for_event(b, ConnectedTo)
    return peer


async def test_handshake_from_the_accepting_side_is_bad_handshake() -> None:
    async with endpoints(node_config(), node_config()) as (victim, bad):
        await _connect(victim, bad)
        drain(victim)
        # The connection the victim dialled: the attacker accepted it, and now
        # sends a role handshake on it, which only a dialler may do.
        conn = connection_to(bad, victim.local_addr, outgoing=False)
        victim_out = connection_to(victim, bad.local_addr, outgoing=True)
        send_on(bad, conn.id, frame(FrameKind.HANDSHAKE_NODE, bad.our_certificate))
        ev, _ = await wait_for_event(victim, ConnectionFailure)
        assert ev.peer_addr == bad.local_addr and "handshake from the accepting side" in ev.error
        # The victim closed its connection with BAD_HANDSHAKE (the attacker's
        # view may show DISCONNECTED: the victim also closes the pair's other
        # connection, and whichever close arrives first wins).
        victim_out_now = victim.engine.connection(victim_out.id)
        assert victim_out_now is not None and victim_out_now.closed
        assert victim_out_now.close_code == ErrorCode.BAD_HANDSHAKE
        bad_side = await closed(bad, conn.id)
        assert bad_side.close_code in (ErrorCode.BAD_HANDSHAKE, ErrorCode.DISCONNECTED)
        assert victim.connected_peers() == []


async def test_node_claiming_another_nodes_certificate_is_refused_at_once() -> None:
    """The attacker claims a third node's certificate in its Node handshake.
    Every peer proves its key in TLS, so the claim is checked against it at
    once: refused with CERTIFICATE_MISMATCH, never dialled back."""
    async with endpoints(node_config(), node_config(), node_config()) as (victim, bad, third):
        conn, reverse = await claim_certificate(bad, victim, third.our_certificate)
        assert conn.closed and conn.closed_by_peer
        assert conn.close_code == ErrorCode.CERTIFICATE_MISMATCH
        assert "claims another key than it proved" in conn.close_reason
        assert reverse == []
        # Never visible to the victim's application: no peer, no failure event.
        assert not [e for e in drain(victim) if isinstance(e, (ConnectedTo, ConnectionFailure))]
        assert victim.connected_peers() == []


async def test_dialling_a_node_that_presents_another_certificate() -> None:
    async with endpoints(node_config(), node_config(), node_config()) as (victim, bad, third):
        before = {c.id for c in bad.engine.connections()}
        new: list[int] = []

        def bad_side_down() -> bool:
            # Collected while it lives: once closed, bad forgets its side of the
            # connection after QUIC's draining period, which a loaded machine
            # can outlast before the failure below is even read.
            new.extend(
                c.id for c in bad.engine.connections() if c.id not in before and c.id not in new
            )
            return bool(new) and all(is_down(bad, c) for c in new)

        dial = asyncio.ensure_future(
            victim.connect_to(NodeInfo(bad.local_addr, third.our_certificate))
        )
        await until(bad_side_down)
        with pytest.raises(ConnectionFailedError, match="certificate"):
            await asyncio.wait_for(dial, WAIT)
        ev, _ = await wait_for_event(victim, ConnectionFailure)  # the application asked
        assert ev.peer_addr == bad.local_addr and "certificate" in ev.error
        assert f"{TLS_BAD_CERTIFICATE:#x}" in ev.error
        assert [(await closed(bad, c)).close_code for c in new] == [TLS_BAD_CERTIFICATE]
        assert bad.connected_peers() == [] and victim.connected_peers() == []


async def test_client_claiming_to_be_a_node_fails_with_reverse_connect_failed() -> None:
    async with endpoints(node_config(), node_config(our_type=OurType.CLIENT)) as (victim, liar):
        conn = await dial_with_handshake(
            liar, victim.node_info, frame(FrameKind.HANDSHAKE_NODE, liar.our_certificate)
        )
        liar_side = await closed(liar, conn)
        assert liar_side.close_code == ErrorCode.REVERSE_CONNECT_FAILED
        assert liar.stats().get("admission: refused") == 1  # it refused the reverse dial
        assert not [e for e in drain(victim) if isinstance(e, (ConnectedTo, ConnectionFailure))]
        assert victim.connected_peers() == []


async def test_client_where_a_node_is_being_dialled_is_role_mismatch() -> None:
    """We are dialling a Node at an address; a Client handshake arrives from
    that same address: ROLE_MISMATCH, and our own attempt is unaffected."""
    async with endpoints(node_config(idle_timeout_msec=2_000)) as (victim,):
        p = await RawPeer.connect(victim.local_addr)
        try:
            dial = asyncio.ensure_future(victim.connect_to(NodeInfo(p.addr)))
            await until(
                lambda: any(
                    c.peer_addr == p.addr and c.outgoing for c in victim.engine.connections()
                )
            )
            p.send(CONTROL, frame(FrameKind.HANDSHAKE_CLIENT))
            assert await p.closed_with() == ErrorCode.ROLE_MISMATCH
            assert not dial.done()
            await victim.disconnect_from(p.addr)
            with pytest.raises(ConnectionFailedError):
                await asyncio.wait_for(dial, WAIT)
            assert not [e for e in drain(victim) if isinstance(e, ConnectedTo)]
        finally:
            p.close()


async def test_second_connection_from_a_connected_node_replaces_the_first() -> None:
    """A new connection in from a key we hold a record for means the peer
    restarted (or lost its state) while our record lived on: only the holder
    of the key can open one, so it replaces the old record instead of being
    refused until that idles out. Never two records for one key."""
    async with endpoints(node_config(), node_config()) as (victim, bad):
        await _connect(bad, victim)
        drain(victim)
        extra = await dial_with_handshake(
            bad, victim.node_info, frame(FrameKind.HANDSHAKE_NODE, bad.our_certificate)
        )
        ev, _ = await wait_for_event(victim, ConnectionFailure)
        assert ev.peer_id == bad.peer_id and ev.error.cause is Cause.REPLACED, ev
        assert "connected again" in ev.error
        assert victim.stats()["peers replaced by a new connection from the same key"] == 1
        assert len([p for p in victim.connected_peers() if p.peer_id == bad.peer_id]) <= 1
        info = bad.engine.connection(extra)
        assert info is not None and info.close_code != ErrorCode.DUPLICATE_HANDSHAKE
        # The peer reconnects as usual, to the one record.
        await asyncio.wait_for(bad.connect_to(victim.node_info), WAIT)
        out = await asyncio.wait_for(bad.send(Peer.node(victim.node_info), b"ok", 1), WAIT)
        assert isinstance(out, SentUserMessage)
        assert [p.peer_id for p in victim.connected_peers()] == [bad.peer_id]


async def test_ca_issued_node_presenting_another_certificate_is_certificate_mismatch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CA-issued certificates cannot be pinned inside TLS (UNVERIFIED mode
    accepts any chain), so the pin is checked after the handshake: the dialler
    closes with CERTIFICATE_MISMATCH and reports the failure."""
    from quic_p2p.certfiles import create_ca, issue_certificate

    caplog.set_level(logging.INFO, logger="quic_p2p")
    ca = create_ca("adversarial test CA")
    cfgs = [node_config(our_complete_cert=issue_certificate(ca, f"n{i}")) for i in range(3)]
    async with endpoints(*cfgs) as (victim, bad, third):
        with pytest.raises(ConnectionFailedError, match="another key than expected"):
            await asyncio.wait_for(
                victim.connect_to(NodeInfo(bad.local_addr, third.our_certificate)), WAIT
            )
        ev, _ = await wait_for_event(victim, ConnectionFailure)
        assert ev.peer_addr == bad.local_addr and "another key than expected" in ev.error
        assert any("another key than expected" in r.getMessage() for r in caplog.records)
        # And a Node claiming a certificate that is not its own: refused at once.
        conn, reverse = await claim_certificate(bad, victim, third.our_certificate)
        assert conn.close_code == ErrorCode.CERTIFICATE_MISMATCH and reverse == []
        assert victim.connected_peers() == []
