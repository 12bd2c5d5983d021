"""NAT lab (real kernel NAT in network namespaces): what peers behind NATs see.

Marked ``netns``: skipped with the reason where root, ``ip netns`` or ``nft``
are missing, a failure instead under ``QUIC_P2P_REQUIRE_NETNS=1`` (CI as root;
tests/conftest.py). Each test builds its own lab and always tears it down.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netlab import PUB2_ADDR, RDV_ADDR, NetLab, missing_conntrack
from netutil import python_argv, python_env

# netns: skip or fail (tests/conftest.py). xdist_group: under pytest-xdist
# (`-n N --dist loadgroup`, as the README and .ci/run use it) every lab test
# runs on one worker, one after another: labs never overlap (their timing,
# and their namespace names, derived from the worker's pid, are each one's).
pytestmark = [pytest.mark.netns, pytest.mark.xdist_group("netns")]

PEER = Path(__file__).resolve().parent / "nat_peer.py"
PUNCH_ATTEMPTS_PER_PAIR = int(os.environ.get("QUIC_P2P_PUNCH_ATTEMPTS", "20"))
RELAY = f"{RDV_ADDR}:4433"
#: How long a relayed pair that should punch is watched for its upgrade.
UPGRADE_WAIT = 5.0
ENV = python_env(PYTHONUNBUFFERED="1")


class Agent:
    """tests/nat_peer.py running inside a namespace."""

    def __init__(self, lab: NetLab, ns: str, *args: str) -> None:
        self.p = lab.popen(
            ns,
            *python_argv(str(PEER)),
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        self.out: queue.Queue[dict[str, object]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.get(30)
        self.info: dict[str, str] = ready["ready"]  # type: ignore[assignment]

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.out.put(json.loads(line))

    def get(self, timeout: float) -> dict[str, object]:
        try:
            return self.out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the peer process did not answer in time") from None

    def ask(self, op: str, timeout: float = 40, **kw: object) -> dict[str, object]:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.p.stdin.flush()
        return self.get(timeout)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[NetLab]:
    behaviours = getattr(request, "param", ("cone", "cone"))
    lab = NetLab(prefix=f"qp2p{os.getpid() % 10000}", behaviours=behaviours).up()
    agents: list[Agent] = []
    lab.agents = agents  # type: ignore[attr-defined]
    try:
        yield lab
    finally:
        for a in agents:
            a.stop()
        lab.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.prefix + "-" not in left, "lab namespaces left behind"


def agent(lab: NetLab, ns: str, *args: str) -> Agent:
    a = Agent(lab, ns, *args)
    lab.agents.append(a)  # type: ignore[attr-defined]
    return a


@pytest.mark.parametrize("lab", [("cone",), ("symmetric",)], indirect=True, ids=["cone", "symm"])
def test_client_behind_nat_reaches_a_public_node_and_sees_its_public_address(lab: NetLab) -> None:
    rdv = agent(lab, lab.rdv, "--ip", RDV_ADDR, "--port", "4433")
    host = lab.hosts[0]
    client = agent(
        lab, host.ns, "--ip", "0.0.0.0", "--type", "client", "--contact", json.dumps(rdv.info)
    )
    assert client.ask("connect", contact=rdv.info)["ok"] == f"{RDV_ADDR}:4433"
    seen = client.ask("echo")
    assert str(seen["ok"]).startswith(host.public_address + ":"), seen
    assert client.ask("send", to=rdv.info, msg="hello from behind a NAT") == {"ok": "sent"}


@pytest.mark.parametrize(
    ("lab", "same_port"),
    [(("cone",), True), (("symmetric",), False)],
    indirect=["lab"],
    ids=["cone", "symm"],
)
def test_nat_mapping_as_two_public_nodes_see_it(lab: NetLab, same_port: bool) -> None:
    """A cone NAT keeps one public port for every destination; a symmetric NAT
    uses a new one per destination, and the echo service reports the
    disagreement instead of hiding it."""
    rdv = agent(lab, lab.rdv, "--ip", RDV_ADDR, "--port", "4433")
    pub2 = agent(lab, lab.pub2, "--ip", PUB2_ADDR, "--port", "4433")
    host = lab.hosts[0]
    peer = agent(
        lab,
        host.ns,
        "--ip",
        "0.0.0.0",
        "--type",
        "client",
        "--contact",
        json.dumps(rdv.info),
        "--contact",
        json.dumps(pub2.info),
    )
    answer = peer.ask("echo")
    if same_port:
        assert str(answer.get("ok", "")).startswith(host.public_address + ":"), answer
    else:
        assert "disagree" in str(answer.get("error", "")), answer


@pytest.mark.parametrize(
    ("lab", "third_party_reaches"),
    [(("cone",), False), (("full-cone",), True)],
    indirect=["lab"],
    ids=["cone", "full-cone"],
)
def test_node_behind_nat_proof_and_third_party_reachability(
    lab: NetLab, third_party_reaches: bool
) -> None:
    """Measured behaviour: the reachability proof is made by the node that was
    dialled, from the same socket, so it rides the NAT mapping the dial created
    and passes even behind a port-restricted cone NAT. Whether anyone *else* can
    reach the node at that address depends on the NAT's filtering."""
    rdv = agent(lab, lab.rdv, "--ip", RDV_ADDR, "--port", "4433")
    host = lab.hosts[0]
    node = agent(lab, host.ns, "--ip", "0.0.0.0", "--port", "5000")
    assert node.ask("connect", contact=rdv.info)["ok"] == f"{RDV_ADDR}:4433"
    peers = rdv.ask("peers")["ok"]
    assert peers == [f"{host.public_address}:5000"], peers
    as_seen = {
        "peer_addr": f"{host.public_address}:5000",
        "peer_cert_der": node.info["peer_cert_der"],
    }
    pub2 = agent(lab, lab.pub2, "--ip", PUB2_ADDR, "--port", "4433")
    result = pub2.ask("connect", contact=as_seen, timeout=60)
    assert ("ok" in result) == third_party_reaches, result


@pytest.mark.parametrize(
    ("lab", "where", "reachable"),
    [
        (("cone",), "nat", False),
        (("full-cone",), "nat", True),
        (("symmetric",), "nat", False),
        (("cone",), "public", True),
    ],
    indirect=["lab"],
    ids=["cone", "full-cone", "symm", "public"],
)
def test_a_node_learns_whether_anyone_can_reach_it(
    lab: NetLab, where: str, reachable: bool
) -> None:
    """The Node proof passes behind a filtering NAT (it rides the dial's own
    mapping); check_reachability's dial from a fresh socket tells the truth."""
    rdv = agent(lab, lab.rdv, "--ip", RDV_ADDR, "--port", "4433")
    contact = json.dumps(rdv.info)
    if where == "public":
        node = agent(lab, lab.pub2, "--ip", PUB2_ADDR, "--port", "4433", "--contact", contact)
        public = PUB2_ADDR
    else:
        node = agent(lab, lab.hosts[0].ns, "--ip", "0.0.0.0", "--contact", contact)
        public = lab.hosts[0].public_address
    answer = node.ask("reach", via=RELAY)
    assert answer["ok"]["reachable"] is reachable, answer  # type: ignore[index]
    assert str(answer["ok"]["address"]).startswith(public + ":"), answer  # type: ignore[index]


def _punch_lab(lab: NetLab, *, relay: bool = False) -> tuple[Agent, Agent, Agent]:
    """A rendezvous Node on the public side (relaying if asked) and a Node
    behind each NAT, both connected to it (the proof rides the mapping their
    dial created)."""
    extra = ("--relay",) if relay else ()
    rdv = agent(lab, lab.rdv, "--ip", RDV_ADDR, "--port", "4433", *extra)
    contact = json.dumps(rdv.info)
    a = agent(lab, lab.hosts[0].ns, "--ip", "0.0.0.0", "--contact", contact, "--timeout", "60")
    b = agent(lab, lab.hosts[1].ns, "--ip", "0.0.0.0", "--contact", contact, "--timeout", "60")
    return rdv, a, b


def _as_seen(observer: Agent, x: Agent, host_public: str) -> dict[str, str]:
    """x's NodeInfo as a peer connected to it sees it (its NAT's address)."""
    seen: list[str] = []
    for _ in range(50):  # until the observer has dropped x's previous socket
        peers = observer.ask("peers")["ok"]
        seen = [str(p) for p in peers if str(p).startswith(host_public + ":")]  # type: ignore[union-attr]
        if len(seen) == 1:
            break
        time.sleep(0.1)
    assert len(seen) == 1, seen
    return {"peer_addr": seen[0], "peer_cert_der": x.info["peer_cert_der"]}


@dataclass
class Attempt:
    connected: bool
    seconds: float  # until connect_to returned
    path: str  # "direct", the relay's address, or the error
    direct_after: float | None = None  # until the path was direct, upgrade included


def _attempt(
    rdv: Agent,
    a: Agent,
    b: Agent,
    host_b_public: str,
    *,
    await_upgrade: bool = False,
    **options: object,
) -> Attempt:
    """One connect from a to b via the rendezvous. With ``await_upgrade``, a
    relayed result is watched (up to UPGRADE_WAIT s) for the background
    punches moving it to the direct path."""
    target = _as_seen(rdv, b, host_b_public)
    started = time.monotonic()
    result = a.ask("connect", contact=target, via=RELAY, timeout=90, **options)
    took = time.monotonic() - started
    if "ok" not in result:
        return Attempt(False, took, str(result))
    path = a.ask("path", peer=target["peer_addr"])["ok"]
    found = Attempt(True, took, "direct" if path is None else str(path))
    if path is None:
        found.direct_after = took
    elif await_upgrade:
        for _ in range(int(UPGRADE_WAIT / 0.05)):
            time.sleep(0.05)
            if a.ask("path", peer=target["peer_addr"])["ok"] is None:
                found.direct_after = time.monotonic() - started
                break
    return found


def _exactly_once(
    rdv: Agent, a: Agent, b: Agent, lab: NetLab, n: int = 100, expect_relay: str | None = None
) -> None:
    """n messages each way between a and b, each acknowledged and received
    exactly once; both sides report the path they use. Each side addresses the
    other where it is connected to it (behind a symmetric NAT that is not
    where the rendezvous sees it)."""
    to_b = _as_seen(a, b, lab.hosts[1].public_address)
    to_a = _as_seen(b, a, lab.hosts[0].public_address)
    assert a.ask("path", peer=to_b["peer_addr"])["ok"] == expect_relay
    assert b.ask("path", peer=to_a["peer_addr"])["ok"] == expect_relay
    a.ask("inbox")
    b.ask("inbox")
    for sender, to, tag in ((a, to_b, "a>b "), (b, to_a, "b>a ")):
        out = sender.ask("sendmany", to=to, prefix=tag, n=n, timeout=60)
        assert out == {"ok": {"sent": n, "unsent": []}}, out
    for receiver, tag in ((b, "a>b "), (a, "b>a ")):
        got = receiver.ask("inbox")["ok"]["messages"]  # type: ignore[index]
        assert sorted(got) == sorted(f"{tag}{i}" for i in range(n))


def _fresh(*agents: Agent) -> None:
    for x in agents:
        answer = x.ask("restart", timeout=60)
        assert "ok" in answer, answer
        x.info = answer["ok"]  # type: ignore[assignment]


@pytest.mark.parametrize("lab", [("symmetric", "symmetric")], indirect=True, ids=["symm-symm"])
def test_symmetric_nats_without_a_relay_fail_clearly_in_bounded_time(lab: NetLab) -> None:
    rdv, a, b = _punch_lab(lab)  # this rendezvous does not relay
    found = _attempt(rdv, a, b, lab.hosts[1].public_address)
    print(f"\nsymmetric x symmetric, no relay: {found}")
    assert not found.connected
    assert "hole punching failed" in found.path and "symmetric" in found.path
    assert "did not relay" in found.path
    # Bounded means "did not hang": a generous margin under the command's own
    # 90 s, not a measurement (the time is printed with -s, and docs/nat.md
    # records the lab's figures).
    assert found.seconds < 60


@pytest.mark.parametrize("lab", [("cone", "cone")], indirect=True, ids=["cone-cone"])
def test_relayed_pair_upgrades_to_direct_through_real_nats(lab: NetLab) -> None:
    """Relayed first (punching off), then one punch moves the live
    connection to the direct path; no message is lost or doubled."""
    rdv, a, b = _punch_lab(lab, relay=True)
    found = _attempt(rdv, a, b, lab.hosts[1].public_address, punch=False)
    assert found.connected and found.path == RELAY, found
    _exactly_once(rdv, a, b, lab, expect_relay=RELAY)
    found = _attempt(rdv, a, b, lab.hosts[1].public_address)
    print(f"\nrestricted x restricted: relayed -> {found.path} in {found.seconds:.2f} s")
    assert found.connected and found.path == "direct", found
    to_a = _as_seen(rdv, a, lab.hosts[0].public_address)
    for _ in range(50):  # b moves when its own probe reached a
        if b.ask("path", peer=to_a["peer_addr"])["ok"] is None:
            break
        time.sleep(0.1)
    for side in (a, b):  # each side reports its one upgrade once
        box = side.ask("inbox")["ok"]
        assert box["paths"] == ["relayed>direct"] and len(box["upgraded"]) == 1, box  # type: ignore[index]
    _exactly_once(rdv, a, b, lab, expect_relay=None)


# The matrix in this lab's NATs: "cone" there is our full-cone (any
# source may answer), "restricted" our cone (port-restricted: only the exact
# address and port we sent to), "symmetric" the same. The rendezvous relays,
# so each pair ends direct (punched) or relayed, never failed.
MATRIX = [
    (("full-cone", "full-cone"), "direct"),
    (("full-cone", "cone"), "direct"),
    (("cone", "cone"), "direct"),
    (("symmetric", "full-cone"), "direct"),
    (("symmetric", "cone"), RELAY),
    (("symmetric", "symmetric"), RELAY),
]


@pytest.mark.parametrize(
    ("lab", "expected"),
    MATRIX,
    indirect=["lab"],
    ids=["-".join(pair) for pair, _ in MATRIX],
)
def test_nat_traversal_matrix(lab: NetLab, expected: str) -> None:
    """20 connects per NAT pair from fresh sockets: the share that ends
    direct (punched) or relayed and the median time to get there are printed
    (-s) and recorded in docs/nat.md; messages then flow exactly once."""
    rdv, a, b = _punch_lab(lab, relay=True)
    results = []
    for i in range(PUNCH_ATTEMPTS_PER_PAIR):
        if i:
            _fresh(a, b)
        results.append(
            _attempt(rdv, a, b, lab.hosts[1].public_address, await_upgrade=expected == "direct")
        )
    first = sorted(r.seconds for r in results if r.path == "direct")
    direct = sorted(r.direct_after for r in results if r.direct_after is not None)
    relayed = sorted(r.seconds for r in results if r.path == RELAY)
    failed = [r for r in results if not r.connected]

    def median(xs: list[float]) -> str:
        return f"{xs[len(xs) // 2]:.2f} s" if xs else "-"

    pair = " x ".join(h.behaviour for h in lab.hosts)
    print(
        f"\n{pair}: {len(direct)}/{len(results)} direct (median {median(direct)}; "
        f"{len(first)} by the first punch, {len(direct) - len(first)} by an upgrade), "
        f"{len(relayed)} connected relayed first (median {median(relayed)}), "
        f"{len(failed)} failed; slowest connect {max(r.seconds for r in results):.2f} s, "
        f"slowest to direct {max(direct, default=float('nan')):.2f} s"
    )
    assert not failed, failed
    # Bounded: never a hang (a generous margin, not a measurement: the medians
    # printed above are the figures, recorded in docs/nat.md).
    assert max(r.seconds for r in results) < 60
    if expected == "direct":
        assert len(direct) >= 0.95 * len(results), results
    else:
        assert len(relayed) == len(results), results
    last = "direct" if results[-1].direct_after is not None else results[-1].path
    _exactly_once(rdv, a, b, lab, expect_relay=None if last == "direct" else last)


@pytest.mark.parametrize(
    ("lab", "kind", "port_changes"),
    [
        (("cone",), "client", False),
        (("symmetric",), "client", True),
        (("symmetric",), "node", True),
    ],
    indirect=["lab"],
    ids=["cone-keeps-port", "symm-new-port", "node-symm-new-port"],
)
def test_a_peer_survives_its_nat_forgetting_the_mapping(
    lab: NetLab, kind: str, port_changes: bool, record_property: Any
) -> None:
    """The Client's NAT loses its conntrack state mid-connection (conntrack
    -F, as a router reboot or a mapping timeout does). Its next packet gets a
    new mapping: the same public port under ``persistent`` (cone), a new
    random one under ``fully-random`` (symm), i.e. a NAT rebinding. The
    Node keeps the Client as the same peer, on the same connection (QUIC
    migrates the path), reports PeerAddressChanged when the port moved, and
    messages flow both ways. A Node behind the NAT also has the public
    Node's connection back to it, which the move strands (aioquic, as its
    client, drops what comes from the new address): the public Node drops
    it and goes on over the other, and the NATed Node keeps the peer when
    the stranded one idles out (5 s here), so messages still flow after."""
    why = missing_conntrack()
    if why is not None:
        pytest.skip(why)
    rdv = agent(lab, lab.rdv, "--ip", RDV_ADDR, "--port", "4433")
    host = lab.hosts[0]
    client = agent(
        lab, host.ns, "--ip", "0.0.0.0", "--type", kind, "--contact", json.dumps(rdv.info)
    )
    client_id, rdv_id = client.info["peer_id"], rdv.info["peer_id"]
    assert client_id and rdv_id and client_id != rdv_id, (client.info, rdv.info)

    def the_client() -> dict[str, str]:
        peers = rdv.ask("peerids")["ok"]
        assert isinstance(peers, list) and len(peers) == 1, peers
        (peer,) = peers
        assert peer["peer_id"] == client_id and peer["kind"] == kind, peers
        return peer  # type: ignore[no-any-return]

    def mapped() -> str:
        """The public address the NAT maps the Client's flow to the Node to."""
        flows = lab.udp_mappings(host.nat_ns)
        (public,) = [
            v for k, v in flows.items() if k[0] == host.address and k[2:] == (RDV_ADDR, 4433)
        ]
        return f"{public[0]}:{public[1]}"

    assert client.ask("send", to=rdv.info, msg="up before") == {"ok": "sent"}
    assert rdv.ask("sendid", peer_id=client_id, msg="down before") == {"ok": "sent"}
    before = the_client()["addr"]
    assert before == mapped() and before.startswith(host.public_address + ":"), before
    rdv.ask("events")
    client.ask("events")

    report = lab.flush_conntrack(host.nat_ns)
    started = time.monotonic()
    assert client.ask("send", to=rdv.info, msg="up after") == {"ok": "sent"}
    took = time.monotonic() - started
    print(f"\n{host.behaviour}: conntrack -F ({report}); first message after it in {took:.3f} s")
    record_property("nat_flush_recovery_s", f"{took:.3f}")
    assert rdv.ask("sendid", peer_id=client_id, msg="down after") == {"ok": "sent"}

    # The lab did what it should (a new port under fully-random, the same
    # under persistent), and the Node follows the NAT's new mapping.
    now = mapped()
    assert (now != before) is port_changes, (before, now)
    after = the_client()["addr"]
    assert after == now, (before, after, now)
    node_events = rdv.ask("events")["ok"]
    client_events = client.ask("events")["ok"]
    assert isinstance(node_events, list) and isinstance(client_events, list)
    moved = [e for e in node_events if e["type"] == "PeerAddressChanged"]
    expected = [{"type": "PeerAddressChanged", "peer_id": client_id, "old": before, "new": after}]
    assert moved == (expected if port_changes else []), node_events
    for events, other_id, msg in (
        (node_events, client_id, "up after"),
        (client_events, rdv_id, "down after"),
    ):
        got = [e for e in events if e["type"] == "NewMessage"]
        assert [(e["msg"], e["peer_id"]) for e in got] == [(msg, other_id)], events
        assert not [e for e in events if e["type"] in ("ConnectionFailure", "ConnectedTo")], events
    assert the_client()["addr"] == after
    if kind == "node":
        time.sleep(6)  # past the stranded connection's idle timeout (5 s)
        assert client.ask("send", to=rdv.info, msg="up later") == {"ok": "sent"}
        assert rdv.ask("sendid", peer_id=client_id, msg="down later") == {"ok": "sent"}
        for x in (rdv, client):
            later = x.ask("events")["ok"]
            assert isinstance(later, list)
            assert not [e for e in later if e["type"] == "ConnectionFailure"], later
        assert the_client()["addr"] == after
