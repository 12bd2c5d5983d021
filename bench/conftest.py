"""Benchmark fixtures and the C-vs-twin gate.

Every hot-path benchmark runs once per implementation (``impl`` fixture, ids
``c`` / ``py``) inside a named ``benchmark.group``. After the run, the gate
compares the two medians of each group *from this one run* and fails the
session when C is slower than its twin by more than the allowed ratio:

    speedup = median(py) / median(c)  must be >= QUIC_P2P_BENCH_MIN_SPEEDUP
                                      (1.0; 0.8 in quick mode)

In quick mode (CI) the two implementations of a group are timed one after the
other for a fraction of a second each, so a burst of load from other processes
can land on one of them: measured in CI on 2026-11-25, classify-initial read
1.58x, 1.76x and 0.88x in three runs while its two minimums stayed within 3% of
each other. The 0.8 floor tolerates that noise and still fails C that became
clearly slower than its twin; full mode (longer runs) keeps 1.0.

Groups named ``info-*`` are reported but not gated: they time one call where
the real workload batches (cffi's crossing cost, not the C, is what they show).
Absolute times are never gated (shared, noisy machines); ratios are.

Then the issue-6 targets (bench/targets.py): our endpoint against raw aioquic
(throughput, connect), the retry path against a full accept, the token
speedups. ``ci/bench --quick`` sets ``QUIC_P2P_BENCH_MODE=quick``: loose
thresholds that catch a 2x regression; otherwise (full mode) the issue's
targets. A missed target fails the session with a message naming the ratio.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from quic_p2p import accel

from targets import evaluate, mode, param_of

MIN_SPEEDUP = float(
    os.environ.get(
        "QUIC_P2P_BENCH_MIN_SPEEDUP",
        "0.8" if os.environ.get("QUIC_P2P_BENCH_MODE") == "quick" else "1.0",
    )
)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Endpoints default to the user's cache directory: point it at a fresh
    temporary one for the whole session (module-scoped endpoints included)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(params=["c", "py"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    mod = accel.IMPLEMENTATIONS.get(request.param)
    if mod is None:
        pytest.fail(f"benchmarks need the C accelerator: {accel.import_error}")
    return mod


def _speedups(session: pytest.Session) -> dict[str, tuple[float, float, float]]:
    bs: Any = getattr(session.config, "_benchmarksession", None)
    if bs is None:
        return {}
    medians: dict[str, dict[str, float]] = {}
    for bench in bs.benchmarks:
        if not bench.stats or bench.group is None:
            continue
        param = bench.param or ""
        name = (
            "c"
            if param == "c" or param.startswith("c-")
            else ("py" if param == "py" or param.startswith("py-") else None)
        )
        if name is None:
            continue
        key = bench.group if param in ("c", "py") else f"{bench.group}[{param.split('-', 1)[1]}]"
        medians.setdefault(key, {})[name] = bench.stats.median
    return {
        g: (m["py"] / m["c"], m["c"], m["py"])
        for g, m in sorted(medians.items())
        if "c" in m and "py" in m
    }


def _versus_raw(session: pytest.Session) -> list[str]:
    """``ours*`` benchmarks that carry a paired raw reference (extra_info)."""
    lines = []
    for r in sorted(_records(session), key=lambda r: (r["group"] or "", r["param"] or "")):
        extra = r["extra_info"]
        if "raw_median" not in extra:
            continue
        lines.append(
            f"  {r['group']:<22} {r['param']:<12} {r['median'] * 1e3:9.2f} ms"
            f"   raw {extra['raw_median'] * 1e3:9.2f} ms"
            f"   paired {extra['ratio_kind']} {extra['ratio']:5.2f}"
        )
    return lines


def _records(session: pytest.Session) -> list[dict[str, Any]]:
    bs: Any = getattr(session.config, "_benchmarksession", None)
    if bs is None:
        return []
    return [
        {
            "group": b.group,
            "param": param_of(b.param, b.params),
            "median": b.stats.median,
            "extra_info": b.extra_info,
        }
        for b in bs.benchmarks
        if b.stats
    ]


def _targets_gate(session: pytest.Session) -> list[str]:
    records = _records(session)
    if not records:
        return []
    verdicts = [v for v in evaluate(records) if v.status != "not run"]
    if not verdicts:
        return []
    lines = ["", f"Issue 6 targets ({mode()} mode; ratios of medians from this run):"]
    lines += [v.line() for v in verdicts]
    for r in records:
        extra = r["extra_info"]
        if r["group"] == "scale-connections" and "rss_per_connection_kib" in extra:
            lines.append(
                f"  info    scale: {extra['connections']} connections on one node,"
                f" {extra['rss_per_connection_kib']:.1f} KiB RSS per connection"
            )
        if r["group"] == "scale-bootstrap" and "cpu_per_node_ms" in extra:
            lines.append(
                f"  info    scale: {extra['nodes']} nodes bootstrapped in {extra['wall_s']:.2f} s,"
                f" {extra['cpu_per_node_ms']:.1f} ms CPU per node"
            )
    failed = [v.target.name for v in verdicts if v.status == "FAIL"]
    if failed:
        lines.append(f"Targets missed: {', '.join(failed)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return lines


def _write(session: pytest.Session, lines: list[str]) -> None:
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    text = "\n".join(lines)
    if tr is not None:
        tr.write_line(text)
    else:
        print(text)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    raw_lines = _versus_raw(session)
    if raw_lines:
        _write(session, ["", "Our endpoint vs raw aioquic (same run):", *raw_lines])
    target_lines = _targets_gate(session)
    if target_lines:
        _write(session, target_lines)
    results = _speedups(session)
    if not results:
        return
    lines = ["", f"C vs twin gate (speedup = py median / c median, must be >= {MIN_SPEEDUP}):"]
    failed = []
    for group, (speedup, c_med, py_med) in results.items():
        ok = speedup >= MIN_SPEEDUP
        info = group.startswith("info-")
        if not ok and not info:
            failed.append(group)
        verdict = "info" if info else ("ok  " if ok else "FAIL")
        lines.append(
            f"  {verdict} {group:<40} {speedup:6.2f}x"
            f"   c {c_med * 1e6:10.2f} us   py {py_med * 1e6:10.2f} us"
        )
    if failed:
        lines.append(f"C slower than its twin in: {', '.join(failed)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _write(session, lines)
