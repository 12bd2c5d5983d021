"""The command line, run as a user runs it: subprocesses, exit codes, output."""

from __future__ import annotations

import json
import queue
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from netutil import python_argv, python_env


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python_argv("-m", "quic_p2p", *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=python_env(PYTHONUNBUFFERED="1"),
    )


def test_selfcheck_passes() -> None:
    out = run("selfcheck")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "checks passed" in out.stdout


@pytest.mark.parametrize("mode", ["unverified", "private-ca"])
def test_demo_with_a_small_network_passes_every_check(mode: str) -> None:
    out = run("demo", "--nodes", "3", "--clients", "1", "--messages", "3", "--trust-mode", mode)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout
    assert "FAIL" not in out.stdout
    # The summary table names every member and the trust mode.
    for name in ("node0", "node1", "node2", "client0", mode):
        assert name in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo", "--nodes", "1"), "must be at least 2"),
        (("demo", "--messages", "many"), "not a number"),
        (("demo", "--trust-mode", "magic"), "invalid choice"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_arguments_give_one_clear_line_and_no_traceback(
    args: tuple[str, ...], message: str
) -> None:
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_help_for_every_command() -> None:
    for args in ((), ("selfcheck",), ("demo",)):
        out = run(*args, "--help")
        assert out.returncode == 0 and "usage:" in out.stdout


# ------------------------------------------------------------------ certs
def test_certs_round_trip(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert run("certs", "create-ca", "--name", "net", "--out-dir", str(pki)).returncode == 0
    out = run(
        "certs",
        "issue",
        "--ca-cert",
        str(pki / "net.pem"),
        "--ca-key",
        str(pki / "net.key"),
        "--name",
        "node1",
        "--ip",
        "127.0.0.1",
        "--out-dir",
        str(pki),
    )
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE((pki / "node1.key").stat().st_mode) == 0o600
    described = json.loads(run("certs", "inspect", "--json", str(pki / "node1.pem")).stdout)
    assert described[0]["subject"] == "CN=node1" and described[0]["issuer"] == "CN=net"
    assert described[0]["ip_addresses"] == ["127.0.0.1"] and not described[0]["is_ca"]
    # An existing key is never overwritten by accident.
    again = run("certs", "create-ca", "--name", "net", "--out-dir", str(pki))
    assert again.returncode == 1 and "exists" in again.stderr


def test_unreadable_certificate_is_one_line_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a certificate")
    for args in (("certs", "inspect", str(junk)), ("node", "--cert", "missing.pem", "--key", "k")):
        out = run(*args)
        assert out.returncode == 1
        assert out.stderr.startswith("quic-p2p: error:") and "Traceback" not in out.stderr


def test_only_a_node_can_relay() -> None:
    out = run("node", "--type", "client", "--relay", "--no-stdin", "--ip", "127.0.0.1")
    assert out.returncode == 1 and "only a Node can relay" in out.stderr
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------------ node, echo, cache
class Proc:
    """A running ``quic-p2p`` with its output lines collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.p = subprocess.Popen(
            python_argv("-m", "quic_p2p", *args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=python_env(PYTHONUNBUFFERED="1"),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"{needle!r} not seen; output so far: {self.seen}")

    def send(self, text: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=5)
            return -9


def test_node_pair_chat_over_stdin(tmp_path: Path) -> None:
    a = Proc("node", "--ip", "127.0.0.1", "--no-stdin", "--cache-dir", str(tmp_path / "a"))
    b = None
    try:
        info_json = a.expect("Our connection info:").split(":", 1)[1].strip()
        info = json.loads(info_json)
        b = Proc(
            "node", "--ip", "127.0.0.1", "--contact", info_json, "--cache-dir", str(tmp_path / "b")
        )
        b.expect("connected to node " + info["peer_addr"])
        b.send("hello from b")
        line = a.expect("hello from b")
        assert line.startswith("[127.0.0.1:")
        # The echo command asks the node which address it sees.
        echo = run("echo", info_json, "--ip", "127.0.0.1")
        assert echo.returncode == 0, echo.stderr
        assert echo.stdout.strip().startswith("127.0.0.1:")
    finally:
        assert a.stop() == 0
        if b is not None:
            assert b.stop() == 0
    # Contacts given on the command line are hard-coded: never cached.
    assert "0 entries" in run("cache", "show", "--cache-dir", str(tmp_path / "b")).stdout


def test_cache_show_export_clear(tmp_path: Path) -> None:
    from quic_p2p import NodeInfo
    from quic_p2p.bootstrap_cache import BootstrapCache
    from quic_p2p.cache_store import CacheStore
    from quic_p2p.certs import generate_self_signed

    nodes = [NodeInfo(("127.0.0.1", 4000 + i), generate_self_signed().cert_der) for i in range(2)]
    cache = BootstrapCache()
    for i, n in enumerate(nodes):
        cache.add(n, now=1_000_000 + i)
    assert CacheStore(tmp_path).save(cache)
    shown = run("cache", "show", "--cache-dir", str(tmp_path))
    assert "2 entries" in shown.stdout
    assert shown.stdout.index("127.0.0.1:4001") < shown.stdout.index("127.0.0.1:4000")
    exported = json.loads(run("cache", "export", "--cache-dir", str(tmp_path)).stdout)
    assert [NodeInfo.from_dict(d) for d in exported] == nodes[::-1]
    assert run("cache", "clear", "--cache-dir", str(tmp_path)).returncode == 0
    assert "0 entries" in run("cache", "show", "--cache-dir", str(tmp_path)).stdout


def test_unreachable_contact_is_reported_not_a_traceback() -> None:
    out = run("echo", "127.0.0.1:9", "--ip", "127.0.0.1", timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("quic-p2p: error:") and "Traceback" not in out.stderr
