"""Every example in examples/ runs on loopback and does what its README says."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from netutil import Lines, python_argv, python_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# The examples import quic_p2p as users do: from wherever this run imports it
# (site-packages in CI, the source tree in a checkout).
ENV = python_env(PYTHONUNBUFFERED="1")


def run(script: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python_argv(str(EXAMPLES / script), *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def test_request_response() -> None:
    out = run("request_response.py")
    assert out.returncode == 0, out.stderr
    lines = [ast.literal_eval(line) for line in out.stdout.splitlines()]  # printed dicts
    assert lines[0] == {"result": 6}
    assert lines[1] == {"result": "HELLO P2P"}
    assert "error" in lines[2]
    assert lines[3] == {"refused": "NO_HANDLER"}


def test_file_transfer_verifies(tmp_path: Path) -> None:
    f = tmp_path / "payload.bin"
    f.write_bytes(os.urandom(9 * 1024 * 1024 + 123))
    out = run("file_transfer.py", str(f), "--chunk-mib", "2")
    assert out.returncode == 0, out.stderr
    assert f"received {f.stat().st_size} bytes, sha256 verified" in out.stdout


def test_file_transfer_resumes_a_partial_copy(tmp_path: Path) -> None:
    f = tmp_path / "payload.bin"
    data = os.urandom(3 * 1024 * 1024 + 5)
    f.write_bytes(data)
    out_file = tmp_path / "copy.bin"
    out_file.write_bytes(data[: 1024 * 1024 + 1])  # an interrupted earlier run
    out = run("file_transfer.py", str(f), "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    assert f"received {len(data)} bytes, sha256 verified" in out.stdout
    assert f"resumed: {len(data) - 1024 * 1024 - 1} bytes sent this time" in out.stdout
    assert out_file.read_bytes() == data


def test_presence_heartbeats_reach_every_peer() -> None:
    out = run("presence.py", "--seconds", "1.5")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ann", "bob", "cat"], out.stdout
    for line, others in zip(lines, (("bob", "cat"), ("ann", "cat"), ("ann", "bob")), strict=True):
        for who in others:
            assert f"{who} (beat " in line, line


def test_private_ca_admits_members_and_refuses_a_stranger() -> None:
    out = run("private_ca.py")
    assert out.returncode == 0, out.stderr
    assert "alice connected to bob" in out.stdout
    assert "alice refused mallory" in out.stdout
    assert "SHOULD NOT HAPPEN" not in out.stdout


def test_chat_between_two_processes() -> None:
    env = ENV
    first = subprocess.Popen(
        python_argv(str(EXAMPLES / "chat.py")),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    second = None
    try:
        assert first.stdout is not None and first.stdin is not None
        contact = first.stdout.readline().split("contact:", 1)[1].strip()
        json.loads(contact)
        second = subprocess.Popen(
            python_argv(str(EXAMPLES / "chat.py"), "--peer", contact),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert second.stdin is not None and second.stdout is not None
        assert second.stdout.readline().startswith("contact:")
        assert "connected" in second.stdout.readline()
        second.stdin.write("hi there\n")
        second.stdin.flush()
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            line = first.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "> hi there" in line:
                break
        assert any("> hi there" in line for line in seen), seen
        second.stdin.close()
        first.stdin.close()
        assert second.wait(timeout=20) == 0
        assert first.wait(timeout=20) == 0
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=5)


# ----------------------------------------------------- interruptions, peers leaving
def _chat(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        python_argv(str(EXAMPLES / "chat.py"), *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _sigint_and_wait(p: subprocess.Popen[str], timeout: float = 15) -> tuple[int, str]:
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)
        raise AssertionError(f"still running {timeout} s after SIGINT") from None
    assert p.stderr is not None
    return p.returncode, p.stderr.read()


def test_chat_shows_a_peer_leaving_and_ctrl_c_exits_at_once() -> None:
    first = _chat()
    second = None
    try:
        out1 = Lines(first)
        contact = out1.expect("contact:").split("contact:", 1)[1].strip()
        # A line typed with no peer is not silently dropped.
        assert first.stdin is not None
        first.stdin.write("anyone there?\n")
        first.stdin.flush()
        out1.expect("no peer connected")
        second = _chat("--peer", contact)
        out2 = Lines(second)
        out2.expect("connected")
        out1.expect("connected")
        assert second.stdin is not None
        second.stdin.close()  # Ctrl-D: the second side quits
        assert second.wait(timeout=20) == 0
        out1.expect("left")
        # Ctrl-C with the peer gone and nothing typed: exits now, quietly.
        code, err = _sigint_and_wait(first)
        assert code == 130, err
        assert "Traceback" not in err, err
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=5)
            if p is not None:
                for f in (p.stdin, p.stdout, p.stderr):
                    if f is not None:
                        with contextlib.suppress(OSError):
                            f.close()


def test_file_transfer_ctrl_c_is_quiet(tmp_path: Path) -> None:
    f = tmp_path / "big.bin"
    with f.open("wb") as fh:
        fh.truncate(512 * 1024 * 1024)  # sparse: large enough to be mid-transfer
    p = subprocess.Popen(
        python_argv(str(EXAMPLES / "file_transfer.py"), str(f), "--chunk-mib", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        assert p.stdout is not None
        first = p.stdout.read(2)  # the progress bar starts once connected
        assert first.startswith(b"\r"), first
        p.send_signal(signal.SIGINT)
        _, err_b = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)
    err = err_b.decode(errors="replace")
    assert p.returncode == 130, err
    assert "Traceback" not in err and len(err.splitlines()) <= 2, err
    assert "interrupted" in err


def test_file_transfer_progress_uses_human_units_and_clears_the_line(tmp_path: Path) -> None:
    f = tmp_path / "payload.bin"
    f.write_bytes(os.urandom(5 * 1024 * 1024 + 7))
    out = run("file_transfer.py", str(f), "--chunk-mib", "1")
    assert out.returncode == 0, out.stderr
    # Text mode reads each "\r" as a line end: one line per update.
    updates = [u for u in out.stdout.splitlines() if u.startswith("[")]
    assert len(updates) >= 6, updates
    assert "5.0 MiB" in updates[-1] and "/s" in updates[-1]
    assert not any(f"{f.stat().st_size}" in u for u in updates), updates  # no raw counts
    # Each update is at least as wide as the one before: no stale characters.
    widths = [len(u) for u in updates]
    assert widths == sorted(widths), widths
