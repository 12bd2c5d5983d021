"""The asyncio driver under ``QuicP2p``: feeds the engine datagrams and time,
sends what it queues, keeps its one timer, and turns command results into
futures (keyed by the engine's ids)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ..accel.types import Frame, FrameKind
from ..cache_store import CacheStore
from ..errors import ConnectionFailedError, EndpointClosedError
from ..events import SentUserMessage, UnsentUserMessage
from ..peer import Address, NodeInfo, Peer, format_address, normalize_address
from ..proto import Engine
from ..proto.limits import CACHE_SAVE_DELAY, ECHO_TIMEOUT, HANDSHAKE_TIMEOUT
from ..proto.qlog import QlogTrace
from ..proto.state import (
    AnswerResult,
    BootstrapWon,
    CacheChanged,
    ConnectResult,
    ProbeResult,
    ReachCheckWanted,
    Result,
    SendResult,
)
from ..reasons import Reason
from .qlog import QlogFiles
from .socket import ADDRESS_CACHE_SIZE, MainProtocol, SideProtocol, v6_form

log = logging.getLogger("quic_p2p.endpoint")

Outcome = SentUserMessage | UnsentUserMessage


#: The ``stats()`` key for a datagram whose source address does not parse.
UNPARSABLE_SOURCE = "dropped: unparsable source address"


class Driver:
    """Drives one ``Engine`` on the running loop."""

    engine: Engine

    def _init_driver(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: MainProtocol | None = None
        #: Sockets opened for one connection each (reachability checks).
        self._side: dict[int, asyncio.DatagramTransport] = {}
        self._next_side = 1
        self._v6_socket = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        self._addr_cache: dict[tuple[Any, ...], Address] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Futures of sends, and of other commands, by the engine's id.
        self._send_futures: dict[int, asyncio.Future[Outcome]] = {}
        self._waits: dict[int, asyncio.Future[Result]] = {}
        self._winners: dict[int, asyncio.Future[NodeInfo]] = {}
        self._cache_store: CacheStore | None = None
        self._cache_save: asyncio.TimerHandle | None = None
        #: Writes the engine's qlog traces (``Config.qlog_dir`` set).
        self._qlog: QlogFiles | None = None

    # ------------------------------------------------------------ loop plumbing
    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise EndpointClosedError("endpoint not started")
        return self._loop

    def _now(self) -> float:
        return self._running_loop().time()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self._running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _after(self) -> None:
        """After a command: act on its results, transmit once the current
        batch of callbacks has run (so many small writes leave in full
        packets, as aioquic's own protocol does)."""
        self._take_results()
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Runs what is due, sends what the engine queued, acts on its
        results, and keeps the one timer at the engine's next deadline."""
        self._flush_scheduled = False
        loop = self._loop
        if loop is None:
            return
        engine = self.engine
        now = loop.time()
        at = engine.poll_timeout()
        if at is not None and at <= now:
            # Due already: run it here. A busy socket flushes before the
            # loop's timer gets its turn, every iteration; waiting for that
            # timer would starve every deadline of the endpoint.
            engine.handle_timeout(now)
        transmits = engine.datagrams_to_send(now)
        if transmits:
            self._sendto(transmits)
        self._take_results()
        at = engine.poll_timeout()
        # Re-armed only to fire sooner: a timer that fires early finds
        # nothing due and arms the next one.
        if at is not None and (self._timer_at is None or at < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = loop.call_at(at, self._on_timer)

    def _sendto(self, transmits: list[tuple[bytes, Address, int]]) -> None:
        main = self._transport
        for data, addr, sock in transmits:
            transport = main if sock == 0 else self._side.get(sock)
            if transport is None or transport.is_closing():
                continue
            transport.sendto(data, v6_form(addr) if sock == 0 and self._v6_socket else addr)

    def _on_timer(self) -> None:
        armed = self._timer_at
        self._timer = None
        self._timer_at = None
        # The loop may fire a hair early; aioquic's own driver clamps to the
        # time it armed, or the timer would do nothing and be re-armed.
        now = self._now()
        self.engine.handle_timeout(now if armed is None else max(armed, now))
        self._flush()

    # ------------------------------------------------------------ datagrams
    def _datagram_received(self, data: bytes, addr_raw: tuple[Any, ...]) -> None:
        addr = self._addr_cache.get(addr_raw)
        if addr is None:
            # ipaddress parsing costs more than the rest of the demux, and
            # peers are few: remember each source's canonical form.
            try:
                addr = normalize_address(addr_raw)
            except ValueError:
                # (One key whatever the address: the text names it.)
                self.engine.count(UNPARSABLE_SOURCE)
                return
            if len(self._addr_cache) >= ADDRESS_CACHE_SIZE:
                self._addr_cache.clear()
            self._addr_cache[addr_raw] = addr
        loop = self._loop
        assert loop is not None  # (datagrams arrive only once started)
        self.engine.handle_datagram(loop.time(), data, addr)

    def _batch_done(self) -> None:
        """After a wake-up's datagrams: transmit once. When they woke stream
        readers or handlers, those run first (the transmit is queued behind
        them), so a reply written at once leaves with the acknowledgements
        of its request instead of in a packet of its own."""
        engine = self.engine
        if engine.stream_wakes or engine.stream_arrivals:
            self._after()
        else:
            self._flush()

    def _protocol_factory(self) -> MainProtocol:
        self._protocol = MainProtocol(self._datagram_received, self._batch_done)
        return self._protocol

    async def _open_side_socket(self, bind_ip: str) -> int:
        """A fresh ephemeral socket for one connection; its engine socket id."""
        sid = self._next_side
        self._next_side += 1

        def receive(data: bytes, addr_raw: tuple[Any, ...]) -> None:
            try:
                addr = normalize_address(addr_raw)
            except ValueError:
                # (One key whatever the address: the text names it.)
                self.engine.count(UNPARSABLE_SOURCE)
                return
            self.engine.handle_datagram(self._now(), data, addr, sid)
            self._flush()

        transport, _ = await self._running_loop().create_datagram_endpoint(
            lambda: SideProtocol(receive), local_addr=(bind_ip, 0)
        )
        self._side[sid] = transport
        return sid

    def _close_side_socket(self, sid: int) -> None:
        transport = self._side.pop(sid, None)
        if transport is not None:
            transport.close()

    # ------------------------------------------------------------ results
    def _take_results(self) -> None:
        for result in self.engine.take_results():
            if isinstance(result, SendResult):
                fut = self._send_futures.pop(result.id, None)
                if fut is None:
                    continue
                if fut.cancelled():
                    # The caller stopped waiting before the engine knew.
                    if not self.engine.outcome_events:
                        self.engine.events.push(result.outcome)
                else:
                    fut.set_result(result.outcome)
            elif isinstance(result, (ConnectResult, AnswerResult, ProbeResult)):
                wait = self._waits.pop(result.id, None)
                if wait is not None and not wait.done():
                    wait.set_result(result)
            elif isinstance(result, BootstrapWon):
                winner = self._winners.get(result.group)
                if winner is not None and not winner.done():
                    winner.set_result(result.node)
            elif isinstance(result, ReachCheckWanted):
                self._spawn(self._reach_check(result.id, result.target))
            elif isinstance(result, CacheChanged):
                self._schedule_cache_save()
            elif isinstance(result, QlogTrace) and self._qlog is not None:
                # On the loop, as the cache is saved: once per connection, when
                # it ends (about 0.1 s per MB of trace: 2000 messages make
                # ~1 MB). A thread would not help: json holds the GIL.
                self._qlog.write(result)
        engine = self.engine
        if engine.stream_wakes or engine.stream_arrivals:
            self._stream_events()

    def _stream_events(self) -> None:  # streams
        raise NotImplementedError

    async def _wait(self, command_id: int) -> Result:
        """The result of an engine command (registered before it can arrive)."""
        fut: asyncio.Future[Result] = self._running_loop().create_future()
        self._waits[command_id] = fut
        self._after()
        try:
            return await fut
        finally:
            self._waits.pop(command_id, None)

    async def _connected(self, command_id: int) -> Peer:
        result = await self._wait(command_id)
        assert isinstance(result, ConnectResult)
        if result.peer is None:
            raise ConnectionFailedError(result.peer_addr, result.error)
        return result.peer

    async def _connect_and_wait(
        self, node: NodeInfo, handshake_timeout: float = HANDSHAKE_TIMEOUT
    ) -> Peer:
        command = self.engine.connect(self._now(), node, timeout=handshake_timeout)
        return await self._connected(command)

    async def _connect_any(self, node: NodeInfo) -> Peer:
        """Each of ``node``'s addresses in turn, until one connects."""
        failures: list[ConnectionFailedError] = []
        for addr in node.addresses:
            try:
                return await self._connect_and_wait(node.at(addr))
            except ConnectionFailedError as exc:
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]
        last = failures[-1].reason
        detail = "; ".join(f"{format_address(f.peer_addr)}: {f.reason}" for f in failures)
        reason = Reason(last.cause, f"every address failed ({detail})")
        raise ConnectionFailedError(node.peer_addr, reason)

    async def _ask(
        self, conn_id: int, kind: FrameKind, body: bytes, within: float = ECHO_TIMEOUT
    ) -> Frame:
        """Sends a request and waits for the answer frame, all within
        ``within`` seconds (the connection coming up included). Raises
        ``ConnectionFailedError`` (refused, lost, no answer)."""
        result = await self._wait(self.engine.ask(self._now(), conn_id, kind, body, within))
        assert isinstance(result, AnswerResult)
        if result.frame is None:
            raise ConnectionFailedError(result.peer_addr, result.error)
        return result.frame

    async def _probe(self, node: NodeInfo, socket: int = 0) -> bool:
        result = await self._wait(self.engine.probe(self._now(), node, socket))
        assert isinstance(result, ProbeResult)
        return result.reached

    async def _reach_check(self, check: int, target: NodeInfo) -> None:
        """Dials ``target`` from a fresh socket for the engine's check."""
        reached = False
        sid = 0
        try:
            sid = await self._open_side_socket(self.engine.config.bind_ip)
            reached = await self._probe(target, sid)
        except OSError as exc:
            log.info("reachability check: no socket: %s", exc)
        finally:
            if sid:
                self._close_side_socket(sid)
            if self._loop is not None and not self.engine.closing:
                self.engine.reach_checked(self._now(), check, target.peer_addr, reached)
                self._after()

    # ------------------------------------------------------------ the cache file
    def _schedule_cache_save(self) -> None:
        if self._cache_save is None and self._loop is not None and not self.engine.closing:
            self._cache_save = self._loop.call_later(CACHE_SAVE_DELAY, self._save_cache)

    def _save_cache(self) -> None:
        """Writes (merge, atomic replace) on the loop: a 200-entry save takes
        about a millisecond, and doing it here keeps the cache single-threaded."""
        self._cache_save = None
        if self._cache_store is not None:
            self._cache_store.save(self.engine.cache)
