"""Scale: many connections in one process, and a local network bootstrapping.

Marked slow (``ci/bench --quick`` leaves them out). Each is one measured run;
the figures that matter are in ``extra_info`` (RSS per connection, CPU per
node) and are reported by bench/conftest.py and ci/perf-report.

- ``connections-1000``: one Node endpoint in a child process accepts 1000
  Client endpoints (this process, up to ``DIAL_PARALLEL`` handshakes at once).
  The child's resident set size (``/proc/<pid>/status`` VmRSS) is read before
  and after: growth / 1000 is the memory one connection costs a node.
- ``network-1000`` (root and ``ip netns`` only): bench/network.py's boot storm
  of 1,000 Nodes in 4 processes into one seed, all with default settings.
- ``bootstrap-50``: 3 seed nodes, then 47 nodes in this process that all
  bootstrap at once from the seeds (a boot storm on loopback): wall time until
  every one has bootstrapped, and process CPU time per node.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from quic_p2p import Config, NodeInfo, OurType, QuicP2p
from quic_p2p.certfiles import generate_self_signed

pytestmark = pytest.mark.slow

CONNECTIONS = 1000
DIAL_PARALLEL = 50
NODES = 50
SEEDS = 3

_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from quic_p2p import Config, QuicP2p

    async def main():
        cfg = Config(ip="127.0.0.1", idle_timeout_msec=0, keep_alive_interval_msec=0,
                     bootstrap_cache_dir=sys.argv[1])
        # Every client is on 127.0.0.1: lift the per-IP limit with the global one.
        async with QuicP2p(cfg, max_connections=MAXCONN, max_connections_per_ip=MAXCONN,
                           event_capacity=1 << 20) as node:
            print(node.node_info.to_json(), flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.readline)   # the parent asks
            print(len(node.connected_peers()), flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)   # the parent is done

    asyncio.run(main())
    """
).replace("MAXCONN", str(CONNECTIONS + 100))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_connections_1000(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "scale-connections"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(tmp_path / "server")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        server = NodeInfo.from_json(child.stdout.readline())
        cert = generate_self_signed()
        result: dict[str, Any] = {}

        async def run() -> None:
            cfg = Config(
                ip="127.0.0.1",
                our_type=OurType.CLIENT,
                our_complete_cert=cert,
                idle_timeout_msec=0,
                keep_alive_interval_msec=0,
                bootstrap_cache_dir=tmp_path / "clients",
            )
            clients = [QuicP2p(cfg) for _ in range(CONNECTIONS)]
            for c in clients:
                await c.start()
            # Warm-up: one connection, so the child's first-use allocations
            # (TLS, imports, caches) are not counted per connection.
            await clients[0].connect_to(server)
            await asyncio.sleep(0.2)
            before = _rss_kib(child.pid)
            slots = asyncio.Semaphore(DIAL_PARALLEL)

            async def dial(c: QuicP2p) -> None:
                async with slots:
                    await c.connect_to(server)

            t0 = time.perf_counter()
            await asyncio.gather(*(dial(c) for c in clients[1:]))
            result["connect_s"] = time.perf_counter() - t0
            await asyncio.sleep(0.5)  # let the server finish its side
            after = _rss_kib(child.pid)
            result["server_rss_before_kib"] = before
            result["server_rss_after_kib"] = after
            result["rss_per_connection_kib"] = (after - before) / (CONNECTIONS - 1)
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("count\n")
            child.stdin.flush()
            line = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
            result["connections"] = int(line)
            for c in clients:
                await c.aclose()

        benchmark.pedantic(lambda: asyncio.run(run()), rounds=1, iterations=1)
        benchmark.extra_info.update(result)
        assert result["connections"] == CONNECTIONS, f"the node saw {result['connections']}"
        child.stdin.write("done\n")
        child.stdin.flush()
    finally:
        child.kill()
        child.wait()


def test_bootstrap_50(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "scale-bootstrap"
    result: dict[str, Any] = {}

    async def run() -> None:
        def cfg(i: int, contacts: tuple[NodeInfo, ...] = ()) -> Config:
            return Config(
                ip="127.0.0.1",
                hard_coded_contacts=contacts,
                bootstrap_cache_dir=tmp_path / f"node{i}",
                keep_alive_interval_msec=0,
            )

        # The whole network shares 127.0.0.1: no per-IP limit on the seeds.
        seeds = [QuicP2p(cfg(i), max_connections_per_ip=NODES * 2) for i in range(SEEDS)]
        for s in seeds:
            await s.start()
        contacts = tuple(s.node_info for s in seeds)
        nodes = [QuicP2p(cfg(i, contacts)) for i in range(SEEDS, NODES)]
        for n in nodes:
            await n.start()
        cpu0, t0 = time.process_time(), time.perf_counter()
        joined = await asyncio.gather(*(n.bootstrap() for n in nodes))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        assert all(j in contacts for j in joined)
        result["nodes"] = NODES
        result["wall_s"] = wall
        result["cpu_s"] = cpu
        result["cpu_per_node_ms"] = cpu / (NODES - SEEDS) * 1e3
        for n in [*nodes, *seeds]:
            await n.aclose()

    benchmark.pedantic(lambda: asyncio.run(run()), rounds=1, iterations=1)
    benchmark.extra_info.update(result)


NETWORK_NODES = 1000


@pytest.mark.skipif(
    os.geteuid() != 0 or subprocess.run(["which", "ip"], capture_output=True).returncode != 0,
    reason="the 1,000-node network needs root and `ip netns` (bench/network.py)",
)
def test_network_1000(benchmark: Any, tmp_path: Path) -> None:
    """bench/network.py: 1,000 Nodes in 4 processes, each on an address of its
    own in a network namespace, boot-storm one seed Node (all with default
    settings), then the seed sends a message to each. The figures (joined,
    failures by reason, time to the last join, CPU and RSS per node, the
    seed's memory per peer, fan-out rate) go to extra_info and the targets."""
    benchmark.group = "scale-network"
    out = tmp_path / "network.json"
    script = Path(__file__).with_name("network.py")
    cmd = [sys.executable, str(script), "run", "--nodes", str(NETWORK_NODES), "--procs", "4"]

    def run() -> None:
        subprocess.run([*cmd, "--json", str(out)], capture_output=True, timeout=900, check=False)

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert out.exists(), "bench/network.py wrote no result"
    result = json.loads(out.read_text())
    benchmark.extra_info.update(result)
    assert result["joined"] > 0, result
