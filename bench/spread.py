"""The spread the quick gate's thresholds come from (bench/targets.py).

    python bench/spread.py N [--keep DIR] [-k EXPR]   # runs ci/bench --quick N times
    python bench/spread.py --from A.json B.json ...

For every gated ratio (the targets and the C-vs-twin speedups) prints the
min / median / max over the runs, the threshold the rule in bench/targets.py
derives from them, its margin, and the threshold in force; ``-k`` runs only
the benchmarks pytest's ``-k EXPR`` selects (a new benchmark's spread
without the whole set's minutes). PYTEST selects the
pytest command for ci/bench (default: this interpreter's ``-m pytest``). The
runs' own gate verdicts are ignored here (a run may fail a threshold being
re-derived).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import C_FLOORS, TARGETS, derive, evaluate, param_of, speedups

HERE = Path(__file__).resolve().parent


def load(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return [
        {
            "group": b.get("group"),
            "param": param_of(b.get("param"), b.get("params")),
            "median": b["stats"]["median"],
            "min": b["stats"]["min"],
            "extra_info": b.get("extra_info", {}),
        }
        for b in data["benchmarks"]
    ]


def run_quick(n: int, keep: Path, select: str | None = None) -> list[Path]:
    env = dict(os.environ)
    env.setdefault("PYTEST", f"{sys.executable} -m pytest")
    out = []
    for i in range(n):
        path = keep / f"quick-{i}.json"
        print(f"run {i + 1}/{n} -> {path}", file=sys.stderr, flush=True)
        subprocess.run(
            [
                str(HERE.parent / "ci" / "bench"),
                "--quick",
                f"--benchmark-json={path}",
                *(["-k", select] if select else []),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        out.append(path)
    return out


def table(runs: list[list[dict[str, Any]]]) -> list[str]:
    values: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    gates: dict[str, float | None] = {}
    for records in runs:
        for v in evaluate(records, "quick"):
            if v.value is not None and v.target.unit == "x":
                values.setdefault(v.target.name, []).append(v.value)
                ops[v.target.name] = v.target.op
                gates[v.target.name] = v.target.gate
        for group, (speedup, _, _) in speedups(records).items():
            if not group.startswith("info-"):
                name = f"c-vs-twin {group}"
                values.setdefault(name, []).append(speedup)
                ops[name] = ">="
                gates[name] = C_FLOORS.get(group)
    lines = [
        f"{'ratio':<40} {'op':<3} {'min':>7} {'median':>7} {'max':>7}"
        f" {'derived':>8} {'margin':>6} {'in force':>8}"
    ]
    for name in [t.name for t in TARGETS if t.name in values] + sorted(
        k for k in values if k.startswith("c-vs-twin ")
    ):
        vs = values[name]
        lo, hi = min(vs), max(vs)
        t, margin = derive(ops[name], lo, hi)
        gate = gates[name]
        lines.append(
            f"{name:<40} {ops[name]:<3} {lo:7.2f} {statistics.median(vs):7.2f} {hi:7.2f}"
            f" {t:8.2f} {margin:6.2f} {gate if gate is not None else '-':>8}"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("n", type=int, nargs="?", default=5)
    ap.add_argument("--keep", type=Path, help="directory for the runs' JSON files")
    ap.add_argument("-k", dest="select", help="pytest -k expression: only these benchmarks")
    ap.add_argument("--from", dest="files", type=Path, nargs="+", help="existing JSON files")
    args = ap.parse_args()
    if args.files:
        files = list(args.files)
    else:
        keep = args.keep or Path(tempfile.mkdtemp(prefix="quic-p2p-spread-"))
        keep.mkdir(parents=True, exist_ok=True)
        files = run_quick(args.n, keep, args.select)
    runs = [load(f) for f in files if f.exists()]
    print(f"{len(runs)} quick runs")
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
