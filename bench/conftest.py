"""Benchmark fixtures and the gates (thresholds: bench/targets.py).

Every hot-path benchmark runs once per implementation (``impl`` fixture, ids
``c`` / ``py``) inside a named ``benchmark.group``. Once both have run, the
operation each one measured is timed again in *paired rounds*
(bench/paired.py): C and twin alternately, ~1.5 ms of calls each, 61 rounds
in quick mode (121 in full), and the speedup gated is the median of the
per-round ratios:

    speedup = twin / C (median of paired rounds)  must be >= C_FLOORS[group]

pytest-benchmark's own medians time the two one after the other, so a burst
of load from other processes lands on one of them: in quick runs on the shared
2-core machine classify-initial's ratio of medians read 2.81x and 1.11x,
lru-order-200's 1.53x and 4.61x; over 5 runs the paired ratio of every C group
stays within 1.16x of itself (max / min; docs in bench/targets.py). The
retry path (``accept`` against ``retry`` + ``validate``) is paired the same way.

Groups named ``info-*`` are reported but not gated: they time one call where
the real workload batches (cffi's crossing cost, not the C, is what they show).
Absolute times are never gated (shared, noisy machines); ratios are.

Then the targets (bench/targets.py): our endpoint against raw aioquic
(throughput, relayed throughput, connect; paired in the benchmarks
themselves), the retry path against aioquic's full accept, the token
speedups. Every gated ratio has a regression gate set from the spread of 5
quick runs so that a 2x slowdown of ours fails it and noise does not; full mode
(``ci/bench``) also gates the issue's targets, except those listed as known
misses, which it reports. A failed gate fails the session with a message
naming the ratio.

``QUIC_P2P_BENCH_SLOWDOWN=2`` (read here only, never by the library) makes
every measured operation of ours take twice as long; tests/test_bench_gate.py
runs the quick gate with it and checks that every gated ratio fails. With a
slowdown the ``info-*`` groups are skipped (saying so): they have no gate to
fail, and that run is only read for its gate verdicts (~12 s less).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from quic_p2p import Peer, QuicP2p, accel

from paired import paired_ratio
from rawquic import RawPair, config
from targets import c_floor, evaluate, mode, param_of, speedups


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Endpoints default to the user's cache directory: point it at a fresh
    temporary one for the whole session (module-scoped endpoints included)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per module: its endpoints (module fixtures) live on it."""
    lp = asyncio.new_event_loop()
    yield lp
    lp.run_until_complete(lp.shutdown_asyncgens())
    lp.close()


@pytest.fixture(scope="module")
def pair(loop: asyncio.AbstractEventLoop) -> Iterator[tuple[QuicP2p, QuicP2p, Peer]]:
    """Two of our Nodes on the module's loop, ``a`` connected to ``b``: (a, b,
    the peer a reaches b as)."""
    a, b = QuicP2p(config()), QuicP2p(config())

    async def up() -> Peer:
        await a.start()
        await b.start()
        return await a.connect_to(b.node_info)

    peer = loop.run_until_complete(up())
    yield a, b, peer
    loop.run_until_complete(a.aclose())
    loop.run_until_complete(b.aclose())


@pytest.fixture(scope="module")
def raw(loop: asyncio.AbstractEventLoop) -> Iterator[RawPair]:
    """The raw aioquic reference (bench/rawquic.py) on the module's loop."""
    r = RawPair()
    loop.run_until_complete(r.start())
    yield r
    loop.run_until_complete(r.close())


#: ``QUIC_P2P_BENCH_SLOWDOWN=2``: every measured operation of ours takes twice
#: as long (see ``benchmark`` below). Read here, never by the library: it is how
#: tests/test_bench_gate.py proves that the quick gate fails on a 2x regression.
SLOWDOWN = int(os.environ.get("QUIC_P2P_BENCH_SLOWDOWN", "1"))
#: The sides that are ours: the C module (its twin is the reference), our
#: endpoint (raw aioquic is), our stateless retry (aioquic's full accept is).
OURS = ("c", "retry", "validate")


def _is_ours(param: str) -> bool:
    return param in OURS or param.startswith(("c-", "ours"))


def _repeated(fn: Callable[..., Any], times: int) -> Callable[..., Any]:
    """``fn`` called ``times`` times per call: the same work again, so a
    microsecond operation costs exactly that much more (a timer around it would
    add its own cost). Every ``benchmark(fn)`` here is such an operation, and a
    repeatable one (pure, or each call the same work: a fresh index, a decoder
    left empty, a stateless retry decision)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        for _ in range(times - 1):
            fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return run


def _slowed(
    fn: Callable[..., Any], factor: int, loop: asyncio.AbstractEventLoop | None
) -> Callable[..., Any]:
    """``fn``, then (factor - 1) times what the call took of idle time: for
    the ``benchmark.pedantic`` rounds, millisecond-scale endpoint operations
    that cannot simply run twice (a second connect to a connected peer is
    free). The idle time runs the benchmark's event ``loop`` when it has one,
    as a slower ours would: its endpoints' timers and late packets are dealt
    with inside the slowed time. (Blocking the loop instead left that work
    to the raw round timed next, slowing raw too: the datagram ratio then
    fell 1.3x, not 2x, under a 2x slowdown.)"""

    def run(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        idle = (time.perf_counter() - t0) * (factor - 1)
        if loop is not None and not loop.is_closed():
            loop.run_until_complete(asyncio.sleep(idle))
        else:
            time.sleep(idle)
        return result

    return run


#: Groups timed in paired rounds (bench/paired.py): group -> (reference,
#: ours). Every gated C-vs-twin group is (twin, C); see ``_pairing``.
PAIRINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "retry-path": ("accept", ("retry", "validate")),
}
PAIRED_ROUNDS = 61 if mode() == "quick" else 121
PAIRED_BATCH_S = 0.0015


def _pairing(group: str) -> tuple[str, tuple[str, ...]] | None:
    if group in PAIRINGS:
        return PAIRINGS[group]
    return None if group.startswith("info-") else ("py", ("c",))


#: group -> impl -> (the operation the benchmark measured, its fixture).
_captured: dict[str, dict[str, tuple[Callable[[], Any], BenchmarkFixture]]] = {}


class _Benchmark(BenchmarkFixture):
    """pytest-benchmark's fixture, which also keeps the operation it measured
    (for the paired rounds) and, with ``QUIC_P2P_BENCH_SLOWDOWN`` set, slows
    ours: ``benchmark(fn)`` by :func:`_repeated`, ``benchmark.pedantic`` by
    :func:`_slowed`. The fixture object is the plugin's own, its class swapped
    for this subclass (the plugin accepts only a ``BenchmarkFixture``)."""

    _impl: str
    _slow: bool
    _loop: asyncio.AbstractEventLoop | None

    def _capture(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        if self.group:
            _captured.setdefault(self.group, {})[self._impl] = (
                lambda: fn(*args, **kwargs),
                self,
            )

    def _skip_ungated(self) -> None:
        if SLOWDOWN != 1 and self.group and self.group.startswith("info-"):
            pytest.skip("info-* groups are not gated: the slowed run is read for its gates only")

    def __call__(self, function_to_benchmark: Any, *args: Any, **kwargs: Any) -> Any:
        self._skip_ungated()
        fn = function_to_benchmark
        if SLOWDOWN != 1:
            # The reference goes through the same wrapper, called once: both
            # sides pay its ~0.2 us, so a 1 us operation of ours slows 2x, not
            # 2.2x (measured: token-mint's speedup fell 2.46x without this).
            fn = _repeated(fn, SLOWDOWN if self._slow else 1)
        self._capture(fn, args, kwargs)
        return super().__call__(fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    def pedantic(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        self._skip_ungated()
        if self._slow:
            target = _slowed(target, SLOWDOWN, self._loop)
        if kwargs.get("setup") is None and not args:
            self._capture(target, kwargs.get("args", ()), kwargs.get("kwargs") or {})
        return super().pedantic(target, *args, **kwargs)  # type: ignore[no-untyped-call]


def _pair_if_complete(group: str) -> None:
    """Once every side of a paired group has run: the paired rounds, stored
    in each side's extra_info (so they land in the JSON too)."""
    pairing = _pairing(group)
    sides = _captured.get(group, {})
    if pairing is None or not all(n in sides for n in (pairing[0], *pairing[1])):
        return
    ops = {n: op for n, (op, _) in sides.items()}
    result = paired_ratio(ops, pairing[0], pairing[1], PAIRED_ROUNDS, PAIRED_BATCH_S)
    for _, fixture in sides.values():
        fixture.extra_info.update(result)
    del _captured[group]


@pytest.fixture
def benchmark(benchmark: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """pytest-benchmark's own fixture, as ``_Benchmark``; after the test, the
    paired rounds of its group if it was the group's last side."""
    callspec = getattr(request.node, "callspec", None)
    impl = str(callspec.params.get("impl", "")) if callspec is not None else ""
    benchmark.__class__ = _Benchmark
    benchmark._impl = impl
    benchmark._slow = SLOWDOWN != 1 and _is_ours(impl)
    # (The module's event loop, for _slowed, where the benchmark runs on one.)
    benchmark._loop = request.getfixturevalue("loop") if "loop" in request.fixturenames else None
    yield benchmark
    if benchmark.group and not benchmark.disabled:
        _pair_if_complete(benchmark.group)


@pytest.fixture(params=["c", "py"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    mod = accel.IMPLEMENTATIONS.get(request.param)
    if mod is None:
        pytest.fail(f"benchmarks need the C accelerator: {accel.import_error}")
    return mod


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
            "min": b.stats.min,
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
    lines = ["", f"Targets ({mode()} mode; ratios from this run, gates in bench/targets.py):"]
    lines += [v.line() for v in verdicts]
    for r in records:
        extra = r["extra_info"]
        if r["group"] == "scale-connections" and "rss_per_connection_kib" in extra:
            lines.append(
                f"  info    scale: {extra['connections']} connections on one node,"
                f" {extra['rss_per_connection_kib']:.1f} KiB RSS per connection"
            )
        if r["group"] == "scale-network" and "joined" in extra:
            lines.append(
                f"  info    scale: {extra['joined']} of {extra['nodes']} nodes joined one seed"
                f" (failed: {extra['failed'] or 'none'}), last after"
                f" {extra['last_join_s']:.1f} s, {extra['cpu_per_node_ms']:.1f} ms CPU and"
                f" {extra['rss_per_node_kib']:.0f} KiB per node, seed"
                f" {extra['seed_rss_per_peer_kib']:.0f} KiB per peer"
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
    results = speedups(_records(session))
    if not results:
        return
    run_mode = mode()
    lines = [
        "",
        f"C vs twin gate ({run_mode} mode; speedup = twin / C, median of paired rounds;"
        " must be >= the group's floor in bench/targets.py):",
    ]
    failed = []
    for group, (speedup, c_med, py_med) in results.items():
        info = group.startswith("info-")
        floor = None if info else c_floor(group, run_mode)
        ok = floor is not None and speedup >= floor
        if not info and not ok:
            failed.append(group)
        verdict = "info" if info else ("ok  " if ok else "FAIL")
        shown = "" if info else (f">= {floor:g}" if floor is not None else "no floor")
        lines.append(
            f"  {verdict} {group:<32} {speedup:6.2f}x {shown:<9}"
            f"   c {c_med * 1e6:10.2f} us   py {py_med * 1e6:10.2f} us"
        )
    if failed:
        lines.append(f"C slower than its floor against its twin in: {', '.join(failed)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _write(session, lines)
