"""The command line, run as a user runs it: subprocesses, exit codes, output."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from netutil import Lines, python_argv, python_env


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
        self.out = Lines(self.p)
        self.expect = self.out.expect
        self.seen = self.out.seen

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
        our_id = a.expect("Our id:").split(":", 1)[1].strip()
        info_json = a.expect("Our connection info:").split(":", 1)[1].strip()
        info = json.loads(info_json)
        assert info["peer_id"] == our_id
        b = Proc(
            "node", "--ip", "127.0.0.1", "--contact", info_json, "--cache-dir", str(tmp_path / "b")
        )
        b.expect("connected to node " + info["addresses"][0])
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
    from quic_p2p.cache_store import CacheStore
    from quic_p2p.certfiles import generate_self_signed
    from quic_p2p.proto.bootstrap_cache import BootstrapCache

    nodes = [NodeInfo(("127.0.0.1", 4000 + i), generate_self_signed().cert_der) for i in range(2)]
    cache = BootstrapCache(random_bytes=os.urandom)
    for i, n in enumerate(nodes):
        cache.add(n, now=1_000_000 + i)
    assert CacheStore(tmp_path).save(cache)
    shown = run("cache", "show", "--cache-dir", str(tmp_path))
    assert "2 entries" in shown.stdout
    assert shown.stdout.index("127.0.0.1:4001") < shown.stdout.index("127.0.0.1:4000")
    for n in nodes:
        assert str(n.peer_id) in shown.stdout
    exported = json.loads(run("cache", "export", "--cache-dir", str(tmp_path)).stdout)
    # Entries keep the id and the addresses (certificates are renewed).
    assert [NodeInfo.from_dict(d) for d in exported] == [
        NodeInfo(n.peer_addr, peer_id=n.peer_id) for n in nodes[::-1]
    ]
    assert run("cache", "clear", "--cache-dir", str(tmp_path)).returncode == 0
    assert "0 entries" in run("cache", "show", "--cache-dir", str(tmp_path)).stdout


def test_unreachable_contact_is_reported_not_a_traceback() -> None:
    out = run("echo", "127.0.0.1:9", "--ip", "127.0.0.1", timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("quic-p2p: error:") and "Traceback" not in out.stderr


# ------------------------------------------------------------------ "Keep the promises"
def _cli(*args: str) -> list[str]:
    return python_argv("-m", "quic_p2p", *args)


ENV = python_env(PYTHONUNBUFFERED="1")


def _wait_for_line(p: subprocess.Popen[str], needle: str, timeout: float = 30) -> list[str]:
    """Lines of ``p``'s stdout up to the one holding ``needle`` (a reader thread
    keeps the wait bounded even when the process prints nothing)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            lines.put(line)
            if needle in line:
                break
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not seen; stdout so far: {seen}")


def _interrupt(p: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[int, str, str]:
    """Signal ``p``, wait (bounded) for it to exit: exit code, rest of stdout, stderr."""
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=5)
        raise AssertionError(f"no exit within 20 s of signal {sig}; stderr: {err}") from None
    return p.returncode, out or "", err or ""


@pytest.mark.parametrize("stdin", ["devnull", "closed", "file", "pipe-eof"])
def test_node_keeps_running_after_stdin_ends_and_stops_on_a_signal(
    tmp_path: Path, stdin: str
) -> None:
    args = _cli("node", "--ip", "127.0.0.1", "--cache-dir", str(tmp_path / "c"))
    lines_file = tmp_path / "lines.txt"
    lines_file.write_text("nobody to send this to\n")
    if stdin == "closed":  # as a service manager may start us: no fd 0 at all
        p = subprocess.Popen(
            ["sh", "-c", 'exec "$@" <&-', "sh", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
    else:
        with contextlib.ExitStack() as stack:
            source = {
                "devnull": subprocess.DEVNULL,
                "file": stack.enter_context(lines_file.open("rb")),
                "pipe-eof": subprocess.PIPE,
            }[stdin]
            p = subprocess.Popen(
                args,
                stdin=source,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=ENV,
            )
        if stdin == "pipe-eof":
            assert p.stdin is not None
            p.stdin.close()
            p.stdin = None  # closed: communicate() must not flush it
    try:
        _wait_for_line(p, "Our connection info:")
        time.sleep(1.0)  # EOF has been read by now; the node must still run
        assert p.poll() is None, p.communicate(timeout=5)
        code, _, err = _interrupt(p, signal.SIGINT if stdin != "file" else signal.SIGTERM)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)
    assert code == 0, err
    assert "Traceback" not in err and "Exception" not in err, err


def test_exit_on_eof_with_dev_null_exits_at_once(tmp_path: Path) -> None:
    out = subprocess.run(
        _cli("node", "--ip", "127.0.0.1", "--exit-on-eof", "--cache-dir", str(tmp_path)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr


def test_selfcheck_with_the_twin_forced_passes_and_says_so() -> None:
    out = subprocess.run(
        _cli("selfcheck"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**ENV, "QUIC_P2P_NO_EXTENSIONS": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout
    assert "active implementation: py" in out.stdout


def test_selfcheck_without_the_c_module_passes_and_says_why(tmp_path: Path) -> None:
    import shutil

    import quic_p2p

    # A copy of the package without the compiled module: "C not built".
    copy = tmp_path / "quic_p2p"
    shutil.copytree(
        Path(quic_p2p.__file__).parent,
        copy,
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"),
    )
    out = subprocess.run(
        python_argv("-m", "quic_p2p", "selfcheck"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**ENV, "PYTHONPATH": str(tmp_path)},  # the copy, not the tested package
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "active implementation: py" in out.stdout and "FAIL" not in out.stdout
    assert "not built" in out.stdout or "No module" in out.stdout


def test_cache_export_file_is_a_contact_file(tmp_path: Path) -> None:
    """export -o then --contact @FILE: the node dials every exported entry."""
    a = Proc("node", "--ip", "127.0.0.1", "--no-stdin", "--cache-dir", str(tmp_path / "a"))
    b = None
    try:
        info = NodeInfo_from_line(a.expect("Our connection info:"))
        from quic_p2p.cache_store import CacheStore
        from quic_p2p.proto.bootstrap_cache import BootstrapCache

        cache = BootstrapCache(random_bytes=os.urandom)
        cache.add(info, now=1_000_000)
        assert CacheStore(tmp_path / "exp").save(cache)
        exported = tmp_path / "contacts.json"
        out = run("cache", "export", "--cache-dir", str(tmp_path / "exp"), "-o", str(exported))
        assert out.returncode == 0, out.stderr
        assert str(exported) in out.stdout
        b = Proc(
            "node", "--ip", "127.0.0.1", "--no-stdin", "--contact", f"@{exported}",
            "--cache-dir", str(tmp_path / "b"),
        )  # fmt: skip
        b.expect(f"connected to node {info.peer_addr[0]}:{info.peer_addr[1]}")
        assert not [line for line in b.seen if "error" in line]
    finally:
        assert a.stop() == 0
        if b is not None:
            assert b.stop() == 0


def NodeInfo_from_line(line: str):  # type: ignore[no-untyped-def]
    from quic_p2p import NodeInfo

    return NodeInfo.from_json(line.split(":", 1)[1].strip())


def test_contact_file_with_several_contacts_and_an_empty_list(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("[]\n")
    out = run("node", "--ip", "127.0.0.1", "--no-stdin", "--contact", f"@{empty}")
    assert out.returncode == 1 and "no contacts" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_aioquic_log_lines_only_with_verbose(tmp_path: Path) -> None:
    """A pinned certificate the node does not have: aioquic logs the failed
    handshake; without -v only our one-line error reaches stderr."""
    a = Proc("node", "--ip", "127.0.0.1", "--no-stdin", "--cache-dir", str(tmp_path / "a"))
    try:
        info = json.loads(a.expect("Our connection info:").split(":", 1)[1])
        assert (
            run("certs", "self-signed", "--name", "other", "--out-dir", str(tmp_path)).returncode
            == 0
        )
        contact = f"{info['addresses'][0]}@{tmp_path / 'other.pem'}"
        quiet = run("echo", contact, "--ip", "127.0.0.1", timeout=60)
        assert quiet.returncode == 1
        assert quiet.stderr.startswith("quic-p2p: error:"), quiet.stderr
        assert quiet.stderr.count("\n") == 1, quiet.stderr
        loud = run("-v", "echo", contact, "--ip", "127.0.0.1", timeout=60)
        assert loud.returncode == 1
        assert " DEBUG quic" in loud.stderr, loud.stderr  # aioquic's own logger
        assert loud.stderr.splitlines()[-1].startswith("quic-p2p: error:")
    finally:
        assert a.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--max-msg-size", "10"), "--max-msg-size must be an integer in"),
        (("--idle-timeout-msec", "-1"), "--idle-timeout-msec must be an integer in"),
        (("--keep-alive-interval-msec", "-5"), "--keep-alive-interval-msec must be an integer in"),
        (("--port", "70000"), "--port must be 0..65535"),
        (("--trust-mode", "private-ca"), "--trust-mode private-ca needs the network's CA (--ca)"),
        (("--relay", "--relay-max-sessions", "2000000"), "--relay-max-sessions must be"),
    ],
)
def test_config_errors_name_the_flags(args: tuple[str, ...], message: str) -> None:
    out = run("node", "--ip", "127.0.0.1", "--no-stdin", *args)
    assert out.returncode == 1
    assert out.stderr == f"quic-p2p: error: {out.stderr.split('error: ', 1)[1]}"
    assert message in out.stderr, out.stderr
    for field in ("max_msg_size_allowed", "_msec", "ca_certs_der", "PRIVATE_CA", "max_sessions"):
        assert field not in out.stderr


def test_bootstrap_with_an_empty_cache_reports_the_failure_once(tmp_path: Path) -> None:
    p = subprocess.Popen(
        _cli(
            "node", "--ip", "127.0.0.1", "--bootstrap", "--no-stdin", "--cache-dir", str(tmp_path)
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    try:
        seen = _wait_for_line(p, "bootstrap failed")
        time.sleep(1.0)  # let a second report, if any, arrive
        code, rest, _ = _interrupt(p)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)
    assert code == 0
    output = "".join(seen) + rest
    assert output.count("bootstrap failed") == 1, output
    assert "bootstrap failed: " in output  # the one report says why


@pytest.mark.parametrize(
    ("name", "stem"), [("My Net CA", "My-Net-CA"), ("a/b: c", "a-b--c"), ("ok.name_1", "ok.name_1")]
)
def test_certs_file_names_are_as_the_help_says(tmp_path: Path, name: str, stem: str) -> None:
    helptext = run("certs", "create-ca", "--help").stdout
    assert "NAME.pem" not in helptext
    assert "STEM.pem" in helptext and "replaced by '-'" in " ".join(helptext.split())
    out = run("certs", "create-ca", "--name", name, "--out-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f"certificate: {tmp_path / (stem + '.pem')}" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{stem}.key", f"{stem}.pem"]
