"""``quic-p2p doctor``: the verdicts from given facts, and the command on
loopback against real endpoints (no network is mocked: contacts are
``QuicP2p`` nodes started here). The NAT lab's runs are in
tests/test_doctor_nat.py."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from quic_p2p import Config, NodeInfo, OurType, QuicP2p, TrustMode
from quic_p2p.certfiles import create_ca, generate_self_signed, issue_certificate
from quic_p2p.doctor import (
    QUIC_GO_BUFFER,
    BufferProbe,
    Check,
    EchoAnswer,
    FamilyProbe,
    Finding,
    MappingBehaviour,
    Report,
    Verdict,
    buffer_finding,
    classify_mapping,
    clock_finding,
    diagnose,
    family_findings,
    mapping_finding,
    render_json,
    render_text,
    trust_finding,
)
from quic_p2p.peer import Address

from netutil import endpoints, node_config, python_argv, python_env, third_addresses

MiB = 1024 * 1024
NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
LAN = ("10.1.0.2", 5000)


# ------------------------------------------------------------------ verdicts from facts
def answer(contact: Address, seen: Address | None, local: Address = LAN) -> EchoAnswer:
    return EchoAnswer(contact, None, seen, local, "" if seen else "no answer in time")


@pytest.mark.parametrize(
    ("answers", "behaviour", "words"),
    [
        (
            [answer(("127.0.0.1", 1), LAN), answer(("127.0.0.1", 2), LAN)],
            MappingBehaviour.NO_NAT,
            "no NAT in the path",
        ),
        (
            [
                answer(("203.0.113.10", 4433), ("203.0.113.21", 5000)),
                answer(("203.0.113.11", 4433), ("203.0.113.21", 5000)),
            ],
            MappingBehaviour.ENDPOINT_INDEPENDENT,
            "2 destinations see the same 203.0.113.21:5000",
        ),
        (
            [
                answer(("203.0.113.10", 4433), ("203.0.113.21", 5000)),
                answer(("203.0.113.10", 4434), ("203.0.113.21", 5000)),
            ],
            MappingBehaviour.ENDPOINT_INDEPENDENT,
            "share one IP address",
        ),
        (
            [
                answer(("203.0.113.10", 4433), ("203.0.113.21", 21462)),
                answer(("203.0.113.11", 4433), ("203.0.113.21", 21806)),
            ],
            MappingBehaviour.ENDPOINT_DEPENDENT,
            "203.0.113.10:4433 sees 203.0.113.21:21462, 203.0.113.11:4433 sees 203.0.113.21:21806",
        ),
        (
            # One contact on our side of the NAT sees us directly: it tells
            # nothing about the mapping, and one beyond cannot compare.
            [answer(("10.1.0.9", 4433), LAN), answer(("203.0.113.10", 4433), ("203.0.113.21", 1))],
            MappingBehaviour.UNKNOWN,
            "one contact beyond the NAT",
        ),
        (
            [
                answer(("203.0.113.10", 4433), ("203.0.113.21", 1)),
                answer(("203.0.113.11", 1), None),
            ],
            MappingBehaviour.UNKNOWN,
            "one contact beyond the NAT",
        ),
        ([answer(("203.0.113.10", 4433), None)], MappingBehaviour.UNKNOWN, "no contact answered"),
    ],
    ids=["no-nat", "independent", "same-ip", "dependent", "lan-and-wan", "one-silent", "silent"],
)
def test_mapping_from_what_each_contact_sees(
    answers: list[EchoAnswer], behaviour: MappingBehaviour, words: str
) -> None:
    got, why = classify_mapping(answers)
    assert got is behaviour
    assert words in why
    finding = mapping_finding(answers)
    expected = {
        MappingBehaviour.NO_NAT: Verdict.OK,
        MappingBehaviour.ENDPOINT_INDEPENDENT: Verdict.OK,
        MappingBehaviour.ENDPOINT_DEPENDENT: Verdict.WARN,
        MappingBehaviour.UNKNOWN: Verdict.SKIP,
    }
    assert finding.verdict is expected[behaviour]
    assert finding.data["mapping"] == behaviour.value
    if behaviour is MappingBehaviour.ENDPOINT_DEPENDENT:
        assert "endpoint-dependent mapping" in finding.detail


def test_no_contacts_means_the_mapping_is_skipped_with_the_reason() -> None:
    finding = mapping_finding([])
    assert finding.verdict is Verdict.SKIP
    assert "no CONTACT given" in finding.detail


@pytest.mark.parametrize(
    ("reported", "linux", "verdict"),
    [
        (8 * MiB, True, Verdict.OK),  # rmem_max >= 4 MiB: Linux reports 2 x 4 MiB
        (QUIC_GO_BUFFER, True, Verdict.OK),  # rmem_max 3.5 MiB: what quic-go accepts too
        (416 * 1024, True, Verdict.WARN),  # the default rmem_max, 208 KiB, doubled
        (4 * MiB, False, Verdict.OK),  # elsewhere: all we asked for
        (2 * MiB, False, Verdict.WARN),
    ],
)
def test_buffer_sizes_against_quic_go(reported: int, linux: bool, verdict: Verdict) -> None:
    probe = BufferProbe("receive", 4 * MiB, reported, 208 * 1024)
    finding = buffer_finding(probe, linux=linux)
    assert finding.name is Check.RECEIVE_BUFFER
    assert finding.verdict is verdict
    if verdict is Verdict.WARN:
        assert "net.core.rmem_max = 208 KiB" in finding.detail
        assert "sysctl -w net.core.rmem_max=7500000" in finding.detail
    send = buffer_finding(BufferProbe("send", 4 * MiB, reported, None), linux=linux)
    assert send.name is Check.SEND_BUFFER and send.verdict is verdict


def test_families_fail_only_for_the_family_we_bind() -> None:
    v4 = FamilyProbe(socket.AF_INET, target="198.51.100.1", source="192.0.2.2")
    no_v6 = FamilyProbe(socket.AF_INET6, socket_error="Address family not supported")
    four, six, dual = family_findings(v4, no_v6, None, "0.0.0.0")
    assert (four.verdict, six.verdict, dual.verdict) == (Verdict.OK, Verdict.OK, Verdict.SKIP)
    assert "not used" in six.detail
    four, six, dual = family_findings(v4, no_v6, None, "::1")
    assert six.verdict is Verdict.FAIL
    # Bound to :: where IPv6 sockets are IPv6-only: IPv4 peers are lost.
    v6 = FamilyProbe(socket.AF_INET6, target="2001:db8::1", source="fd00::2")
    *_, dual = family_findings(v4, v6, True, "::")
    assert dual.verdict is Verdict.WARN and "IPv4 peers cannot reach us" in dual.detail
    unrouted = FamilyProbe(socket.AF_INET, target="198.51.100.1", route_error="unreachable")
    four, *_ = family_findings(unrouted, v6, False, "0.0.0.0")
    assert four.verdict is Verdict.WARN


def test_clock_checks_our_certificates_dates() -> None:
    ours = generate_self_signed().cert_der
    now = datetime.datetime.now(datetime.UTC)
    ok = clock_finding(now, ours, [], floor=datetime.date(2024, 1, 1))
    assert ok.verdict is Verdict.OK
    # A clock before the CA bundle's publication cannot be right.
    early = clock_finding(NOW.replace(year=2020), None, [], floor=datetime.date(2024, 1, 1))
    assert early.verdict is Verdict.FAIL and "before this installation's CA bundle" in early.detail
    later = now + datetime.timedelta(days=4000)
    assert clock_finding(later, ours, [], floor=None).verdict is Verdict.FAIL
    peer = clock_finding(later, None, [("a peer's certificate", ours)], floor=None)
    assert peer.verdict is Verdict.WARN and "no longer valid" in peer.detail


def test_trust_configuration() -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca, other = create_ca("doctor test CA"), create_ca("another CA")
    mine = issue_certificate(ca, "node-1", dns_names=["net.example"])

    def trust(our: Any = None, **kw: Any) -> Finding:
        config = Config(our_complete_cert=our, **kw)
        cert = our.cert_der if our is not None else None
        chain = our.chain_der if our is not None else ()
        return trust_finding(config, cert, chain, now)

    assert trust().verdict is Verdict.OK
    ca_mode: dict[str, Any] = {"trust_mode": TrustMode.PRIVATE_CA, "ca_certs_der": [ca.cert_der]}
    refused = trust(**ca_mode)
    assert refused.verdict is Verdict.FAIL and "self-signed" in refused.detail
    assert trust(mine, **ca_mode).verdict is Verdict.OK
    stranger = trust(issue_certificate(other, "node-2"), **ca_mode)
    assert stranger.verdict is Verdict.FAIL and "not issued by this network's CA" in stranger.detail
    named = trust(mine, tls_server_name="net.example", **ca_mode)
    assert named.verdict is Verdict.OK
    unnamed = trust(mine, tls_server_name="other.example", **ca_mode)
    assert unnamed.verdict is Verdict.FAIL and "does not carry other.example" in unnamed.detail
    soon = trust(issue_certificate(ca, "node-3", valid_days=10), **ca_mode)
    assert soon.verdict is Verdict.WARN and "expires in" in soon.detail


def test_exit_code_and_renderings() -> None:
    findings = (
        Finding(Check.ACCELERATOR, Verdict.OK, "c"),
        Finding(Check.NAT, Verdict.SKIP, "no CONTACT given"),
        Finding(Check.CLOCK, Verdict.WARN, "odd " * 60),
    )
    report = Report(findings)
    assert report.exit_code == 0
    text = render_text(report, width=80)
    lines = text.splitlines()
    assert lines[1].startswith("OK    accelerator ")
    assert lines[2].startswith("SKIP  nat ")
    assert lines[3].startswith("WARN  clock ")
    assert all(len(line) <= 80 for line in lines)
    assert lines[-1].endswith("exit code 0")
    failed = Report((*findings, Finding(Check.TRUST, Verdict.FAIL, "bad")))
    assert failed.exit_code == 1
    data = json.loads(render_json(failed))
    assert data["exit_code"] == 1
    assert [(f["name"], f["verdict"]) for f in data["findings"]][-1] == ("trust", "fail")


# ------------------------------------------------------------------ on loopback
def by_name(report_json: str) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in json.loads(report_json)["findings"]}


async def doctor(*args: str) -> tuple[int, str, str]:
    """``quic-p2p doctor`` as a subprocess, while this loop serves the contacts."""
    proc = await asyncio.create_subprocess_exec(
        *python_argv("-m", "quic_p2p", "doctor", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=python_env(COLUMNS="100"),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def contact(node: QuicP2p) -> str:
    return f"{node.peer_id}@127.0.0.1:{node.local_addr[1]}"


async def test_doctor_on_loopback_with_two_contacts_passes(tmp_path: Path) -> None:
    configs = [node_config(bootstrap_cache_dir=str(tmp_path / n)) for n in "ab"]
    async with endpoints(*configs) as (a, b):
        rc, out, err = await doctor("--ip", "127.0.0.1", contact(a), contact(b))
        print(out)
        assert rc == 0, out + err
        lines = {
            line.split()[1]: line
            for line in out.splitlines()
            if line.split()[:1] and line.split()[0] in Verdict.__members__
        }
        assert not [line for line in lines.values() if line.startswith("FAIL")], out
        assert lines["external-address"].startswith("OK")
        assert "as 2 contacts see it" in lines["external-address"]
        assert lines["nat"].startswith("OK") and "none: contacts see us at" in lines["nat"]
        assert "no NAT in the path" in lines["nat-mapping"]
        assert lines["reachability"].startswith("OK")
        # The same contacts as JSON, and our address as they saw it.
        rc, out, err = await doctor("--ip", "127.0.0.1", "--json", contact(a), contact(b))
        assert rc == 0, err
        got = by_name(out)
        ours = json.loads(out)["local_addr"]
        assert got["external-address"]["data"]["answers"] == {
            f"127.0.0.1:{a.local_addr[1]}": ours,
            f"127.0.0.1:{b.local_addr[1]}": ours,
        }
        assert got["nat-mapping"]["data"]["mapping"] == "no NAT"
        assert got["reachability"]["data"]["reachable"] is True


def test_doctor_without_contacts_says_what_it_could_not_check(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = subprocess.run(
        python_argv("-m", "quic_p2p", "doctor", "--ip", "127.0.0.1"),
        capture_output=True,
        text=True,
        timeout=60,
        env=python_env(COLUMNS="100", TMPDIR=str(tmp)),
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    for name in ("external-address", "nat", "nat-mapping", "reachability"):
        (line,) = [line for line in out.splitlines() if line.split()[1:2] == [name]]
        assert line.startswith("SKIP") and "no CONTACT given" in line, line
    assert "endpoint" in out and "clock" in out and "trust" in out
    assert list(tmp.iterdir()) == []  # its temporary cache directory is gone
    # The node's own cache directory (tests/conftest.py points it here) untouched.
    assert list(Path(os.environ["XDG_CACHE_HOME"]).iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nonsense",), "address must look like host:port"),
        (("--trust-mode", "private-ca"), "needs the network's CA (--ca)"),
        (("--cert", "/nonexistent.pem", "--key", "/nonexistent.key"), "cannot read"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: Sequence[str], message: str) -> None:
    out = subprocess.run(
        python_argv("-m", "quic_p2p", "doctor", *args),
        capture_output=True,
        text=True,
        timeout=60,
        env=python_env(),
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_a_port_in_use_fails_and_the_network_checks_are_skipped() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        out = subprocess.run(
            python_argv("-m", "quic_p2p", "doctor", "--ip", "127.0.0.1", "--port", port, "--json"),
            capture_output=True,
            text=True,
            timeout=60,
            env=python_env(),
        )
    assert out.returncode == 1, out.stdout + out.stderr
    got = by_name(out.stdout)
    assert got["endpoint"]["verdict"] == "fail"
    assert f"127.0.0.1:{port}" in got["endpoint"]["detail"]
    assert got["reachability"] == {
        "name": "reachability",
        "verdict": "skip",
        "detail": "the endpoint did not start",
        "data": {},
    }


async def test_a_silent_contact_is_reported_beside_the_one_that_answered() -> None:
    async with endpoints(node_config()) as (a,), third_addresses(1) as (sink,):
        report = await diagnose(Config(ip="127.0.0.1"), [a.node_info, NodeInfo(sink.addr)])
    seen = report.get(Check.EXTERNAL_ADDRESS)
    assert seen.verdict is Verdict.WARN, seen
    assert f"no answer from 127.0.0.1:{sink.addr[1]}: no QUIC handshake" in seen.detail
    # One answer is enough to see that no NAT is in the way (not to classify one).
    assert report.get(Check.MAPPING).data["mapping"] == "no NAT"
    assert report.get(Check.REACHABILITY).verdict is Verdict.OK  # through the one that answered
    assert report.exit_code == 0


async def test_nothing_answering_is_a_failure() -> None:
    async with third_addresses(1) as (sink,):
        report = await diagnose(Config(ip="127.0.0.1"), [NodeInfo(sink.addr)])
    assert report.get(Check.EXTERNAL_ADDRESS).verdict is Verdict.FAIL
    assert report.get(Check.REACHABILITY).verdict is Verdict.SKIP
    assert report.exit_code == 1


async def test_a_client_is_not_checked_for_reachability() -> None:
    async with endpoints(node_config()) as (a,):
        report = await diagnose(Config(ip="127.0.0.1", our_type=OurType.CLIENT), [a.node_info])
    reach = report.get(Check.REACHABILITY)
    assert reach.verdict is Verdict.SKIP and "a Client accepts no connections" in reach.detail
    assert report.get(Check.EXTERNAL_ADDRESS).verdict is Verdict.OK
    assert report.exit_code == 0


@pytest.mark.usefixtures("ipv6_loopback")
async def test_doctor_on_ipv6_loopback() -> None:
    v6 = [node_config(ip="::1"), node_config(ip="::1")]
    async with endpoints(*v6) as (a, b):
        report = await diagnose(Config(ip="::1"), [a.node_info, b.node_info])
    assert report.exit_code == 0, render_text(report)
    assert report.get(Check.IPV6).verdict is Verdict.OK
    assert report.get(Check.MAPPING).data["mapping"] == "no NAT"
    assert report.get(Check.REACHABILITY).verdict is Verdict.OK


async def test_a_private_ca_network_passes_and_a_self_signed_doctor_is_refused() -> None:
    ca = create_ca("doctor test network")
    cas: dict[str, Any] = {"trust_mode": TrustMode.PRIVATE_CA, "ca_certs_der": [ca.cert_der]}
    members = [node_config(our_complete_cert=issue_certificate(ca, n), **cas) for n in "ab"]
    async with endpoints(*members) as (a, b):
        contacts = [a.node_info, b.node_info]
        mine = issue_certificate(ca, "doctor")
        good = await diagnose(Config(ip="127.0.0.1", our_complete_cert=mine, **cas), contacts)
        bad = await diagnose(Config(ip="127.0.0.1", **cas), contacts)
    assert good.exit_code == 0, render_text(good)
    assert good.get(Check.TRUST).verdict is Verdict.OK
    assert good.get(Check.REACHABILITY).verdict is Verdict.OK
    assert "the key of --cert" in good.get(Check.ENDPOINT).detail
    # The members refuse a self-signed certificate: said where, and why.
    assert bad.exit_code == 1
    assert bad.get(Check.TRUST).verdict is Verdict.FAIL
    refused = bad.get(Check.EXTERNAL_ADDRESS)
    assert refused.verdict is Verdict.FAIL and "certificate" in refused.detail, refused
