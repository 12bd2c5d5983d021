"""The command line, run as a user runs it: subprocesses, exit codes, output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quic_p2p", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
