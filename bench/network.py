"""A network of many Nodes on one machine: a boot storm into one seed.

    python bench/network.py run [--nodes 1000] [--procs 4] [--json FILE]

Needs root and ``ip netns`` (it creates, and removes at the end, one network
namespace ``qp2p-scale``: every address lives only there). In it, a seed Node
with the library's default settings runs in a process of its own (``seed``
below) at 10.77.0.1; ``--procs`` worker processes (``worker``) each start
their share of ``--nodes`` Nodes, each on an address of its own (10.77.x.y on
the namespace's loopback: per-IP limits see one host per Node, as on a real
network), all with default settings and the seed as their one hard-coded
contact, and bootstrap them all at once. Then the seed sends one message to
every Node (fan-out).

Prints, and writes with ``--json``: Nodes joined / failed (with each failure's
reason), the time until the last one joined, CPU and RSS per Node (workers'
and seed's), the seed's connections and peers, and the fan-out's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

NS = "qp2p-scale"
PREFIX = "10.77"
SEED_IP = f"{PREFIX}.0.1"
SEED_PORT = 4433


def _ip_of(index: int) -> str:
    """Node ``index`` (0-based) -> its address: 10.77.1.0 onwards."""
    n = 256 + index
    return f"{PREFIX}.{n // 256}.{n % 256}"


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- seed
async def seed(cache: Path) -> int:
    """The seed: prints its NodeInfo as JSON, then answers commands on stdin
    (``stats``, ``fanout N``, ``quit``), one JSON line each."""
    from quic_p2p import Config, QuicP2p, SentUserMessage

    rss0 = _rss_kib()
    node = QuicP2p(Config(ip=SEED_IP, port=SEED_PORT, bootstrap_cache_dir=cache))
    await node.start()
    print(json.dumps({"node": node.node_info.to_json()}), flush=True)
    loop = asyncio.get_running_loop()
    cpu0 = time.process_time()

    async def drain_events() -> None:
        async for _ in node.events():
            pass

    drainer = asyncio.create_task(drain_events())
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if not line or line == "quit":
                return 0
            if line == "stats":
                s = node.stats()
                print(
                    json.dumps(
                        {
                            "connections": s.connections,
                            "peers": len(node.connected_peers()),
                            "rss_kib": _rss_kib(),
                            "rss0_kib": rss0,
                            "cpu_s": time.process_time() - cpu0,
                            "admissions": dict(s.admissions),
                            "refused": {k: v for k, v in s.items() if "refused" in k},
                        }
                    ),
                    flush=True,
                )
            elif line.startswith("fanout"):
                peers = node.connected_peers()
                payload = b"x" * int(line.split()[1])
                t0 = time.perf_counter()
                outcomes = await asyncio.gather(
                    *(node.send(p, payload, i) for i, p in enumerate(peers))
                )
                took = time.perf_counter() - t0
                sent = sum(isinstance(o, SentUserMessage) for o in outcomes)
                print(json.dumps({"peers": len(peers), "sent": sent, "s": took}), flush=True)
    finally:
        drainer.cancel()
        await node.aclose()


# ---------------------------------------------------------------- worker
async def worker(first: int, count: int, contact: str, cache: Path) -> int:
    """``count`` Nodes (indexes ``first``...) bootstrap at once through the
    seed; prints one JSON line of results, then waits for stdin to close
    (the Nodes stay up for the fan-out)."""
    from quic_p2p import Config, NodeInfo, QuicP2p

    seed_info = NodeInfo.from_json(contact)
    rss0, cpu0 = _rss_kib(), time.process_time()
    nodes = [
        QuicP2p(
            Config(
                ip=_ip_of(i),
                hard_coded_contacts=(seed_info,),
                bootstrap_cache_dir=cache / str(i),
            )
        )
        for i in range(first, first + count)
    ]
    for n in nodes:
        await n.start()
    received = [0] * count

    async def read(k: int, n: QuicP2p) -> None:
        async for event in n.events():
            if type(event).__name__ == "NewMessage":
                received[k] += 1

    readers = [asyncio.create_task(read(k, n)) for k, n in enumerate(nodes)]
    t0 = time.perf_counter()
    joined_at: list[float] = []
    failures: Counter[str] = Counter()

    async def join(n: QuicP2p) -> None:
        try:
            await n.bootstrap()
            joined_at.append(time.perf_counter() - t0)
        except Exception as exc:  # reported, per reason: what breaks first
            failures[f"{type(exc).__name__}: {exc}"[:200]] += 1

    await asyncio.gather(*(join(n) for n in nodes))
    print(
        json.dumps(
            {
                "joined": len(joined_at),
                "failed": dict(failures),
                "last_join_s": max(joined_at, default=0.0),
                "median_join_s": sorted(joined_at)[len(joined_at) // 2] if joined_at else 0.0,
                "cpu_s": time.process_time() - cpu0,
                "rss_kib": _rss_kib(),
                "rss0_kib": rss0,
                "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # until told (the fan-out is done)
    print(json.dumps({"received": sum(received)}), flush=True)
    for r in readers:
        r.cancel()
    for n in nodes:
        await n.aclose()
    return 0


# ---------------------------------------------------------------- controller
def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)


def _namespace_up(nodes: int) -> None:
    _sh("ip", "netns", "add", NS)
    _sh("ip", "-n", NS, "link", "set", "lo", "up")
    batch = [f"address add {SEED_IP}/16 dev lo"]
    batch += [f"address add {_ip_of(i)}/16 dev lo" for i in range(nodes)]
    subprocess.run(
        ["ip", "-n", NS, "-batch", "-"],
        input="\n".join(batch) + "\n",
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _namespace_down() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=60, check=False)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", NS, sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """One JSON line from ``proc`` within ``timeout`` seconds."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"no answer within {timeout:g} s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the process ended")
    result: dict[str, Any] = json.loads(line)
    return result


def _tell(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(text + "\n")
    proc.stdin.flush()


def run(nodes: int, procs: int, timeout: float) -> dict[str, Any]:
    """The whole experiment (root): namespace, seed, workers, fan-out."""
    _namespace_down()
    _namespace_up(nodes)
    children: list[subprocess.Popen[str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="qp2p-scale-") as tmp:
            seed_proc = _spawn("seed", "--cache", f"{tmp}/seed")
            children.append(seed_proc)
            contact = _line(seed_proc, 30)["node"]
            share, extra = divmod(nodes, procs)
            first, workers = 0, []
            t0 = time.perf_counter()
            for k in range(procs):
                count = share + (k < extra)
                workers.append(
                    _spawn("worker", str(first), str(count), contact, "--cache", f"{tmp}/w{k}")
                )
                first += count
            children += workers
            results = [_line(w, timeout) for w in workers]
            storm_s = time.perf_counter() - t0
            _tell(seed_proc, "stats")
            seed_stats = _line(seed_proc, 30)
            _tell(seed_proc, "fanout 1024")
            fanout = _line(seed_proc, timeout)
            for w in workers:
                _tell(w, "done")
            received = sum(_line(w, 60)["received"] for w in workers)
            _tell(seed_proc, "quit")
            joined = sum(r["joined"] for r in results)
            failed: Counter[str] = Counter()
            for r in results:
                failed.update(r["failed"])
            worker_rss = sum(r["rss_kib"] - r["rss0_kib"] for r in results)
            return {
                "nodes": nodes,
                "processes": procs,
                "joined": joined,
                "failed": dict(failed),
                "last_join_s": max(r["last_join_s"] for r in results),
                "median_join_s": sorted(r["median_join_s"] for r in results)[len(results) // 2],
                "wall_s_incl_start": storm_s,
                "cpu_per_node_ms": sum(r["cpu_s"] for r in results) / nodes * 1e3,
                "rss_per_node_kib": worker_rss / nodes,
                "seed_connections": seed_stats["connections"],
                "seed_peers": seed_stats["peers"],
                "seed_rss_growth_mib": (seed_stats["rss_kib"] - seed_stats["rss0_kib"]) / 1024,
                "seed_rss_per_peer_kib": (seed_stats["rss_kib"] - seed_stats["rss0_kib"])
                / max(seed_stats["peers"], 1),
                "seed_cpu_s": seed_stats["cpu_s"],
                "seed_admissions": seed_stats["admissions"],
                "seed_refused": seed_stats["refused"],
                "fanout_sent": fanout["sent"],
                "fanout_s": fanout["s"],
                "fanout_msgs_per_s": fanout["sent"] / fanout["s"] if fanout["s"] else 0.0,
                "fanout_received": received,
            }
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
            c.wait(timeout=30)
        _namespace_down()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--nodes", type=int, default=1000)
    r.add_argument("--procs", type=int, default=4)
    r.add_argument("--timeout", type=float, default=300.0)
    r.add_argument("--json", type=Path)
    s = sub.add_parser("seed")
    s.add_argument("--cache", type=Path, required=True)
    w = sub.add_parser("worker")
    w.add_argument("first", type=int)
    w.add_argument("count", type=int)
    w.add_argument("contact")
    w.add_argument("--cache", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "seed":
        return asyncio.run(seed(args.cache))
    if args.cmd == "worker":
        return asyncio.run(worker(args.first, args.count, args.contact, args.cache))
    if os.geteuid() != 0:
        print("bench/network.py run needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    result = run(args.nodes, args.procs, args.timeout)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["joined"] == args.nodes else 1


if __name__ == "__main__":
    sys.exit(main())
