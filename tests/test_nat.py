"""NAT lab (real kernel NAT in network namespaces): what peers behind NATs see.

Marked ``netns``: skipped with the reason where root, ``ip netns`` or ``nft``
are missing. Each test builds its own lab and always tears it down.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import quic_p2p

from netlab import PUB2_ADDR, RDV_ADDR, NetLab, missing_capability

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(missing_capability() is not None, reason=str(missing_capability())),
]

PEER = Path(__file__).resolve().parent / "nat_peer.py"
PUNCH_ATTEMPTS_PER_PAIR = int(os.environ.get("QUIC_P2P_PUNCH_ATTEMPTS", "20"))
ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": str(Path(quic_p2p.__file__).resolve().parent.parent),
}


class Agent:
    """tests/nat_peer.py running inside a namespace."""

    def __init__(self, lab: NetLab, ns: str, *args: str) -> None:
        self.p = lab.popen(
            ns,
            sys.executable,
            str(PEER),
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


def _punch_lab(lab: NetLab) -> tuple[Agent, Agent, Agent]:
    """A rendezvous Node on the public side and a Node behind each NAT, both
    connected to it (the proof rides the mapping their dial created)."""
    rdv = agent(lab, lab.rdv, "--ip", RDV_ADDR, "--port", "4433")
    contact = json.dumps(rdv.info)
    a = agent(lab, lab.hosts[0].ns, "--ip", "0.0.0.0", "--contact", contact, "--timeout", "60")
    b = agent(lab, lab.hosts[1].ns, "--ip", "0.0.0.0", "--contact", contact, "--timeout", "60")
    return rdv, a, b


def _attempt(rdv: Agent, a: Agent, b: Agent, host_b_public: str) -> tuple[bool, float, str]:
    """One punch from a to b via the rendezvous: (direct, seconds, detail)."""
    seen: list[str] = []
    for _ in range(50):  # until the rendezvous has dropped b's previous socket
        seen = [str(p) for p in rdv.ask("peers")["ok"] if str(p).startswith(host_b_public + ":")]  # type: ignore[union-attr]
        if len(seen) == 1:
            break
        time.sleep(0.1)
    assert len(seen) == 1, seen
    target = {"peer_addr": seen[0], "peer_cert_der": b.info["peer_cert_der"]}
    started = time.monotonic()
    result = a.ask("connect", contact=target, via=f"{RDV_ADDR}:4433", timeout=90)
    return "ok" in result, time.monotonic() - started, str(result)


def _fresh(*agents: Agent) -> None:
    for x in agents:
        answer = x.ask("restart", timeout=60)
        assert "ok" in answer, answer
        x.info = answer["ok"]  # type: ignore[assignment]


@pytest.mark.parametrize("lab", [("cone", "cone")], indirect=True, ids=["cone-cone"])
def test_hole_punching_between_cone_nats(lab: NetLab) -> None:
    """20 punches, each from fresh sockets (new NAT mappings): direct
    connections between two Nodes behind port-restricted cone NATs."""
    rdv, a, b = _punch_lab(lab)
    results = []
    for i in range(PUNCH_ATTEMPTS_PER_PAIR):
        if i:
            _fresh(a, b)
        results.append(_attempt(rdv, a, b, lab.hosts[1].public_address))
    ok = [r for r in results if r[0]]
    times = sorted(r[1] for r in ok)
    median = times[len(times) // 2] if times else float("nan")
    print(f"\ncone x cone: {len(ok)}/{len(results)} direct, median time to direct {median:.2f} s")
    assert len(ok) >= 0.95 * len(results), [r[2] for r in results if not r[0]]
    # The last punched pair carries messages both ways, directly.
    a_port = str(a.info["peer_addr"]).rsplit(":", 1)[1]
    to_a = {
        "peer_addr": f"{lab.hosts[0].public_address}:{a_port}",
        "peer_cert_der": a.info["peer_cert_der"],
    }
    assert b.ask("send", to=to_a, msg="punched") == {"ok": "sent"}


@pytest.mark.parametrize("lab", [("symmetric", "symmetric")], indirect=True, ids=["symm-symm"])
def test_hole_punching_between_symmetric_nats_fails_clearly_in_bounded_time(lab: NetLab) -> None:
    rdv, a, b = _punch_lab(lab)
    direct, seconds, detail = _attempt(rdv, a, b, lab.hosts[1].public_address)
    print(f"\nsymmetric x symmetric: direct={direct} after {seconds:.1f} s: {detail}")
    assert not direct
    assert "hole punching failed" in detail and "symmetric" in detail
    assert seconds < 30


# The matrix in this lab's NATs: "cone" there is our full-cone (any
# source may answer), "restricted" our cone (port-restricted: only the exact
# address and port we sent to), "symmetric" the same.
MATRIX = [
    (("full-cone", "full-cone"), True),
    (("full-cone", "cone"), True),
    (("symmetric", "full-cone"), True),
]


@pytest.mark.parametrize(
    ("lab", "expect_direct"),
    MATRIX,
    indirect=["lab"],
    ids=["-".join(pair) for pair, _ in MATRIX],
)
def test_hole_punching_matrix(lab: NetLab, expect_direct: bool) -> None:
    """20 punches per NAT pair from fresh sockets; success rate and median
    time to direct are printed (-s) and recorded in docs/nat.md."""
    rdv, a, b = _punch_lab(lab)
    results = []
    for i in range(PUNCH_ATTEMPTS_PER_PAIR):
        if i:
            _fresh(a, b)
        results.append(_attempt(rdv, a, b, lab.hosts[1].public_address))
    ok = sorted(r[1] for r in results if r[0])
    median = ok[len(ok) // 2] if ok else float("nan")
    pair = " x ".join(h.behaviour for h in lab.hosts)
    print(f"\n{pair}: {len(ok)}/{len(results)} direct, median time to direct {median:.2f} s")
    if expect_direct:
        assert len(ok) >= 0.95 * len(results), [r[2] for r in results if not r[0]]
    else:
        assert not ok
