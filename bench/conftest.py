"""Benchmark fixtures and the C-vs-twin gate.

Every hot-path benchmark runs once per implementation (``impl`` fixture, ids
``c`` / ``py``) inside a named ``benchmark.group``. After the run, the gate
compares the two medians of each group *from this one run* and fails the
session when C is slower than its twin by more than the allowed ratio:

    speedup = median(py) / median(c)  must be >= QUIC_P2P_BENCH_MIN_SPEEDUP (1.0)

Groups named ``info-*`` are reported but not gated: they time one call where
the real workload batches (cffi's crossing cost, not the C, is what they show).
Absolute times are never gated (shared, noisy machines); ratios are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from quic_p2p import accel

MIN_SPEEDUP = float(os.environ.get("QUIC_P2P_BENCH_MIN_SPEEDUP", "1.0"))


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
    """``ours*`` vs ``raw`` medians per group: time ratio (ours / raw)."""
    bs: Any = getattr(session.config, "_benchmarksession", None)
    if bs is None:
        return []
    groups: dict[str, dict[str, float]] = {}
    for bench in bs.benchmarks:
        if bench.stats and bench.group and bench.param:
            impl = bench.params.get("impl") if bench.params else None
            if isinstance(impl, str) and (impl == "raw" or impl.startswith("ours")):
                groups.setdefault(bench.group, {})[impl] = bench.stats.median
    lines = []
    for group, m in sorted(groups.items()):
        if "raw" not in m:
            continue
        for impl, med in sorted(m.items()):
            if impl != "raw":
                lines.append(
                    f"  {group:<22} {impl:<12} {med * 1e3:9.2f} ms   raw {m['raw'] * 1e3:9.2f} ms"
                    f"   ours/raw time {med / m['raw']:5.2f}x"
                    f"   raw/ours speed {m['raw'] / med:5.2f}"
                )
    return lines


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    raw_lines = _versus_raw(session)
    if raw_lines:
        text = "\n".join(["", "Our endpoint vs raw aioquic (same run):", *raw_lines])
        if tr is not None:
            tr.write_line(text)
        else:
            print(text)
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
    text = "\n".join(lines)
    if tr is not None:
        tr.write_line(text)
    else:
        print(text)
