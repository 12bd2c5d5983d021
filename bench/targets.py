"""The benchmark gates: ratios measured in one run, never absolute times.

Shared by bench/conftest.py (the gate at the end of a pytest session),
ci/perf-report (docs/performance.md, from pytest-benchmark's JSON) and
bench/spread.py (the spread the thresholds below come from). All of them feed
``evaluate`` and ``speedups`` a list of plain records
``{"group", "param", "median", "min", "extra_info"}``.

Two kinds of threshold:

- ``gate``: the regression gate, in both modes (quick mode only where full
  mode measures another workload: 64 KiB x200 and 1 MiB x16 against x100 and
  x8). Set from the measured spread so that a 2x regression of *ours* fails
  and noise does not (below);
- ``goal``: the issue-6 target, gated in full mode (``ci/bench``) only. A
  target we miss for a measured reason is a ``known_miss``: full mode reports
  it as ``known miss`` with the figure measured, and does not fail on it (the
  ``gate`` still does).

What is compared, so that a slowdown of ours cannot cancel out:

- endpoint ratios are against raw aioquic (bench/rawquic.py), measured
  *paired*: raw is timed right before each round of ours, in the same run,
  and the ratio is the median of the per-round ratios
  (``extra_info["ratio"]``), so load from other processes hits both sides of
  a pair alike. The relayed path is against raw aioquic too, not against our
  own direct pair (a slowdown of the shared send path would cancel out);
- the retry path against aioquic's own full accept;
- the C module against its pure-Python twin, per group (``C_FLOORS``).

How the quick thresholds were derived: ``python bench/spread.py 5`` runs the
quick gate (``ci/bench --quick``) five times and prints, per ratio, the
min/median/max of the five runs' values. For a ">=" ratio a 2x regression of
ours halves the value, so a gate T must satisfy max/2 < T < min; T is the
geometric mean of the two, sqrt(min * max / 2), which leaves the same factor
of margin, sqrt(2 * min / max), on both sides. For a "<=" ratio (a time of
ours over a reference) the regression doubles it: max < T < 2 * min,
T = sqrt(2 * min * max). Gated only where that margin is at least 1.10 (10%
either way); the spreads and the margins are in the comments at each target.

Measured 2026-12-01 on the shared 2-core machine with two other sessions
running tests (load average 1.1-3), ``python bench/spread.py 5`` twice: the
comment at each entry gives min / median / max. Endpoint ratios (unchanged
between the two campaigns) pool both, plus one run at load 0.6 (11 runs;
relay 10: it was re-based on raw aioquic after the first); the throughput
ratios add 8 runs of ``ci/bench --quick -k test_throughput`` (19 runs: their
tails are the widest); paired C-vs-twin and retry ratios are from the second
campaign (5 runs; the first used coarser rounds, superseded). Margins are
1.19-1.39. Outside these: one full run (more messages, so not in the pool)
read ours slowed against raw in all three throughput sizes at once, 64 KiB
0.91x; a quick run hit that hard would fail the 64 KiB gate (0.93) by noise.
CI runs alone on its machine; a developer's quick run among other sessions can.

Re-derived 2026-12-03 on another 2-core machine (AMD EPYC), quiet (load
0.6-0.9), where the endpoint ratios came out lower and wider than above (the
old gates failed main there: 1 KiB 0.64-0.72x): ``python bench/spread.py 5``
with the code as it is, plus 5 runs of the stream benchmarks
(``-k "stream_transfer or requests"``). The comment at each entry gives that
spread; the throughput margins are the thinnest, 1.12-1.16. The C floors
(``C_FLOORS``) still sit inside that campaign's rule and are unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]


@dataclass(frozen=True)
class Run:
    """Medians, minimums and extra_info of one run, by (group, implementation)."""

    medians: Mapping[Key, float]
    mins: Mapping[Key, float]
    extras: Mapping[Key, Mapping[str, Any]]


def mode() -> str:
    return "quick" if os.environ.get("QUIC_P2P_BENCH_MODE") == "quick" else "full"


def _c_speedup(group: str) -> Callable[[Run], float | None]:
    """Twin / C: the paired rounds' median ratio (bench/paired.py), else (a run
    without both sides' paired rounds) the ratio of the two medians."""

    def f(run: Run) -> float | None:
        value = run.extras.get((group, "c"), {}).get("paired_ratio")
        if value is not None:
            return float(value)
        m = run.medians
        c, py = (group, "c"), (group, "py")
        return m[py] / m[c] if c in m and py in m and m[c] > 0 else None

    return f


def _paired(key: Key) -> Callable[[Run], float | None]:
    """The median of per-pair ratios a benchmark measured against its paired
    raw reference (test_bench_endpoint.py)."""

    def f(run: Run) -> float | None:
        value = run.extras.get(key, {}).get("ratio")
        return float(value) if value is not None else None

    return f


def _extra(key: Key, name: str) -> Callable[[Run], float | None]:
    """A figure a benchmark stored in its extra_info (not a time)."""

    def f(run: Run) -> float | None:
        value = run.extras.get(key, {}).get(name)
        return float(value) if value is not None else None

    return f


def _retry(run: Run) -> float | None:
    value = run.extras.get(("retry-path", "retry"), {}).get("paired_ratio")
    if value is not None:
        return float(value)
    m = run.medians
    g = "retry-path"
    keys = [(g, "accept"), (g, "retry"), (g, "validate")]
    if not all(k in m for k in keys):
        return None
    return m[keys[0]] / (m[keys[1]] + m[keys[2]])


def _c_time(group: str) -> Callable[[Run], float | None]:
    def f(run: Run) -> float | None:
        m = run.medians
        return m[(group, "c")] * 1e6 if (group, "c") in m else None

    return f


@dataclass(frozen=True)
class Target:
    name: str  # what the gate's message names
    what: str  # one line for the report
    compute: Callable[[Run], float | None]
    op: str  # ">=" or "<="
    gate: float | None  # regression gate (None: not gated)
    goal: float | None  # the target, gated in full mode (None: none)
    known_miss: str | None = None  # the measured figure and why (full mode: reported)
    unit: str = "x"
    #: False where full mode measures another workload than the quick runs
    #: the gate was derived from (more messages in flight): quick mode only.
    gate_in_full: bool = True

    def gate_for(self, run_mode: str) -> float | None:
        return self.gate if run_mode == "quick" or self.gate_in_full else None

    def met(self, value: float, threshold: float) -> bool:
        return value >= threshold if self.op == ">=" else value <= threshold


TARGETS: list[Target] = [
    # Spread 0.57 / 0.69 / 0.84 (5 quick runs, 2026-12-03). 2x: <= 0.42. Gate 0.49,
    # margin 1.16. (2026-12-01, another machine: 0.90 / 1.01 / 1.23 in 19 runs.)
    Target(
        "throughput-1KiB raw/ours",
        "1 KiB messages x2000: our speed relative to raw aioquic (one stream, same bytes)",
        _paired(("throughput-1KiB", "ours")),
        ">=",
        0.49,
        0.8,
        known_miss=(
            "the target sits inside the run-to-run spread: 0.57-0.84x in 5 quick runs of "
            "2026-12-03 on this machine, 0.90-1.23x in 19 quick runs and 0.79-1.07x in three "
            "full runs of 2026-12-01 on another"
        ),
    ),
    # Spread 0.84 / 1.02 / 1.34 (5 runs, 2026-12-03). 2x: <= 0.67. Gate 0.75, margin 1.12.
    Target(
        "throughput-64KiB raw/ours",
        "64 KiB messages x100 (quick) / x200 (full): our speed relative to raw aioquic",
        _paired(("throughput-64KiB", "ours")),
        ">=",
        0.75,
        0.95,
        known_miss=(
            "0.84-1.34x in 5 quick runs (x100) of 2026-12-03; 0.91x, 1.45x and 1.41x in three "
            "full runs (x200) and 1.11-1.57x in 19 quick runs of 2026-12-01 on another machine"
        ),
        gate_in_full=False,
    ),
    # Spread 0.89 / 1.04 / 1.40 (5 runs, 2026-12-03). 2x: <= 0.70. Gate 0.79, margin 1.13.
    Target(
        "throughput-1MiB raw/ours",
        "1 MiB messages x8 (quick) / x16 (full): our speed relative to raw aioquic (no target)",
        _paired(("throughput-1MiB", "ours")),
        ">=",
        0.79,
        None,
        gate_in_full=False,
    ),
    # Not gated: across runs the ratio spreads 0.77-1.28 (5 quick runs 0.78-0.93 and two
    # .ci/run runs 0.77 and 1.12 on 2026-12-03, 1.09-1.28 on 2026-12-02): margin
    # sqrt(2 * 0.77 / 1.28) = 1.10, the rule's floor, and a 2x slowdown read 0.60 and 0.70
    # (a burst that loses a datagram waits out DATAGRAM_WAIT, a fixed cost on either side).
    # Full mode still checks the 0.9.
    Target(
        "datagram-1000B raw/ours",
        "1,000-byte datagrams in bursts of 50, until each burst arrived: our speed "
        "relative to raw aioquic's datagrams",
        _paired(("datagram-1000B", "ours")),
        ">=",
        None,
        0.9,
    ),
    # Spread 1.16 / 1.35 / 1.56 (10 quick runs, 2026-12-03). 2x: <= 0.78. Gate 0.95,
    # margin 1.22.
    Target(
        "stream-transfer raw/ours",
        "one transfer on one stream, 16 MiB (quick) / 256 MiB (full), 1 MiB writes and "
        "drain: our speed relative to raw aioquic's one stream, written and drained alike",
        _paired(("stream-transfer", "ours")),
        ">=",
        0.95,
        0.95,
    ),
    # Spread 0.63 / 0.69 / 0.77 (10 quick runs, 2026-12-03). 2x: <= 0.39. Gate 0.49,
    # margin 1.28.
    Target(
        "request-1KiB-c1 raw/ours",
        "1 KiB requests to an echo handler, one in flight: our rate relative to raw "
        "aioquic's one bidirectional stream per request",
        _paired(("request-1KiB-c1", "ours")),
        ">=",
        0.49,
        0.8,
        known_miss=(
            "0.63-0.77x in 10 quick runs: a request is a stream of its own, opened with a "
            "header naming the protocol, routed to a handler task and checked against the "
            "peer's and the protocol's stream limits; one in flight exposes each of those "
            "loop turns (64 in flight: 1.16-1.50x)"
        ),
    ),
    # Spread 1.16 / 1.36 / 1.50 (10 quick runs, 2026-12-03). 2x: <= 0.75. Gate 0.93,
    # margin 1.24.
    Target(
        "request-1KiB-c64 raw/ours",
        "1 KiB requests to an echo handler, 64 in flight: our rate relative to raw "
        "aioquic's one bidirectional stream per request",
        _paired(("request-1KiB-c64", "ours")),
        ">=",
        0.93,
        0.8,
    ),
    Target(
        "file-rss growth",
        "examples/file_transfer.py moving 256 MiB: peak RSS growth during the transfer "
        "(full mode; memory, not time, so the issue's bound is gated as it is)",
        _extra(("file-rss", "ours"), "rss_growth_mib"),
        "<=",
        None,
        64.0,
        unit=" MiB",
    ),
    # One key share (tls.ClientConnection): spread 1.90 / 1.92 / 2.16 (5 quick runs of
    # -k connect, 2026-12-03; four shares: 2.11-2.74). 2x: >= 3.80. Gate 2.85, margin 1.33.
    Target(
        "connect node/raw",
        "Node connect (2 handshakes + proof, retry on) / bare aioquic handshake",
        _paired(("connect", "ours-node")),
        "<=",
        2.85,
        2.2,
        known_miss=(
            "1.90-2.16x in 5 quick runs of 2026-12-03 with one key share (2.11-2.74x with "
            "aioquic's four): two CPU-bound TLS handshakes plus a Retry are the floor"
        ),
    ),
    # One key share: spread 0.96 / 1.04 / 1.10 (5 quick runs of -k connect, 2026-12-03;
    # four shares: 1.28-1.61). 2x: >= 1.92. Gate 1.45, margin 1.32.
    Target(
        "connect client/raw",
        "Client connect (1 handshake, retry on) / bare aioquic handshake (no target)",
        _paired(("connect", "ours-client")),
        "<=",
        1.45,
        None,
    ),
    # Spread 3.08 / 3.11 / 3.32 (5 runs, 2026-12-03). 2x: >= 6.16. Gate 3.8, margin 1.14.
    Target(
        "relay-1KiB relayed/raw",
        "1 KiB messages x2000 through a relay / the same bytes on raw aioquic (no issue "
        "target: a regression guard; five QUIC stacks instead of two)",
        _paired(("relay-1KiB", "ours-relayed")),
        "<=",
        3.8,
        None,
    ),
    # Paired rounds. Spread 64.3 / 72.3 / 85.3 (5 runs, 2026-12-03). 2x: <= 42.6. Gate 52,
    # margin 1.23.
    Target(
        "retry-path accept/(retry+validate)",
        "full accept (aioquic) / (retry + validate) (ours): how much cheaper a stateless retry is",
        _retry,
        ">=",
        52.0,
        10.0,
    ),
    # Paired rounds. Spread 2.48 / 2.65 / 2.75 (5 runs, 2026-12-03). 2x: <= 1.38. Gate 1.9,
    # margin 1.30.
    Target(
        "token-mint c speedup",
        "token mint: twin / C (paired rounds)",
        _c_speedup("token-mint"),
        ">=",
        1.9,
        5.0,
        known_miss=(
            "2.64-2.86x in three full runs of 2026-12-01: cffi's call crossing, not the C, "
            "dominates one token"
        ),
    ),
    # Paired rounds. Spread 3.33 / 3.51 / 3.63 (5 runs, 2026-12-03). 2x: <= 1.82. Gate 2.5,
    # margin 1.33.
    Target(
        "token-verify c speedup",
        "token verify: twin / C (paired rounds)",
        _c_speedup("token-verify"),
        ">=",
        2.5,
        5.0,
        known_miss=(
            "3.43-3.79x in three full runs of 2026-12-01: cffi's call crossing, not the C, "
            "dominates one token"
        ),
    ),
    Target(
        "token-mint c time",
        "token mint in C, median (absolute: reported, never gated)",
        _c_time("token-mint"),
        "<=",
        None,
        None,
        unit=" us",
    ),
    Target(
        "token-verify c time",
        "token verify in C, median (absolute: reported, never gated)",
        _c_time("token-verify"),
        "<=",
        None,
        None,
        unit=" us",
    ),
]

#: Targets of the issue that are absolute and so reported, not gated.
REPORTED_GOALS = {"token-mint c time": 1.0, "token-verify c time": 1.0}

#: C vs twin, per group: speedup = twin median / C median must be >= its floor
#: (in full mode also >= 1.0: C never slower than its twin). A 2x slowdown of
#: the C halves the speedup; each floor sits between half the highest and the
#: lowest speedup of 5 quick runs (rule in the module docstring). Groups named
#: ``info-*`` are reported, not gated; any other group needs a floor here.
C_FLOORS: dict[str, float] = {
    "classify-initial": 1.12,  # spread 1.56 / 1.57 / 1.60, margin 1.39
    "frame-decode-batch": 1.2,  # 1.65 / 1.72 / 1.77, margin 1.36
    "frame-encode-batch": 0.83,  # 1.10 / 1.22 / 1.27, margin 1.32 (full mode: 1.0)
    "hmac-64B": 1.6,  # 2.15 / 2.32 / 2.39, margin 1.34
    "lru-cache-life": 1.75,  # 2.41 / 2.43 / 2.50, margin 1.39
    "lru-load-200": 1.7,  # 2.33 / 2.44 / 2.52, margin 1.36
    "lru-order-200": 1.7,  # 2.32 / 2.42 / 2.54, margin 1.35
    "token-mint": 1.9,  # 2.64 / 2.73 / 2.77, margin 1.38
    "token-verify": 2.5,  # 3.41 / 3.48 / 3.78, margin 1.34
    "token-verify-garbage": 1.48,  # 2.05 / 2.09 / 2.13, margin 1.39
}


def c_floor(group: str, run_mode: str) -> float | None:
    """The floor a group's speedup must reach; None for a group without one."""
    floor = C_FLOORS.get(group)
    if floor is None:
        return None
    return max(floor, 1.0) if run_mode == "full" else floor


@dataclass(frozen=True)
class Verdict:
    target: Target
    value: float | None
    threshold: float | None  # the gate applied in this mode
    goal: float | None  # the target (or reported absolute goal)
    status: str  # "ok", "FAIL", "known miss", "info", "not run"

    def line(self) -> str:
        t = self.target
        if self.value is None:
            return f"  {'-':<10} {t.name:<38} not run"
        shown = f"{self.value:8.2f}{t.unit}"
        gate = f"gate {t.op} {self.threshold:g}" if self.threshold is not None else "not gated"
        goal = f"   issue target {t.op} {self.goal:g}{t.unit.strip()}" if self.goal else ""
        miss = f" ({t.known_miss})" if self.status == "known miss" else ""
        return f"  {self.status:<10} {t.name:<38} {shown}   ({gate}){goal}{miss}"


def _run(records: Iterable[Mapping[str, Any]]) -> Run:
    medians: dict[Key, float] = {}
    mins: dict[Key, float] = {}
    extras: dict[Key, Mapping[str, Any]] = {}
    for r in records:
        if r.get("group") and r.get("param") is not None and r.get("median") is not None:
            key = (r["group"], r["param"])
            medians[key] = r["median"]
            if r.get("min") is not None:
                mins[key] = r["min"]
            extras[key] = r.get("extra_info") or {}
    return Run(medians, mins, extras)


def evaluate(records: Iterable[Mapping[str, Any]], run_mode: str | None = None) -> list[Verdict]:
    run_mode = run_mode or mode()
    run = _run(records)
    out = []
    for t in TARGETS:
        value = t.compute(run)
        goal = t.goal if t.goal is not None else REPORTED_GOALS.get(t.name)
        full_goal = t.goal if run_mode == "full" else None
        gate = t.gate_for(run_mode)
        if value is None:
            status = "not run"
        elif gate is not None and not t.met(value, gate):
            status = "FAIL"
        elif full_goal is not None and not t.met(value, full_goal):
            status = "known miss" if t.known_miss else "FAIL"
        elif gate is None and full_goal is None:
            status = "info"
        else:
            status = "ok"
        threshold = gate
        if full_goal is not None and status != "known miss":
            # Full mode applies the stricter of the two.
            threshold = full_goal if threshold is None else _stricter(t.op, threshold, full_goal)
        out.append(Verdict(t, value, threshold, goal, status))
    return out


def _stricter(op: str, a: float, b: float) -> float:
    return max(a, b) if op == ">=" else min(a, b)


def speedups(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float, float]]:
    """C vs twin per group: (twin / C, C median, twin median). The ratio is
    the paired rounds' (bench/paired.py) where the run has them, else the
    ratio of the two medians (``info-*`` groups, partial runs)."""
    medians: dict[str, dict[str, float]] = {}
    paired: dict[str, float] = {}
    for r in records:
        param = r.get("param") or ""
        if r.get("group") is None or r.get("median") is None or param not in ("c", "py"):
            continue
        medians.setdefault(r["group"], {})[param] = r["median"]
        value = (r.get("extra_info") or {}).get("paired_ratio")
        if value is not None:
            paired[r["group"]] = float(value)
    return {
        g: (paired.get(g, m["py"] / m["c"]), m["c"], m["py"])
        for g, m in sorted(medians.items())
        if "c" in m and "py" in m and m["c"] > 0
    }


def derive(op: str, low: float, high: float) -> tuple[float, float]:
    """The threshold and its margin for a ratio whose runs spread over
    [low, high] (the rule in the module docstring)."""
    if op == ">=":
        return math.sqrt(low * high / 2), math.sqrt(2 * low / high)
    return math.sqrt(2 * low * high), math.sqrt(2 * low / high)


def param_of(param: str | None, params: Mapping[str, Any] | None) -> str | None:
    """The implementation id of a benchmark: its ``impl`` parameter when it has
    one (``c``/``py``, ``ours``/``raw``, ``retry``/...), else its whole param."""
    if params and isinstance(params.get("impl"), str):
        return str(params["impl"])
    return param
