"""Paired rounds: ours and its reference timed alternately, in one run.

pytest-benchmark times each implementation of a group on its own, one after
the other, for a fraction of a second each in quick mode; a burst of load from
another process then lands on one side only (measured in quick runs:
classify-initial's ratio of medians 2.81x and 1.11x, lru-order-200's 1.53x and
4.61x). Here both
sides run in the same rounds, alternately (the side that goes first swaps each
round), each for about ``batch_s`` seconds of calls; the ratio gated is the
median of the per-round ratios. bench/conftest.py captures the operation each
benchmark measured and calls :func:`paired_ratio` once a group is complete.

Endpoint benchmarks (milliseconds a round, one connection) pair differently:
their untimed setup times one round of the reference before each timed round
of ours, and :func:`store_paired` keeps the per-pair ratios.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Op = Callable[[], Any]


def store_paired(
    benchmark: Any, raw_times: list[float], ours_over_raw: bool, kind: str | None = None
) -> None:
    """Stores, in ``benchmark.extra_info``, the figures of an endpoint
    benchmark whose untimed setup timed one round of its reference before
    each round of ours (``raw_times``): the reference's median and the
    median, min and max of the per-pair ratios (bench/targets.py gates the
    median). ``kind`` names the ratio when the reference is not raw aioquic."""
    ours_times = list(benchmark.stats.stats.data)
    n = min(len(ours_times), len(raw_times))
    if ours_over_raw:
        ratios = [o / r for o, r in zip(ours_times[-n:], raw_times[-n:], strict=True)]
    else:
        ratios = [r / o for o, r in zip(ours_times[-n:], raw_times[-n:], strict=True)]
    benchmark.extra_info["raw_median"] = statistics.median(raw_times[-n:])
    benchmark.extra_info["ratio"] = statistics.median(ratios)
    benchmark.extra_info["ratio_min"] = min(ratios)
    benchmark.extra_info["ratio_max"] = max(ratios)
    benchmark.extra_info["ratio_kind"] = kind or (
        "ours/raw time" if ours_over_raw else "raw/ours speed"
    )


def _per_call(op: Op, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        op()
    return (time.perf_counter() - t0) / k


def _calls_for(op: Op, batch_s: float) -> int:
    """How many calls of ``op`` take about ``batch_s`` (at least one)."""
    k = 1
    while True:
        took = _per_call(op, k) * k
        if took >= batch_s / 4 or k >= 1 << 20:
            return max(1, round(k * batch_s / max(took, 1e-9)))
        k *= 4


def paired_ratio(
    ops: Mapping[str, Op],
    reference: str,
    ours: Sequence[str],
    rounds: int,
    batch_s: float,
) -> dict[str, float]:
    """Median, min and max over ``rounds`` of
    per-call time(reference) / sum of per-call times(ours)."""
    names = [reference, *ours]
    calls = {n: _calls_for(ops[n], batch_s) for n in names}
    ratios = []
    best = dict.fromkeys(names, float("inf"))
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(rounds):
            order = names if i % 2 == 0 else names[::-1]
            t = {n: _per_call(ops[n], calls[n]) for n in order}
            ratios.append(t[reference] / sum(t[n] for n in ours))
            best = {n: min(best[n], t[n]) for n in names}
    finally:
        if was_enabled:
            gc.enable()
    return {
        "paired_ratio": statistics.median(ratios),
        "paired_ratio_min": min(ratios),
        "paired_ratio_max": max(ratios),
        "paired_rounds": float(rounds),
        "paired_best_ratio": best[reference] / sum(best[n] for n in ours),
    }
