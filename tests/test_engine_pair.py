"""The sans-IO engine, engine to engine on a fake clock (no sockets, no event
loop): the role handshakes, messages and their outcomes, timeouts by jumping
time, a relay session and its upgrade to direct."""

from __future__ import annotations

from pathlib import Path

from quic_p2p import (
    ConnectedTo,
    ConnectionFailure,
    NewMessage,
    OurType,
    Peer,
    RelayPolicy,
    SentUserMessage,
    UnsentUserMessage,
    UpgradedToDirect,
)
from quic_p2p.accel.types import Frame, FrameKind
from quic_p2p.proto.limits import MAX_JOINING, MAX_JOINING_PER_IP
from quic_p2p.proto.qlog import QlogTrace
from quic_p2p.proto.state import AnswerResult, ConnectResult, ProbeResult, SendResult
from quic_p2p.proto.wire import decode_punch_info, encode_address
from quic_p2p.reasons import Cause

from enginepair import Net, Side


def connect(net: Net, a: Side, b: Side) -> Peer:
    command = a.engine.connect(net.now, b.node_info)
    net.run(lambda: a.result(command) is not None)
    result = a.result(command)
    assert isinstance(result, ConnectResult) and result.peer is not None, result
    return result.peer


def send(
    net: Net, a: Side, peer: Peer, msg: bytes, token: int = 1
) -> SentUserMessage | UnsentUserMessage:
    command = a.engine.send(net.now, peer, msg, token)
    net.run(lambda: a.result(command) is not None)
    result = a.result(command)
    assert isinstance(result, SendResult)
    return result.outcome


def ask_rendezvous(net: Net, a: Side, r: Side, kind: FrameKind, about: Side) -> Frame:
    """``a`` asks its rendezvous ``r`` about ``about``; the answer frame."""
    conn = a.engine.rendezvous_conn(r.addr, about.addr)
    asked = a.engine.ask(net.now, conn, kind, encode_address(about.addr), 5.0)
    net.run(lambda: a.result(asked) is not None)
    answer = a.result(asked)
    assert isinstance(answer, AnswerResult) and answer.frame is not None, answer
    return answer.frame


def test_node_handshake_proves_both_directions() -> None:
    net = Net()
    a, b = net.engine(), net.engine()
    peer = connect(net, a, b)
    assert peer == Peer.node(b.node_info)
    net.run(lambda: bool(b.of_type(ConnectedTo)))
    assert b.of_type(ConnectedTo) == [ConnectedTo(Peer.node(a.node_info), None)]
    assert a.of_type(ConnectedTo) == [ConnectedTo(Peer.node(b.node_info), None)]
    # Ours to b, and b's reverse connection to us: one each way on each side.
    for side in (a, b):
        conns = side.engine.connections()
        assert sorted(c.outgoing for c in conns) == [False, True]
        assert all(c.up and not c.closed for c in conns)
    assert b.engine.stats.get("retry skipped: awaited reverse connection") is None
    assert a.engine.stats["retry skipped: awaited reverse connection"] == 1


def test_client_handshake_is_accepted_with_one_connection() -> None:
    net = Net()
    node, client = net.engine(), net.engine(OurType.CLIENT)
    peer = connect(net, client, node)
    assert peer == Peer.node(node.node_info)
    net.run(lambda: bool(node.of_type(ConnectedTo)))
    assert node.of_type(ConnectedTo) == [
        ConnectedTo(Peer.client(client.addr, client.peer_id), None)
    ]
    assert len(client.engine.connections()) == 1 == len(node.engine.connections())


def test_a_message_and_its_acknowledgement() -> None:
    net = Net()
    a, b = net.engine(), net.engine()
    peer = connect(net, a, b)
    outcome = send(net, a, peer, b"hello", 7)
    assert outcome == SentUserMessage(b.addr, b"hello", 7, b.peer_id)
    assert b.of_type(NewMessage) == [NewMessage(a.addr, b"hello", a.peer_id)]


def test_an_oversized_message_is_refused_by_the_receiver() -> None:
    net = Net()
    a, b = net.engine(), net.engine(max_msg_size_allowed=16_384)
    peer = connect(net, a, b)
    outcome = send(net, a, peer, bytes(65_536))
    assert isinstance(outcome, UnsentUserMessage)
    assert "refused by the peer" in outcome.reason and "too_large" in outcome.reason
    assert not b.of_type(NewMessage)
    assert send(net, a, peer, bytes(16_384), 2) == SentUserMessage(
        b.addr, bytes(16_384), 2, b.peer_id
    )


def test_a_send_that_times_out_is_unsent_and_never_delivered_later() -> None:
    net = Net()
    a, b = net.engine(send_timeout=5.0), net.engine()
    peer = connect(net, a, b)
    cut = True
    net.allow = lambda src, dst: not cut
    command = a.engine.send(net.now, peer, b"lost in the cut", 3)
    net.run(lambda: a.result(command) is not None, limit=10.0)
    result = a.result(command)
    assert isinstance(result, SendResult) and isinstance(result.outcome, UnsentUserMessage)
    assert "send timed out" in result.outcome.reason
    # The network heals: what was reported unsent must never arrive.
    cut = False
    net.advance(5.0)
    assert not b.of_type(NewMessage)
    assert a.engine.stats["connections closed: send timeout"] == 1


def test_a_peer_that_goes_silent_is_lost_at_the_idle_timeout() -> None:
    net = Net()
    a = net.engine(idle_timeout_msec=2_000, keep_alive_interval_msec=0)
    b = net.engine(idle_timeout_msec=2_000, keep_alive_interval_msec=0)
    connect(net, a, b)
    net.run(lambda: bool(b.of_type(ConnectedTo)))
    net.allow = lambda src, dst: False
    net.run(lambda: bool(a.of_type(ConnectionFailure)), limit=10.0)
    (failure,) = a.of_type(ConnectionFailure)
    assert failure.peer_addr == b.addr and "idle timeout" in failure.error
    assert net.now < 1_000.0 + 10.0


def test_a_relay_session_and_its_upgrade_to_direct() -> None:
    net = Net()
    r = net.engine(relay=RelayPolicy())
    a, b = net.engine(), net.engine()
    connect(net, a, r)
    connect(net, b, r)
    # The relay stands between a and b: their direct packets do not pass yet.
    direct = False
    net.allow = lambda src, dst: direct or r.addr in (src, dst)
    answer = ask_rendezvous(net, a, r, FrameKind.RELAY_REQUEST, b)
    command = a.engine.connect_relayed(net.now, b.node_info, r.addr, answer)
    net.run(lambda: a.result(command) is not None)
    result = a.result(command)
    assert isinstance(result, ConnectResult) and result.peer == Peer.node(b.node_info), result
    assert a.engine.relayed_via(b.addr) == r.addr
    net.run(lambda: b.engine.relayed_via(a.addr) == r.addr)
    assert [(s.asker, s.target) for s in r.engine.relay_sessions()] == [(a.addr, b.addr)]
    peer = result.peer
    assert peer is not None
    assert send(net, a, peer, b"through the relay") == SentUserMessage(
        b.addr, b"through the relay", 1, b.peer_id
    )
    assert r.engine.stats["relay: bytes forwarded"] > 0
    assert not r.of_type(NewMessage)
    # The direct path opens; a punch through the rendezvous and a probe move a.
    direct = True
    answer = ask_rendezvous(net, a, r, FrameKind.PUNCH_REQUEST, b)
    _, other = decode_punch_info(answer.body)
    probe = a.engine.probe_path(net.now, b.addr, other)
    net.run(lambda: a.result(probe) is not None)
    probed = a.result(probe)
    assert isinstance(probed, ProbeResult) and probed.reached
    assert a.of_type(UpgradedToDirect) == [UpgradedToDirect(b.addr, r.addr, b.peer_id)]
    assert a.engine.relayed_via(b.addr) is None
    # b probes too (the rendezvous's notice), and the session ends.
    net.run(lambda: b.engine.relayed_via(a.addr) is None and not r.engine.relay_sessions())
    forwarded = r.engine.stats["relay: bytes forwarded"]
    assert send(net, a, peer, b"direct now", 2) == SentUserMessage(
        b.addr, b"direct now", 2, b.peer_id
    )
    assert r.engine.stats["relay: bytes forwarded"] == forwarded
    assert [m.msg for m in b.of_type(NewMessage)] == [b"through the relay", b"direct now"]


def test_acknowledgements_ride_with_the_data_sent_at_once(tmp_path: Path) -> None:
    """An ACK pending when data is written goes in the data's packet
    (quic_p2p.proto.flow), not alone at aioquic's ACK-delay timer a moment
    later: each of 40 messages is answered by the receiver's acknowledgement
    at once, and the packet carrying that answer acknowledges the message's
    packet too. Read from the qlog traces (every packet sent, its frames)."""
    net = Net()
    a, b = net.engine(qlog_dir=str(tmp_path)), net.engine()
    peer = connect(net, a, b)
    for token in range(40):
        assert isinstance(send(net, a, peer, b"ping %d" % token, token), SentUserMessage)
    a.engine.close(net.now)
    net.run()
    a.engine.forget_all()
    traces = [r for r in a.results if isinstance(r, QlogTrace)]
    # Of a Node pair's two connections, the one a dialled carries the messages.
    (ours,) = [r.trace for r in traces if r.vantage == "client"]
    received = [
        {f["frame_type"] for f in e["data"].get("frames", [])}
        for e in ours["events"]
        if e["name"] == "transport:packet_received"
    ]
    answers = [frames for frames in received if "stream" in frames]
    assert len(answers) >= 40, len(answers)
    with_ack = sum(1 for frames in answers if "ack" in frames)
    assert with_ack >= len(answers) - 3, (with_ack, len(answers))


def test_a_node_takes_a_limited_number_of_joins_at_once() -> None:
    """A boot storm: MAX_JOINING + 6 Nodes dial one seed at the same moment. The seed takes
    MAX_JOINING of them in (their handshakes and reverse connections under
    way) and refuses the rest at their first packet, cheaply; once those are
    connected it takes the next ones (bootstrap retries refusals)."""
    net = Net()
    seed = net.engine()
    # (Each from an address of its own: the per-IP limit is not what is tested.)
    nodes = [net.engine(host=f"127.0.{1 + i // 200}.{1 + i % 200}") for i in range(MAX_JOINING + 6)]
    commands = [(n, n.engine.connect(net.now, seed.node_info)) for n in nodes]
    net.run(lambda: all(n.result(c) is not None for n, c in commands))
    results = [n.result(c) for n, c in commands]
    assert all(isinstance(r, ConnectResult) for r in results)
    connected = [r for r in results if isinstance(r, ConnectResult) and r.peer is not None]
    refused = [
        (n, r)
        for (n, _), r in zip(commands, results, strict=True)
        if isinstance(r, ConnectResult) and r.peer is None
    ]
    assert len(connected) == MAX_JOINING and len(refused) == 6
    assert all(r.error.cause is Cause.REFUSED for _, r in refused), refused
    assert seed.engine.stats["refused: busy: too many joining at once"] == 6
    # The joins done, the seed takes the latecomers.
    for n, _ in refused:
        assert connect(net, n, seed).peer_addr == seed.addr


def test_one_address_holds_only_a_few_of_the_joining_slots() -> None:
    """Under pressure (half the joining slots taken, here by one Node each
    from 64 addresses) ten Nodes on one address dial a seed at once:
    MAX_JOINING_PER_IP get in, the rest are refused as busy, so hosts that
    open handshakes and never finish them cannot take every slot."""
    net = Net()
    seed = net.engine()
    pressure = [net.engine(host=f"127.0.3.{i}") for i in range(1, MAX_JOINING // 2 + 1)]
    nodes = [net.engine(host="127.0.2.1") for _ in range(MAX_JOINING_PER_IP + 2)]
    nodes = pressure + nodes
    commands = [(n, n.engine.connect(net.now, seed.node_info)) for n in nodes]
    net.run(lambda: all(n.result(c) is not None for n, c in commands))
    results = [n.result(c) for n, c in commands]
    assert sum(1 for r in results if isinstance(r, ConnectResult) and r.peer is not None) == (
        MAX_JOINING // 2 + MAX_JOINING_PER_IP
    )
    assert seed.engine.stats["refused: busy: too many joining from one address"] == 2
    # Another address is not held up by them.
    other = net.engine(host="127.0.2.2")
    assert connect(net, other, seed).peer_addr == seed.addr
