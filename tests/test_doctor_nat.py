"""NAT lab: ``quic-p2p doctor`` behind a real kernel NAT, asking the lab's two
public hosts (``rdv`` and ``pub2``, each running ``quic-p2p node``).

Marked ``netns``: skipped with the reason where root, ``ip netns`` or ``nft``
are missing, a failure instead under ``QUIC_P2P_REQUIRE_NETNS=1``
(tests/conftest.py), like tests/test_nat.py. Each test builds its own lab and
always tears it down. Run with ``-s`` to see the reports.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netlab import PUB2_ADDR, RDV_ADDR, NetLab
from netutil import Lines, python_argv, python_env

# As tests/test_nat.py: the lab's tests share one xdist worker, one at a time.
pytestmark = [pytest.mark.netns, pytest.mark.xdist_group("netns")]

PORT = 4433
#: The doctor's own port behind the NAT: a cone NAT keeps it, which the
#: report shows.
DOCTOR_PORT = 5000


class Node:
    """``quic-p2p node`` inside a lab namespace; ``contact`` is PEER_ID@HOST:PORT."""

    def __init__(self, lab: NetLab, ns: str, ip: str, cache: Path) -> None:
        self.p = lab.popen(
            ns,
            *python_argv("-m", "quic_p2p", "node", "--ip", ip, "--port", str(PORT)),
            "--no-stdin",
            "--cache-dir",
            str(cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=python_env(PYTHONUNBUFFERED="1"),
        )
        self.lines = Lines(self.p)
        peer_id = self.lines.expect("Our id:", timeout=30).split(":", 1)[1].strip()
        self.contact = f"{peer_id}@{ip}:{PORT}"

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=10)


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[NetLab, list[str]]]:
    """The lab with ``rdv`` and ``pub2`` running nodes; their contacts."""
    lab = NetLab(prefix=f"qpdoc{os.getpid() % 10000}", behaviours=request.param).up()
    nodes: list[Node] = []
    try:
        for ns, ip in ((lab.rdv, RDV_ADDR), (lab.pub2, PUB2_ADDR)):
            nodes.append(Node(lab, ns, ip, tmp_path / ns))
        yield lab, [n.contact for n in nodes]
    finally:
        for n in nodes:
            n.stop()
        lab.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.prefix + "-" not in left, "lab namespaces left behind"


def doctor(lab: NetLab, *args: str) -> subprocess.CompletedProcess[str]:
    """``quic-p2p doctor`` on the first private host (bound 0.0.0.0:5000)."""
    argv = ["ip", "netns", "exec", lab.hosts[0].ns]
    argv += python_argv("-m", "quic_p2p", "doctor", "--port", str(DOCTOR_PORT), *args)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=python_env(COLUMNS="100")
    )


def show(lab: NetLab, contacts: list[str], out: subprocess.CompletedProcess[str]) -> None:
    """The report as the issue's closing note quotes it (``pytest -s``)."""
    host = lab.hosts[0]
    print(f"\n# {host.address} behind a {host.behaviour} NAT ({host.public_address})")
    print(f"$ quic-p2p doctor --port {DOCTOR_PORT} {' '.join(contacts)}")
    print(out.stdout)


def findings(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert out.returncode == 0, out.stdout + out.stderr
    return {f["name"]: f for f in json.loads(out.stdout)["findings"]}


@pytest.mark.parametrize("lab", [("cone",)], indirect=True)
def test_doctor_behind_a_cone_nat(lab: tuple[NetLab, list[str]]) -> None:
    net, contacts = lab
    text = doctor(net, *contacts)
    show(net, contacts, text)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "endpoint-independent mapping" in text.stdout
    got = findings(doctor(net, "--json", *contacts))
    public = net.hosts[0].public_address
    assert got["external-address"]["verdict"] == "ok"
    seen = set(got["external-address"]["data"]["answers"].values())
    assert seen == {f"{public}:{DOCTOR_PORT}"}, seen  # persistent masquerade keeps the port
    assert got["nat"]["data"] == {"nat": True}
    assert got["nat-mapping"]["data"]["mapping"] == "endpoint-independent"
    assert got["nat-mapping"]["verdict"] == "ok"
    # Port-restricted: the check from a fresh socket does not get in.
    assert got["reachability"]["verdict"] == "warn"
    assert got["reachability"]["data"]["reachable"] is False


@pytest.mark.parametrize("lab", [("symmetric",)], indirect=True)
def test_doctor_behind_a_symmetric_nat(lab: tuple[NetLab, list[str]]) -> None:
    net, contacts = lab
    text = doctor(net, *contacts)
    show(net, contacts, text)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "endpoint-dependent mapping" in text.stdout
    got = findings(doctor(net, "--json", *contacts))
    answers = got["external-address"]["data"]["answers"]
    assert got["external-address"]["verdict"] == "warn"
    assert "disagree" in got["external-address"]["detail"]
    assert len(set(answers.values())) == 2, answers  # a new port per destination
    assert all(a.startswith(net.hosts[0].public_address + ":") for a in answers.values())
    assert got["nat-mapping"]["data"]["mapping"] == "endpoint-dependent"
    assert got["nat-mapping"]["verdict"] == "warn"
    assert got["reachability"]["data"]["reachable"] is False
