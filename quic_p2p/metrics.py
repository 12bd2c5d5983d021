"""Prometheus metrics for one endpoint, read from ``stats()`` and
``peer_stats()`` at scrape time (no second set of counters).

Needs the ``metrics`` extra (``pip install "quic-p2p[metrics]"``:
``prometheus_client``); ``import quic_p2p`` does not. ``docs/metrics.md``
lists every metric, its type and labels. Label values come only from fixed
sets (roles, peer kinds, path kinds, admission decisions, drop and punch
causes); per-peer series, labelled by ``peer_id`` (never an address), only
with ``per_peer=True``.

    server = serve_metrics(node, "127.0.0.1", 9464)   # in the endpoint's loop
    ...
    server.close()

The collector may be scraped from any thread: the HTTP server answers on a
thread of its own, and the snapshot is taken on the endpoint's event loop
(the engine is not thread-safe), waiting at most ``SCRAPE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

try:
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.exposition import ThreadingWSGIServer
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover (the test extra installs it)
    raise ImportError(
        'quic_p2p.metrics needs prometheus_client: pip install "quic-p2p[metrics]"'
    ) from exc

from .errors import QuicP2pError
from .peer import Address
from .stats import EndpointStats, EndpointTotals, PathKind, PeerStats

if TYPE_CHECKING:
    from .aio import QuicP2p

#: How long a scrape from another thread waits for the endpoint's loop
#: (a loop blocked that long is itself worth a failed scrape).
SCRAPE_TIMEOUT = 5.0
#: How long ``MetricsServer.close`` waits for the server's thread.
CLOSE_TIMEOUT = 5.0

#: ``EndpointTotals`` fields exported as ``quic_p2p_<field>_total``, with help.
TOTALS: dict[str, str] = {
    "bytes_sent": "UDP payload bytes our sockets sent (relayed connections once)",
    "bytes_received": "UDP payload bytes our sockets received (dropped ones included)",
    "packets_sent": "UDP datagrams our sockets sent",
    "packets_received": "UDP datagrams our sockets received",
    "packets_lost": "QUIC packets declared lost, every connection",
    "messages_sent": "messages the peer acknowledged (send() outcome SentUserMessage)",
    "messages_unsent": "messages handed back (send() outcome UnsentUserMessage)",
    "messages_received": "messages delivered to events()",
    "datagrams_sent": "unreliable datagrams queued by send_datagram()",
    "datagrams_received": "unreliable datagrams received from connected peers",
    "streams_opened": "application streams opened, by us and by peers",
    "connections_opened": "QUIC connections dialled or accepted",
    "connections_closed": "QUIC connections ended",
}

#: ``PeerStats`` counters exported per peer as ``quic_p2p_peer_<field>_total``.
PEER_COUNTERS = (
    "bytes_sent",
    "bytes_received",
    "packets_sent",
    "packets_received",
    "packets_lost",
    "messages_sent",
    "messages_unsent",
    "messages_received",
    "datagrams_sent",
    "datagrams_received",
)


def _label(key: str) -> str:
    """A stats key as a label value: "node out" -> "node_out"."""
    return key.replace(" ", "_")


@dataclass(frozen=True)
class _Snapshot:
    endpoint: EndpointStats
    peers: list[PeerStats]


class QuicP2pCollector(Collector):
    """A custom collector over one endpoint: each ``collect()`` reads
    ``endpoint.stats()`` (and ``peer_stats`` of every connected peer) and
    yields metric families. Register it on a ``CollectorRegistry``;
    ``serve_metrics`` does. Built inside the endpoint's event loop, it takes
    its snapshot there when scraped from another thread."""

    def __init__(self, endpoint: QuicP2p, *, per_peer: bool = False) -> None:
        self.endpoint = endpoint
        self.per_peer = per_peer
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def _read(self) -> _Snapshot:
        ep = self.endpoint
        peers = [s for p in ep.connected_peers() if (s := ep.peer_stats(p)) is not None]
        return _Snapshot(ep.stats(), peers)

    def snapshot(self) -> _Snapshot:
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            return self._read()
        done: concurrent.futures.Future[_Snapshot] = concurrent.futures.Future()

        def read() -> None:
            try:
                done.set_result(self._read())
            except BaseException as exc:  # handed to the scraping thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(read)
        return done.result(timeout=SCRAPE_TIMEOUT)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        st = snap.endpoint
        yield from _totals(st.totals)

        conns = GaugeMetricFamily(
            "quic_p2p_connections", "QUIC connections open, by role", labels=["role"]
        )
        for role, n in st.connections_by_role.items():
            conns.add_metric([_label(role)], n)
        yield conns
        peers = GaugeMetricFamily(
            "quic_p2p_peers", "connected peers, by kind and path", labels=["kind", "path"]
        )
        by: dict[tuple[str, str], int] = {}
        for kind in st.peers:
            for path in PathKind:
                by[(kind, path.value)] = 0
        for p in snap.peers:
            where = (p.kind.value, p.path.kind.value)
            by[where] = by.get(where, 0) + 1
        for (kind, path_kind), n in by.items():
            peers.add_metric([kind, path_kind], n)
        yield peers

        adm = CounterMetricFamily(
            "quic_p2p_admissions",
            "what admission did with new connections' first packets",
            labels=["decision"],
        )
        for decision, n in st.admissions.items():
            adm.add_metric([_label(decision)], n)
        yield adm
        yield CounterMetricFamily(
            "quic_p2p_punch_attempts", "hole punches we took part in", value=st.punches["attempts"]
        )
        yield CounterMetricFamily(
            "quic_p2p_punch_successes", "hole punches that worked", value=st.punches["succeeded"]
        )
        failures = CounterMetricFamily(
            "quic_p2p_punch_failures", "hole punches that failed, by cause", labels=["cause"]
        )
        for key, n in st.punches.items():
            if key.startswith("failed: "):
                failures.add_metric([_label(key.removeprefix("failed: "))], n)
        yield failures
        dropped = CounterMetricFamily(
            "quic_p2p_datagrams_dropped",
            "received unreliable datagrams dropped, by cause",
            labels=["cause"],
        )
        for cause, n in st.datagrams_dropped.items():
            dropped.add_metric([_label(cause)], n)
        yield dropped
        yield CounterMetricFamily(
            "quic_p2p_relay_forwarded_bytes",
            "as a relay: bytes forwarded between the sides of our sessions",
            value=st.relay_bytes,
        )
        for name, help_text, value in (
            ("relay_sessions", "as a relay: sessions open", st.relay_sessions),
            ("relay_paths", "relay sessions we are a side of", st.relay_paths),
            ("event_queue_depth", "user messages waiting in events()", st.event_queue_depth),
            (
                "event_queue_high_water",
                "the most user messages events() ever held",
                st.event_queue_high_water,
            ),
            ("event_queue_capacity", "events() capacity (event_capacity)", st.event_capacity),
            ("streams_open", "application streams open", st.streams_open),
            ("stream_unread_bytes", "bytes streams hold unread", st.stream_bytes_unread),
        ):
            yield GaugeMetricFamily(f"quic_p2p_{name}", help_text, value=value)
        if self.per_peer:
            yield from _per_peer(snap.peers)


def _totals(totals: EndpointTotals) -> Iterator[Metric]:
    for field_name, help_text in TOTALS.items():
        yield CounterMetricFamily(
            f"quic_p2p_{field_name}", help_text, value=getattr(totals, field_name)
        )


def _per_peer(peers: list[PeerStats]) -> Iterator[Metric]:
    labelled = [(str(p.peer_id), p) for p in peers if p.peer_id is not None]
    info = GaugeMetricFamily(
        "quic_p2p_peer_info", "a connected peer (always 1)", labels=["peer_id", "kind", "path"]
    )
    for pid, p in labelled:
        info.add_metric([pid, p.kind.value, p.path.kind.value], 1)
    yield info
    gauges: tuple[tuple[str, str, str], ...] = (
        ("rtt_seconds", "rtt", "smoothed round-trip time"),
        ("min_rtt_seconds", "min_rtt", "minimum round-trip time"),
        ("congestion_window_bytes", "congestion_window", "congestion window"),
        ("bytes_in_flight", "bytes_in_flight", "bytes sent, not yet acknowledged or lost"),
        ("streams_open", "streams_open", "application streams open"),
    )
    for name, attr, help_text in gauges:
        g = GaugeMetricFamily(f"quic_p2p_peer_{name}", help_text, labels=["peer_id"])
        for pid, p in labelled:
            value = getattr(p, attr)
            if value is not None:
                g.add_metric([pid], value)
        yield g
    for attr in PEER_COUNTERS:
        c = CounterMetricFamily(
            f"quic_p2p_peer_{attr}",
            f"{attr.replace('_', ' ')}, this peer's current connections",
            labels=["peer_id"],
        )
        for pid, p in labelled:
            c.add_metric([pid], getattr(p, attr))
        yield c


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """The HTTP server ``serve_metrics`` started (a daemon thread): ``address``
    is where it listens; ``close()`` (or leaving ``with``) stops it."""

    def __init__(self, httpd: ThreadingWSGIServer, registry: CollectorRegistry) -> None:
        self._httpd = httpd
        self.registry = registry
        host, port = httpd.server_address[:2]
        self.address: Address = (str(host), int(port))
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="quic-p2p-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def close(self) -> None:
        """Stops serving and closes the listening socket (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(CLOSE_TIMEOUT)
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MetricsError(QuicP2pError):
    """The metrics server could not start (address in use, not ours...)."""


def serve_metrics(
    endpoint: QuicP2p, host: str = "127.0.0.1", port: int = 9464, *, per_peer: bool = False
) -> MetricsServer:
    """Serves ``endpoint``'s metrics at ``http://HOST:PORT/metrics`` from a
    registry of their own (not prometheus_client's global one), on a daemon
    thread. Call it from the endpoint's event loop (scrapes read the
    endpoint there). ``port`` 0 picks a free one (``MetricsServer.address``)."""
    registry = CollectorRegistry()
    registry.register(QuicP2pCollector(endpoint, per_peer=per_peer))

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        httpd = make_server(host, port, make_wsgi_app(registry), Server, _QuietHandler)
    except OSError as exc:
        raise MetricsError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return MetricsServer(httpd, registry)
