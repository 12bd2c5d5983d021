"""Helpers for endpoint tests: endpoints on loopback that always close,
bounded waits for events, and Python subprocesses that import the package this
test run imported."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import quic_p2p
from quic_p2p import Config, Event, NodeInfo, QuicP2p
from quic_p2p.proto import ConnectionInfo

E = TypeVar("E")

WAIT = 10.0  # seconds any single expected event may take on a loaded CI machine

#: Where this test run imported ``quic_p2p`` from: site-packages when testing an
#: installed package (the README's ``pytest``, CI), a source tree otherwise
#: (ci/sanitize's private copy, ``PYTHONPATH=. pytest`` after ci/dev-build).
PACKAGE_PARENT = str(Path(quic_p2p.__file__).resolve().parent.parent)


def python_argv(*args: str) -> list[str]:
    """The argv of a Python subprocess (``-m MOD``, ``-c CODE`` or a script) that
    imports the same ``quic_p2p`` as this test run, whatever its cwd; run it with
    ``env=python_env()``. ``-P`` keeps the cwd (for ``-m``/``-c``) and the
    script's directory off ``sys.path``: from a clone's root the cwd is the
    source tree, whose ``quic_p2p`` has no compiled module and would shadow the
    installed package (so ``selfcheck`` reported the twin under a C run)."""
    return [sys.executable, "-P", *args]


def python_env(**extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``, with :data:`PACKAGE_PARENT` first on
    ``PYTHONPATH``: the environment for :func:`python_argv`."""
    path = os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


class Lines:
    """A subprocess's stdout lines, collected by a thread (bounded waits)."""

    def __init__(self, p: subprocess.Popen[str]) -> None:
        self.p = p
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.q.put(line.rstrip("\n"))

    def expect(self, needle: str, timeout: float = 30) -> str:
        """The first line (from now on) containing ``needle``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"{needle!r} not seen; output so far: {self.seen}")


def node_config(**kw: Any) -> Config:
    kw.setdefault("ip", "127.0.0.1")
    kw.setdefault("port", 0)
    return Config(**kw)


@asynccontextmanager
async def endpoints(*configs: Config, **options: Any) -> AsyncIterator[list[QuicP2p]]:
    """Starts one endpoint per config; closes all of them on exit."""
    started: list[QuicP2p] = []
    try:
        for cfg in configs:
            ep = QuicP2p(cfg, **options)
            await ep.start()
            started.append(ep)
        yield started
    finally:
        for ep in started:
            await ep.aclose()


async def next_event(ep: QuicP2p, timeout: float = WAIT) -> Event:  # noqa: ASYNC109 (bounded test wait)
    return await asyncio.wait_for(ep.next_event(), timeout)


async def wait_for_event(
    ep: QuicP2p,
    kind: type[E],
    pred: Callable[[E], bool] = lambda e: True,
    *,
    timeout: float = WAIT,  # noqa: ASYNC109 (every test wait is bounded)
    max_events: int = 100_000,
) -> tuple[E, list[Event]]:
    """The first event of ``kind`` matching ``pred``, and the events before it."""
    seen: list[Event] = []
    async with asyncio.timeout(timeout):
        for _ in range(max_events):
            ev = await ep.next_event()
            if isinstance(ev, kind) and pred(ev):
                return ev, seen
            seen.append(ev)
    raise AssertionError(f"no {kind.__name__} within {max_events} events: {seen[-5:]}")


class Sink(asyncio.DatagramProtocol):
    """A third address (``loop.create_datagram_endpoint(Sink, ...)``): counts
    the datagrams that reach it."""

    def __init__(self) -> None:
        self.datagrams = 0
        self.bytes = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams += 1
        self.bytes += len(data)

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)


@asynccontextmanager
async def third_addresses(n: int) -> AsyncIterator[list[Sink]]:
    """``n`` third addresses on 127.0.0.1, closed on exit."""
    loop = asyncio.get_running_loop()
    made: list[Sink] = []
    try:
        for _ in range(n):
            made.append((await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0)))[1])
        yield made
    finally:
        for sink in made:
            sink.transport.close()


def drain(ep: QuicP2p) -> list[Event]:
    """Events already queued, without waiting."""
    out = []
    while (event := ep.poll_event()) is not None:
        out.append(event)
    return out


async def until(pred: Callable[[], bool], limit: float = WAIT, interval: float = 0.001) -> None:
    """Polls ``pred`` until it holds; fails after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    for _ in range(10**7):
        if pred():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {limit} s")
        await asyncio.sleep(interval)
    raise AssertionError("condition not met")


def _dropped(ep: QuicP2p) -> int:
    return sum(v for k, v in ep.stats().items() if k.startswith("dropped"))


async def datagram_barrier(ep: QuicP2p) -> None:
    """Returns once ``ep`` has processed every datagram sent to it before this
    call: one junk datagram goes to it from a fresh socket, after whatever is
    already queued on loopback, and ``ep`` counts it as dropped. The positive
    signal that a quiet period is over, for checks that nothing else happened."""
    before = _dropped(ep)
    host = ep.local_addr[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00barrier", ep.local_addr[:2])
    await until(lambda: _dropped(ep) > before)


def send_control_frame(ep: QuicP2p, peer_addr: Any, data: bytes) -> None:
    """Sends frame bytes of our choosing to a connected peer on ``ep``'s
    control stream: how tests play a connected Node that sends what an
    honest one would not (docs/wire.md). The connection ``ep`` dialled, else
    the one the peer dialled."""
    conns = [c for c in ep.engine.connections() if c.peer_addr == peer_addr and not c.closed]
    conns.sort(key=lambda c: not c.outgoing)
    assert conns, f"no open connection to {peer_addr}"
    send_on(ep, conns[0].id, data)


def send_on(ep: QuicP2p, conn_id: int, data: bytes) -> None:
    """Frame bytes of our choosing on one of ``ep``'s connections."""
    ep.engine.send_raw_frame(asyncio.get_running_loop().time(), conn_id, data)
    ep.flush()


def connection_to(ep: QuicP2p, peer_addr: Any, *, outgoing: bool) -> ConnectionInfo:
    """``ep``'s open connection to ``peer_addr`` in the direction asked."""
    (conn,) = [
        c
        for c in ep.engine.connections()
        if c.peer_addr == peer_addr and c.outgoing is outgoing and not c.closed
    ]
    return conn


def is_down(ep: QuicP2p, conn_id: int) -> bool:
    """Connection ``conn_id`` of ``ep`` is closed (or already forgotten)."""
    conn = ep.engine.connection(conn_id)
    return conn is None or conn.closed


async def closed(ep: QuicP2p, conn_id: int) -> ConnectionInfo:
    """Connection ``conn_id`` of ``ep`` once it is closed (as it was then)."""
    await until(lambda: is_down(ep, conn_id))
    info = ep.engine.connection(conn_id)
    assert info is not None, "forgotten: more connections ended than the engine remembers"
    return info


async def dial_with_handshake(ep: QuicP2p, target: Any, handshake: bytes) -> int:
    """A connection from ``ep`` to ``target`` that sends ``handshake`` (frame
    bytes of our choosing) instead of ``ep``'s own role handshake: how tests
    play a peer that lies about its role or certificate. Returns its id."""
    loop = asyncio.get_running_loop()
    conn = ep.engine.dial_echo(loop.time(), target)  # echo-only: no automatic handshake
    ep.flush()
    async with asyncio.timeout(WAIT):
        while not (info := ep.engine.connection(conn)) or not info.up:
            assert info is not None and not info.closed, "the connection did not come up"
            await asyncio.sleep(0.01)
    send_on(ep, conn, handshake)
    return conn


PEER_PROCESS = str(Path(__file__).with_name("peer_process.py"))


class PeerProcess:
    """``peer_process.py`` as a subprocess; stdout lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.info: NodeInfo | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, *args: str) -> AsyncIterator[PeerProcess]:
        proc = await asyncio.create_subprocess_exec(
            *python_argv(PEER_PROCESS),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=python_env(),
        )
        self = cls(proc)
        try:
            line = await asyncio.wait_for(self.readline(), 30)
            assert line.startswith("ready "), line
            self.info = NodeInfo.from_json(line[6:])
            yield self
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)

    async def readline(self) -> str:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        line = raw.decode().rstrip("\n")
        if raw:
            self.lines.append(line)
        return line

    async def read_rest(self) -> None:
        for _ in range(10**6):
            if not await asyncio.wait_for(self.readline(), WAIT):
                return
        raise AssertionError("peer process output never ended")
