"""The quick benchmark gate catches a 2x regression of ours, and passes without one.

Runs ``ci/bench --quick`` twice in a subprocess: as it is (must pass), and with
``QUIC_P2P_BENCH_SLOWDOWN=2`` (bench/conftest.py: every measured operation of
ours, and only ours, takes twice as long; the references — raw aioquic,
aioquic's full accept, the pure-Python twin — are untouched). The slowed run
must fail, and must name every gated ratio: each threshold in bench/targets.py
catches the regression on its own, not just one of them.

About 4 minutes on 2 cores, so it runs only when asked:
``QUIC_P2P_BENCH_GATE_TEST=1`` (.ci/run's benchmark step sets it; elsewhere it
is skipped, saying so). PYTEST selects the pytest command ci/bench runs
(default: the ``pytest`` next to this interpreter, so that ``quic_p2p`` comes
from where this interpreter has it installed).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("QUIC_P2P_BENCH_GATE_TEST") != "1",
        reason="runs the quick benchmark gate twice (~4 min): set QUIC_P2P_BENCH_GATE_TEST=1",
    ),
    pytest.mark.timeout(900),
]


def _gated() -> tuple[list[str], list[str]]:
    """The gated target names and C-vs-twin groups, from bench/targets.py
    (imported here, not at collection: a copy of tests/ alone, as ci/sanitize
    makes, still collects this module)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from targets import C_FLOORS, TARGETS
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return [t.name for t in TARGETS if t.gate is not None], sorted(C_FLOORS)


def _quick_gate(**env: str) -> tuple[int, str]:
    pytest_cmd = os.environ.get("PYTEST") or str(Path(sys.executable).with_name("pytest"))
    full_env = {k: v for k, v in os.environ.items() if k != "QUIC_P2P_BENCH_SLOWDOWN"}
    full_env.update(PYTEST=pytest_cmd, **env)
    proc = subprocess.run(
        [str(ROOT / "ci" / "bench"), "--quick"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    print(out[out.find("Our endpoint vs raw") :] if "Our endpoint vs raw" in out else out)
    return proc.returncode, out


def _verdicts(out: str) -> tuple[dict[str, str], dict[str, str]]:
    """The gate's verdict per gated target name and per C-vs-twin group."""
    gated_targets, gated_groups = _gated()
    targets: dict[str, str] = {}
    for name in gated_targets:
        m = re.search(rf"^  (ok|FAIL|known miss)\s+{re.escape(name)}\s", out, re.M)
        if m:
            targets[name] = m.group(1)
    groups: dict[str, str] = {}
    for group in gated_groups:
        m = re.search(rf"^  (ok  |FAIL) {re.escape(group)}\s", out, re.M)
        if m:
            groups[group] = m.group(1).strip()
    return targets, groups


def test_quick_gate_passes_as_it_is() -> None:
    code, out = _quick_gate()
    targets, groups = _verdicts(out)
    gated_targets, gated_groups = _gated()
    assert targets == dict.fromkeys(gated_targets, "ok"), targets
    assert groups == dict.fromkeys(gated_groups, "ok"), groups
    assert code == 0, out[-3000:]


def test_quick_gate_fails_on_a_2x_slowdown_of_ours() -> None:
    code, out = _quick_gate(QUIC_P2P_BENCH_SLOWDOWN="2")
    assert code != 0
    targets, groups = _verdicts(out)
    gated_targets, gated_groups = _gated()
    assert targets == dict.fromkeys(gated_targets, "FAIL"), targets
    assert groups == dict.fromkeys(gated_groups, "FAIL"), groups
    missed = re.search(r"^Targets missed: (.*)$", out, re.M)
    assert missed is not None and missed.group(1).split(", ") == gated_targets
    slower = re.search(r"^C slower than its floor against its twin in: (.*)$", out, re.M)
    assert slower is not None and slower.group(1).split(", ") == gated_groups
