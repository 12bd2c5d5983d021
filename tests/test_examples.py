"""Every example in examples/ runs on loopback and does what its README says."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import time
from pathlib import Path

from netutil import python_argv, python_env

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
    assert lines[0] == {"id": 1, "result": 6}
    assert lines[1] == {"id": 2, "result": "HELLO P2P"}
    assert lines[2]["id"] == 3 and "error" in lines[2]


def test_file_transfer_verifies(tmp_path: Path) -> None:
    f = tmp_path / "payload.bin"
    f.write_bytes(os.urandom(9 * 1024 * 1024 + 123))
    out = run("file_transfer.py", str(f), "--chunk-mib", "2")
    assert out.returncode == 0, out.stderr
    assert f"received {f.stat().st_size} bytes, sha256 verified" in out.stdout


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
