"""Writes docs/performance.md (and docs/performance.png when matplotlib is
installed: ``pip install ".[perf]"``) from one pytest-benchmark JSON file.

    python bench/report.py RESULTS.json [--out docs/performance.md]

ci/perf-report runs the full benchmark suite and then this. Every figure is a
median of the run in the JSON; ratios compare groups measured in that same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import c_floor, evaluate, param_of, speedups

#: bench/test_bench_streams.py's file size (full mode).
FILE_MIB = 256

#: Why a target is missed, when it is (measured, see the final section).
MISS_CAUSES = {
    "token-mint c speedup": (
        "cffi's crossing, not the C: measured on this machine, a no-argument cffi call "
        "costs ~0.3 us and `qp2p_sha256` on 0 bytes ~0.5 us (argument conversion), while "
        "each further 64-byte SHA-256 block adds only ~0.05 us; an HMAC token is a few "
        "blocks, so ~0.2-0.3 us of C sits under ~0.7 us of crossing and wrapper checks. "
        "The twin's hashlib/hmac calls are C too, so 5x per single call is out of reach "
        "without batching (a retry mints one token per Initial)."
    ),
    "token-verify c speedup": "as for mint: the cffi crossing dominates one ~0.25 us HMAC.",
    "token-mint c time": "the cffi crossing (~0.5-0.7 us) dominates, see token-mint speedup.",
    "token-verify c time": "the cffi crossing (~0.5-0.7 us) dominates, see token-mint speedup.",
    "connect node/raw": (
        "a Node connect is two full aioquic TLS handshakes (CPU-bound: key exchange and the "
        "server's signature; our ClientHello offers one key share, X25519, where aioquic's "
        "offers four) plus our stateless Retry on the first one (a second ClientHello); so "
        "2x is the floor. "
        "Our own code adds ~1 ms per handshake (pinned-certificate chain check, certificate "
        "parsing). Measured paired on a quiet machine 1.8x; under other sessions' load "
        "2.1-2.4x, because a Node connect has ~3x the round trips of a bare handshake and "
        "each wake-up is exposed to the shared cores."
    ),
    "throughput-1KiB raw/ours": (
        "per-message work of ours (future, task, frame header, NewMessage and "
        "SentUserMessage events, app-level ACK) on top of aioquic's per-packet cost."
    ),
    "request-1KiB-c1 raw/ours": (
        "a request is a stream of its own, opened with a header naming the protocol, routed "
        "to a handler task and checked against the peer's and the protocol's stream limits; "
        "with one in flight each of those loop turns is exposed (64 in flight: ahead of raw)."
    ),
    "throughput-64KiB raw/ours": (
        "each large message opens its own stream (aioquic visits every open stream per packet)."
    ),
}


def _load(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = json.loads(path.read_text())
    records = []
    for b in data["benchmarks"]:
        records.append(
            {
                "group": b.get("group"),
                "name": b["name"],
                "param": param_of(b.get("param"), b.get("params")),
                "median": b["stats"]["median"],
                "rounds": b["stats"]["rounds"],
                "extra_info": b.get("extra_info", {}),
            }
        )
    return data, records


def _med(records: list[dict[str, Any]], group: str, param: str) -> dict[str, Any] | None:
    for r in records:
        if r["group"] == group and r["param"] == param:
            return r
    return None


def _t(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} us"


def _chart(verdicts: list[Any], out: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [v for v in verdicts if v.value is not None and v.target.unit == "x"]
    if not rows:
        return False
    fig, axes = plt.subplots(1, len(rows), figsize=(2.0 * len(rows), 3.6))
    if len(rows) == 1:
        axes = [axes]
    for ax, v in zip(axes, rows, strict=True):
        goal = v.goal
        ok = goal is None or v.target.met(v.value, goal)
        ax.bar([0], [v.value], color="tab:green" if ok else "tab:red", width=0.6)
        if goal is not None:
            ax.axhline(goal, color="black", linestyle="--", linewidth=1)
            ax.text(0.32, goal, f" target {v.target.op} {goal:g}", va="bottom", fontsize=7)
        ax.set_xticks([])
        ax.set_title(v.target.name.replace(" ", "\n", 1), fontsize=8)
        ax.text(0, v.value, f"{v.value:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max(v.value, goal or 0) * 1.25)
        ax.tick_params(labelsize=7)
    fig.suptitle("quic-p2p issue 6: ratios from one run (dashed: target)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def render(json_path: Path, out: Path, command: str) -> str:
    data, records = _load(json_path)
    verdicts = evaluate(records, "full")
    mi = data.get("machine_info", {})
    lines = [
        "# Performance",
        "",
        "Generated by `ci/perf-report` from one full run of `ci/bench` on one machine; every",
        "figure is a median from that run, and every ratio compares two groups measured in",
        "that same run (shared 2-core machine: absolute times drift between runs, ratios",
        "much less). Both ends of each pair run in one process on loopback, so the",
        "endpoint figures are CPU cost, not network speed.",
        "",
        f"- when: {data.get('datetime', '?')}",
        f"- machine: {mi.get('cpu', {}).get('brand_raw', platform.processor() or '?')},"
        f" {mi.get('cpu', {}).get('count', '?')} cores;"
        f" Python {mi.get('python_version', platform.python_version())}",
        f"- command: `{command}`",
        "",
        "## Targets (issue 6)",
        "",
        "Gated ratios also have a regression gate (bench/targets.py), set from the spread",
        "of quick runs so that a 2x slowdown of ours fails it (64 KiB and 1 MiB: quick mode",
        "only, full mode sends more messages); the verdict names a failed gate. A target",
        "missed for a measured reason is a known miss: reported here and by the gate,",
        "without failing it.",
        "",
        "| ratio | measured | target | verdict |",
        "|---|---:|---:|---|",
    ]
    for v in verdicts:
        if v.value is None:
            lines.append(f"| {v.target.what} | not run | | |")
            continue
        unit = v.target.unit
        goal = f"{v.target.op} {v.goal:g}{unit}" if v.goal is not None else "-"
        if v.status == "FAIL":
            verdict = f"**FAILED** its gate ({v.target.op} {v.threshold:g})"
        elif v.goal is None:
            gated = f"gated ({v.target.op} {v.threshold:g})" if v.threshold is not None else None
            verdict = gated or "reported"
        elif v.target.met(v.value, v.goal):
            verdict = "**met**"
        else:
            known = " (known miss: reported, not failed)" if v.status == "known miss" else ""
            verdict = f"**missed**{known}: " + MISS_CAUSES.get(v.target.name, "see below")
        lines.append(f"| {v.target.what} | {v.value:.2f}{unit} | {goal} | {verdict} |")

    chart = out.with_suffix(".png")
    if _chart(verdicts, chart):
        lines += ["", f"![ratios against their targets]({chart.name})"]

    lines += [
        "",
        "## Message throughput: ours vs raw aioquic",
        "",
        "Ours: `QuicP2p.send` of every message at once (`asyncio.gather`), until each one is",
        "`SentUserMessage` (the receiving application acknowledged it). Raw: the same bytes",
        "written to one aioquic stream (`serve`/`connect`), until the server's reply after the",
        "last byte. Same TLS, flow-control windows and datagram size (`quic_p2p.proto.tls`).",
        "",
        "Raw is timed right before each round of ours (paired); the ratio is the median of",
        "the per-pair ratios, so load from other processes hits both alike. Even so, these",
        "ratios move between runs on a shared machine: on 2026-12-01, 11 quick runs gave",
        "1 KiB 0.90-1.23 and 64 KiB (x100) 1.24-1.52; two full runs 1 KiB 0.79 and 0.98,",
        "64 KiB (x200) 0.91 and 1.45, the first under other sessions' load. The min-max",
        "column shows the spread within this run.",
        "",
        "| messages | ours | raw | ours MB/s | raw MB/s | ours msg/s | raw/ours speed"
        " (pairs: min-max) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group in ("throughput-1KiB", "throughput-64KiB", "throughput-1MiB"):
        o = _med(records, group, "ours")
        if o is None or "raw_median" not in o["extra_info"]:
            continue
        e = o["extra_info"]
        nbytes, count, raw_med = e.get("bytes", 0), e.get("messages", 0), e["raw_median"]
        lines.append(
            f"| {group.split('-', 1)[1]} x{count} | {_t(o['median'])} | {_t(raw_med)}"
            f" | {nbytes / o['median'] / 1e6:.1f} | {nbytes / raw_med / 1e6:.1f}"
            f" | {count / o['median']:,.0f} | {e['ratio']:.2f}"
            f" ({e.get('ratio_min', 0):.2f}-{e.get('ratio_max', 0):.2f}) |"
        )

    lines += [
        "",
        "## Streams and requests: ours vs raw aioquic",
        "",
        "Stream: one transfer on one stream (`open_stream`, 1 MiB writes, `await drain()`",
        "after each) until the receiving handler read it all and answered; raw: the same",
        "bytes on one aioquic stream, written 1 MiB at a time and drained at the same water",
        "marks. Requests: 1 KiB to an echo handler (`request`), 1 or 64 in flight; raw: one",
        "aioquic bidirectional stream per request against an echo server. Paired as above.",
        "",
        "| workload | ours | raw | ours rate | raw rate | raw/ours speed (pairs: min-max) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for group in ("stream-transfer", "request-1KiB-c1", "request-1KiB-c64"):
        o = _med(records, group, "ours")
        if o is None or "raw_median" not in o["extra_info"]:
            continue
        e, raw_med = o["extra_info"], o["extra_info"]["raw_median"]
        if "bytes" in e:
            what = f"{group} {e['bytes'] >> 20} MiB"
            rates = [f"{e['bytes'] / t / 2**20:.1f} MiB/s" for t in (o["median"], raw_med)]
        else:
            what = f"{group} x{e.get('requests', 0)}"
            rates = [f"{e.get('requests', 0) / t:,.0f} req/s" for t in (o["median"], raw_med)]
        lines.append(
            f"| {what} | {_t(o['median'])} | {_t(raw_med)} | {rates[0]} | {rates[1]}"
            f" | {e['ratio']:.2f} ({e.get('ratio_min', 0):.2f}-{e.get('ratio_max', 0):.2f}) |"
        )
    rss = _med(records, "file-rss", "ours")
    if rss is not None and "rss_growth_mib" in rss["extra_info"]:
        e = rss["extra_info"]
        lines += [
            "",
            f"File transfer (examples/file_transfer.py, {FILE_MIB} MiB, a process of its own):"
            f" peak RSS {e['baseline_mib']:.1f} MiB -> {e['peak_mib']:.1f} MiB during the"
            f" transfer, **growth {e['rss_growth_mib']:.1f} MiB**, at {e['mib_per_s']:.1f} MiB/s"
            " (sender, receiver and disk writes on the same cores).",
        ]

    lines += [
        "",
        "## Connect latency",
        "",
        "Until both ends agree: Node = our handshake, the peer's reverse connection and",
        "both role handshakes (stateless retry on, as by default); Client = one handshake",
        "(retry on); raw = a bare aioquic `connect()` (no retry) plus one PING round trip,",
        "timed right before each round of ours (paired).",
        "",
        "| connect | ours | paired raw | ours/raw (median of pairs; min-max) |",
        "|---|---:|---:|---:|",
    ]
    for p in ("ours-node", "ours-client"):
        r = _med(records, "connect", p)
        if r is not None and "raw_median" in r["extra_info"]:
            e = r["extra_info"]
            lines.append(
                f"| {p} | {_t(r['median'])} | {_t(e['raw_median'])} | {e['ratio']:.2f}x"
                f" ({e.get('ratio_min', 0):.2f}-{e.get('ratio_max', 0):.2f}) |"
            )

    lines += [
        "",
        "## Retry path (one core)",
        "",
        "`Admission.decide` on a tokenless Initial (mint + Retry packet), on the Initial",
        "echoing the token (verify), against a full accept (new server `QuicConnection`",
        "fed the Initial, answer built).",
        "",
        "| step | median | per core |",
        "|---|---:|---:|",
    ]
    for p in ("retry", "validate", "accept"):
        r = _med(records, "retry-path", p)
        if r is not None:
            lines.append(f"| {p} | {_t(r['median'])} | {1 / r['median']:,.0f} /s |")

    lines += [
        "",
        "## Hot paths: C vs its pure-Python twin",
        "",
        "Speedup = twin / C: for gated groups the median of paired rounds (C and twin",
        "timed alternately in the same rounds, bench/paired.py), for `info-*` groups",
        "the ratio of the two medians. Floors: `C_FLOORS` in bench/targets.py.",
        "",
        "| group | C | twin | speedup | floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for group, (speedup, c_med, py_med) in speedups(records).items():
        info = group.startswith("info-")
        note = " (info: reported, not gated; see its docstring)" if info else ""
        floor = "-" if info else f"{c_floor(group, 'full') or 0:g}"
        lines.append(f"| {group}{note} | {_t(c_med)} | {_t(py_med)} | {speedup:.2f}x | {floor} |")

    scale = [r for r in records if (r["group"] or "").startswith("scale-")]
    if scale:
        lines += ["", "## Scale", ""]
        for r in scale:
            e = r["extra_info"]
            if r["group"] == "scale-connections" and "rss_per_connection_kib" in e:
                lines.append(
                    f"- {e['connections']} concurrent connections (Clients) on one Node endpoint"
                    f" in one process: RSS {e['server_rss_before_kib'] / 1024:.1f} MiB ->"
                    f" {e['server_rss_after_kib'] / 1024:.1f} MiB, **"
                    f"{e['rss_per_connection_kib']:.0f} KiB per connection**; dialled 50 at a"
                    f" time in {e['connect_s']:.1f} s (both sides on the same 2 cores)."
                )
            if r["group"] == "scale-bootstrap" and "cpu_per_node_ms" in e:
                lines.append(
                    f"- {e['nodes']}-node local network: 3 seeds, then the other"
                    f" {e['nodes'] - 3} bootstrap at once (boot storm, one process):"
                    f" **{e['wall_s']:.2f} s** until all joined,"
                    f" **{e['cpu_per_node_ms']:.0f} ms CPU per node**."
                )

    missed = [
        v for v in verdicts if v.value is not None and v.goal and not v.target.met(v.value, v.goal)
    ]
    lines += ["", "## Misses and their measured causes", ""]
    if not missed:
        lines.append("None: every target is met in this run.")
    for v in missed:
        lines.append(
            f"- **{v.target.name}** ({v.value:.2f}{v.target.unit}, target"
            f" {v.target.op} {v.goal:g}): {MISS_CAUSES.get(v.target.name, '?')}"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("json", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/performance.md"))
    ap.add_argument("--command", default="ci/perf-report")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args.json, args.out, args.command))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
