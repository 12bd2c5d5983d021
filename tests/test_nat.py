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
