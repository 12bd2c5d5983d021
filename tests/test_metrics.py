"""Prometheus metrics (``quic_p2p.metrics``, ``quic-p2p node --metrics``):
real endpoints on loopback, scraped over HTTP and parsed back with
prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families

from quic_p2p import NodeInfo, QuicP2p, SentUserMessage
from quic_p2p.metrics import QuicP2pCollector, serve_metrics

from netutil import WAIT, Lines, endpoints, node_config, python_argv, python_env, until

NODE = ("-m", "quic_p2p", "node", "--ip", "127.0.0.1", "--no-stdin")
#: One scrape's bound (the collector itself waits at most 5 s for the loop).
SCRAPE_WAIT = 10.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SCRAPE_WAIT) as resp:
        assert resp.status == 200
        body: bytes = resp.read()
    return body.decode()


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(url: str) -> Samples:
    # Off the loop: the collector reads the endpoint on its loop.
    return parse(await asyncio.wait_for(asyncio.to_thread(scrape_text, url), SCRAPE_WAIT + 1))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def peer_labelled(samples: Samples) -> list[str]:
    return [name for name, labels in samples if any(k == "peer_id" for k, _ in labels)]


async def exchange(a: QuicP2p, b: QuicP2p, n: int) -> None:
    peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
    outs = await asyncio.wait_for(
        asyncio.gather(*(a.send(peer, b"m%d" % i) for i in range(n))), WAIT
    )
    assert all(isinstance(o, SentUserMessage) for o in outs)
    await until(lambda: b.stats().totals.messages_received == n)


async def test_counters_match_what_was_done_and_no_peer_labels_by_default() -> None:
    n = 25
    async with endpoints(node_config(), node_config()) as (a, b):
        with serve_metrics(a, "127.0.0.1", 0) as sa, serve_metrics(b, "127.0.0.1", 0) as sb:
            await exchange(a, b, n)
            ma, mb = await scrape(sa.url), await scrape(sb.url)
            assert value(ma, "quic_p2p_messages_sent_total") == n
            assert value(ma, "quic_p2p_messages_unsent_total") == 0
            assert value(mb, "quic_p2p_messages_received_total") == n
            assert value(ma, "quic_p2p_peers", kind="node", path="direct") == 1
            assert value(ma, "quic_p2p_peers", kind="node", path="relayed") == 0
            assert value(ma, "quic_p2p_connections", role="node_out") == 1
            assert value(mb, "quic_p2p_admissions_total", decision="accepted") >= 1
            assert value(ma, "quic_p2p_bytes_sent_total") > 0
            assert value(ma, "quic_p2p_event_queue_capacity") == a.stats().event_capacity
            assert peer_labelled(ma) == [] and peer_labelled(mb) == []
            # Counters outlive the peer (a Prometheus counter never falls).
            await a.disconnect_from(b.peer_id)
            await until(lambda: a.peer_stats(b.peer_id) is None)
            after = await scrape(sa.url)
            assert value(after, "quic_p2p_messages_sent_total") == n
            assert value(after, "quic_p2p_peers", kind="node", path="direct") == 0
            for (name, labels), v in ma.items():
                if name.endswith("_total"):
                    assert after[(name, labels)] >= v, name


async def test_per_peer_series_only_when_asked() -> None:
    n = 5
    async with endpoints(node_config(), node_config()) as (a, b):
        with serve_metrics(a, "127.0.0.1", 0, per_peer=True) as sa:
            await exchange(a, b, n)
            m = await scrape(sa.url)
            pid = str(b.peer_id)
            assert value(m, "quic_p2p_peer_messages_sent_total", peer_id=pid) == n
            assert value(m, "quic_p2p_peer_info", peer_id=pid, kind="node", path="direct") == 1
            assert value(m, "quic_p2p_peer_rtt_seconds", peer_id=pid) > 0
            # Ids label peers, never addresses.
            assert not any(str(b.local_addr[1]) in str(labels) for _, labels in m)


async def test_the_collector_reads_in_the_loop_and_on_its_own_registry() -> None:
    from prometheus_client import REGISTRY

    async with endpoints(node_config()) as (a,):
        with serve_metrics(a, "127.0.0.1", 0) as server:
            # Not on prometheus_client's global registry.
            assert REGISTRY.get_sample_value("quic_p2p_messages_sent_total") is None
            assert server.registry.get_sample_value("quic_p2p_messages_sent_total") == 0
            # Called from the loop itself, collect() reads at once.
            names = {f.name for f in QuicP2pCollector(a).collect()}
            assert "quic_p2p_messages_sent" in names
            assert server.address[0] == "127.0.0.1" and server.address[1] > 0
        # Closed: the port no longer answers.
        with pytest.raises(OSError):
            await asyncio.to_thread(scrape_text, server.url)


@pytest.fixture
def node_with_metrics() -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    p = subprocess.Popen(
        python_argv(*NODE, "--metrics", "127.0.0.1:0", "--metrics-per-peer"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=python_env(PYTHONUNBUFFERED="1"),
    )
    try:
        yield p, Lines(p)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


async def test_the_cli_flag_serves_metrics(
    node_with_metrics: tuple[subprocess.Popen[str], Lines],
) -> None:
    p, lines = node_with_metrics
    url = lines.expect("Metrics:").split(" ", 1)[1].strip()
    info = lines.expect("Our connection info:").split(":", 1)[1].strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    async with endpoints(node_config()) as (c,):
        peer = await asyncio.wait_for(c.connect_to(NodeInfo.from_json(info)), WAIT)
        out = await asyncio.wait_for(c.send(peer, b"to the cli"), WAIT)
        assert isinstance(out, SentUserMessage)
        m = await scrape(url)
        assert value(m, "quic_p2p_messages_received_total") == 1
        assert value(m, "quic_p2p_peer_messages_received_total", peer_id=str(c.peer_id)) == 1
    p.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(p.wait, 20) == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--metrics", "nowhere"), 2, "argument --metrics: expected HOST:PORT"),
        (("--metrics", "localhost:9464"), 2, "argument --metrics: expected HOST:PORT"),
        (("--metrics-per-peer",), 1, "--metrics-per-peer needs --metrics"),
    ],
)
def test_bad_metrics_flags_are_one_line(args: tuple[str, ...], code: int, message: str) -> None:
    out = subprocess.run(
        python_argv(*NODE, *args),
        capture_output=True,
        text=True,
        timeout=60,
        env=python_env(),
    )
    assert out.returncode == code, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_quic_p2p_imports_without_prometheus_client() -> None:
    """The extra is optional: only quic_p2p.metrics needs it, and says which."""
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import quic_p2p, quic_p2p.cli, quic_p2p.cli_node\n"
        "try:\n"
        "    import quic_p2p.metrics\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        python_argv("-c", code), capture_output=True, text=True, timeout=60, env=python_env()
    )
    assert out.returncode == 0, out.stderr
    assert 'pip install "quic-p2p[metrics]"' in out.stdout
