"""``QuicP2p``: the public endpoint, an asyncio face over the sans-IO engine.

One UDP socket carries every connection, inbound and outbound: the address
others see is the address we listen on, which the Node reachability proof
depends on. The engine (``quic_p2p.proto``) holds all protocol state; this
module binds the socket, keeps the engine's clock and one timer, and turns
its results into the awaitables of the API.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from ..accel.types import FrameKind
from ..cache_store import CacheStore
from ..channel import DatagramChannel, EventChannel
from ..errors import (
    BootstrapError,
    ConnectionFailedError,
    EchoDisagreementError,
    EchoError,
    EndpointClosedError,
    QuicP2pError,
)
from ..events import (
    BootstrapFailure,
    Datagram,
    Event,
    Finish,
    SentUserMessage,
    UnsentUserMessage,
)
from ..identity import acquire_identity
from ..peer import (
    Address,
    NodeInfo,
    Peer,
    PeerId,
    Reachability,
    normalize_address,
)
from ..proto import Engine, EventQueue, RelaySessionInfo
from ..proto.config import Config, OurType, RelayPolicy
from ..proto.limits import (
    BOOTSTRAP_ATTEMPTS,
    BOOTSTRAP_PARALLEL,
    BOOTSTRAP_RETRY_DELAY,
    BOOTSTRAP_RETRY_MAX,
    BOOTSTRAP_TIMEOUT,
    DATAGRAM_QUEUE_CAPACITY,
    DEFAULT_EVENT_CAPACITY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_STREAMS_PER_PEER,
    DEFAULT_MAX_UNACKED_BYTES,
    DEFAULT_SEND_TIMEOUT,
    ECHO_QUORUM,
    ECHO_TIMEOUT,
    PROBE_TIMEOUT,
)
from ..proto.state import Result
from ..proto.wire import WireError, decode_address, decode_reach_result
from ..reasons import Cause, Reason
from ..stats import EndpointStats, PeerStats
from .driver import log
from .qlog import QlogFiles, check_qlog_dir
from .socket import drain_socket, socket_families
from .streams import Streams


class QuicP2p(Streams):
    """A peer-to-peer endpoint: one UDP socket, QUIC connections to peers.

    Use it as an async context manager (``async with QuicP2p(config) as node``)
    or call ``start()`` and ``aclose()``.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        event_capacity: int = DEFAULT_EVENT_CAPACITY,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_IP,
        stateless_retry: bool = True,
        retry_above_rate: float = 0.0,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        max_unacked_bytes: int = DEFAULT_MAX_UNACKED_BYTES,
        outcome_events: bool = False,
        relay: RelayPolicy | None = None,
        datagram_capacity: int = DATAGRAM_QUEUE_CAPACITY,
        max_streams_per_peer: int = DEFAULT_MAX_STREAMS_PER_PEER,
    ) -> None:
        self.config = config if config is not None else Config()
        if (
            min(
                event_capacity,
                max_connections,
                max_connections_per_ip,
                datagram_capacity,
                max_streams_per_peer,
            )
            < 1
        ):
            raise QuicP2pError(
                "event_capacity, max_connections, max_connections_per_ip,"
                " datagram_capacity and max_streams_per_peer must be positive"
            )
        if send_timeout is not None and not send_timeout > 0:
            raise QuicP2pError("send_timeout must be positive (or None: never)")
        if max_unacked_bytes < 1:
            raise QuicP2pError("max_unacked_bytes must be positive")
        if relay is not None and not isinstance(relay, RelayPolicy):
            raise TypeError("relay must be a RelayPolicy (or None: do not relay)")
        if relay is not None and self.config.our_type is not OurType.NODE:
            raise QuicP2pError("only a Node can relay")
        queue = EventQueue(event_capacity)
        self._channel = EventChannel(queue)
        # Our key: a Node's survives restarts (locked while we live), see
        # Config.identity.
        self._identity = acquire_identity(self.config, self.config.bootstrap_cache_dir)
        try:
            #: The sans-IO engine under this endpoint (its state, for inspection).
            self.engine = Engine(
                self.config,
                cert=self._identity.cert,
                random_bytes=os.urandom,
                wall_clock=time.time,
                events=queue,
                max_connections=max_connections,
                max_connections_per_ip=max_connections_per_ip,
                stateless_retry=stateless_retry,
                retry_above_rate=retry_above_rate,
                send_timeout=send_timeout,
                max_unacked_bytes=max_unacked_bytes,
                outcome_events=outcome_events,
                relay=relay,
                datagram_capacity=datagram_capacity,
                max_streams_per_peer=max_streams_per_peer,
            )
        except BaseException:
            self._identity.release()
            raise
        self._datagrams = DatagramChannel(self.engine.datagrams)
        self._init_driver()
        self._init_streams()
        self._bootstrapping = False

    # ------------------------------------------------------------ settings
    @property
    def relay_policy(self) -> RelayPolicy | None:
        """Our offer to relay for others (None: we refuse relay requests)."""
        return self.engine.relay_policy

    @relay_policy.setter
    def relay_policy(self, policy: RelayPolicy | None) -> None:
        self.engine.relay_policy = policy

    @property
    def max_connections(self) -> int:
        return self.engine.max_connections

    @property
    def max_connections_per_ip(self) -> int:
        """Incoming connections one IPv4 address (or IPv6 /64) may hold at once."""
        return self.engine.max_connections_per_ip

    @property
    def send_timeout(self) -> float | None:
        """Seconds a connection may leave sends unacknowledged (None: forever)."""
        return self.engine.send_timeout

    @property
    def max_unacked_bytes(self) -> int:
        """Unacknowledged bytes per connection before ``send()`` waits."""
        return self.engine.max_unacked_bytes

    @property
    def outcome_events(self) -> bool:
        """Also put every send's outcome on ``events()`` (the seed's way). Off,
        only outcomes whose ``send()`` caller stopped waiting go there."""
        return self.engine.outcome_events

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> QuicP2p:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Binds the socket and starts serving."""
        if self._transport is not None:
            raise QuicP2pError("endpoint already started")
        if self.config.qlog_dir is not None:
            # Checked before anything starts: aclose() then has nothing to
            # undo. In a thread, as the cache: a slow file system must not
            # stall the loop.
            qlog_dir = await asyncio.to_thread(check_qlog_dir, self.config.qlog_dir)
            self._qlog = QlogFiles(qlog_dir, self.engine.count)
        self._loop = asyncio.get_running_loop()
        # Loaded before binding: a cache problem is a warning, never a failed start.
        # In a thread: waiting for another process's lock must not stall the loop.
        self._cache_store = CacheStore(self.config.bootstrap_cache_dir)
        self.engine.cache.merge(await asyncio.to_thread(self._cache_store.load))
        transport, _ = await self._loop.create_datagram_endpoint(
            self._protocol_factory,
            local_addr=(self.config.bind_ip, self.config.bind_port),
        )
        self._transport = transport
        assert self._protocol is not None
        self._protocol.sock = drain_socket(transport)
        local = normalize_address(transport.get_extra_info("sockname"))
        self._v6_socket, ipv4_ok = socket_families(transport, local)
        self.engine.start(self._now(), local, v6_socket=self._v6_socket, ipv4_ok=ipv4_ok)
        self._flush()
        log.info("endpoint %s bound to %s:%d", self.config.our_type.value, *local)

    async def aclose(self) -> None:
        """Closes every connection; pending sends resolve unsent; ``Finish`` is
        the last event."""
        if self.engine.closing:
            return
        if self._loop is None:
            self.engine.close(0.0)
            self._identity.release()
            self._channel.queue.push(Finish())
            return
        self.engine.close(self._now())
        self._flush()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.engine.forget_all()
        self._take_results()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._cache_save is not None:
            self._cache_save.cancel()
            self._save_cache()
        for sid in list(self._side):
            self._close_side_socket(sid)
        if self._protocol is not None:
            self._protocol.close()
        if self._transport is not None:
            self._transport.close()
            # Let the transport finish closing its socket before we return.
            await asyncio.sleep(0)
        self._identity.release()
        self._channel.queue.push(Finish())

    # ------------------------------------------------------------ properties
    @property
    def local_addr(self) -> Address:
        """The (host, port) actually bound."""
        addr = self.engine.local_addr
        if addr is None:
            raise EndpointClosedError("endpoint not started")
        return addr

    def stats(self) -> EndpointStats:
        """The endpoint now (a new snapshot each call): connections by role,
        connected peers, admissions, punches, relay sessions and bytes, the
        event queue's depth and high-water mark, datagrams dropped by cause,
        streams open. It is also a mapping of every named counter: drops
        and refusals by cause (garbage datagrams, limits, punch and relay
        refusals), ``"admission: ..."`` by decision, ``"connections"``, the
        bytes held for peers not yet proven, ``"streams refused: ..."``..."""
        return self.engine.endpoint_stats()

    def peer_stats(self, peer: Peer | NodeInfo | PeerId | Address) -> PeerStats | None:
        """A connected peer now (a new snapshot each call): its path (direct
        or relayed, via whom), round-trip times, congestion window, bytes and
        packets each way, packets lost, messages sent / unsent / received,
        datagrams, streams open, since when. None when not connected."""
        if isinstance(peer, PeerId):
            return self.engine.peer_stats(peer)
        if isinstance(peer, (Peer, NodeInfo)):
            if peer.peer_id is not None:
                return self.engine.peer_stats(peer.peer_id)
            return self.engine.peer_stats(peer.peer_addr)
        return self.engine.peer_stats(normalize_address(peer))

    def relay_sessions(self) -> list[RelaySessionInfo]:
        """As a relay: the sessions we forward packets for now."""
        return self.engine.relay_sessions()

    @property
    def node_info(self) -> NodeInfo:
        """Our NodeInfo at the bound address (see ``our_connection_info``)."""
        return NodeInfo(self.local_addr, self.engine.our_certificate)

    @property
    def our_certificate(self) -> bytes:
        return self.engine.our_certificate

    @property
    def peer_id(self) -> PeerId:
        """Our id: the key of our certificate (see ``Config.identity``)."""
        return self.engine.peer_id

    def is_hard_coded_contact(self, node_info: NodeInfo) -> bool:
        """``node_info`` is one of ``Config.hard_coded_contacts`` (the same id,
        or the same address for a contact given without one)."""
        return self.engine.cache.is_hard_coded(node_info)

    def connected_peers(self) -> list[Peer]:
        return self.engine.connected_peers()

    def relayed_via(self, peer: Peer | NodeInfo | Address) -> Address | None:
        """The relay our packets to a connected ``peer`` go through, or None
        when they go directly (or we are not connected to it)."""
        addr = peer.peer_addr if isinstance(peer, (Peer, NodeInfo)) else normalize_address(peer)
        return self.engine.relayed_via(addr)

    # ------------------------------------------------------------ events
    async def events(self) -> AsyncIterator[Event]:
        """Every event in order; ends after ``Finish``."""
        async for event in self._channel:
            yield event

    async def next_event(self) -> Event:
        """The next event, waiting for one."""
        return await self._channel.get()

    def poll_event(self) -> Event | None:
        """The next event if one is already queued, else None (no waiting)."""
        return self.engine.poll_event()

    # ------------------------------------------------------------ connecting
    async def connect_to(
        self,
        node: NodeInfo | PeerId,
        *,
        via: NodeInfo | Peer | Address | None = None,
        punch: bool = True,
        relay: bool = True,
    ) -> Peer:
        """Connects to a Node; returns once it is connected (for a Node peer:
        both directions proven). Raises ``ConnectionFailedError``.

        ``node``: a NodeInfo (its addresses are tried in order until one
        connects; what it pins is checked), or a ``PeerId``: connected
        already, or looked up with ``engine.resolve`` (where we see it now,
        the bootstrap cache, the hard-coded contacts, any resolver added).

        ``via``: a Node we are connected to that is also connected to ``node``
        (a rendezvous; ``node`` is given as the rendezvous knows it). Both
        sides must be Nodes. With ``punch``, the rendezvous tells each side
        the other's address as it sees them and a common start time, and both
        dial at once from their one socket, so NAT mappings open both ways
        (hole punching). With ``relay``, if the first punch fails (or
        ``punch`` is off), packets go through the rendezvous when it offers to
        relay (``RelayPolicy``): the peer is connected, ``relayed_via`` names
        the relay, and the remaining punches run in the background; one that
        succeeds moves the connection to the direct path (``UpgradedToDirect``).
        Called again for a relayed peer, it tries one punch now and returns
        the peer, direct or still relayed."""
        self._check_running()
        if isinstance(node, PeerId):
            known = self.engine.peer(node)
            if known is not None and via is None:
                return known
            found = self.engine.resolve(node)
            if found is None:
                reason = Reason(Cause.NOT_CONNECTED, f"no address known for peer {node}")
                raise ConnectionFailedError(("", 0), reason)
            node = found
        if not isinstance(node, NodeInfo):
            raise TypeError("connect_to takes a NodeInfo or a PeerId")
        if via is None:
            return await self._connect_any(node)
        connected = self.engine.check_connect(node)
        if not (punch or relay):
            raise QuicP2pError("connect_to via a rendezvous needs punch or relay (or both)")
        if self.config.our_type is not OurType.NODE:
            raise QuicP2pError("punching and relaying connect Nodes; a Client connects directly")
        via_addr = via.peer_addr if isinstance(via, (NodeInfo, Peer)) else normalize_address(via)
        if connected is not None:
            if self.engine.relayed_via(node.peer_addr) is not None and punch:
                await self._try_upgrade(node.peer_addr, via_addr)
            return self.engine.peer(node.peer_addr) or connected
        return await self._connect_via(node, via_addr, punch=punch, relay=relay)

    async def disconnect_from(self, peer: Address | PeerId | Peer) -> None:
        """Closes every connection with the peer (``ConnectionFailure`` if it was
        connected): given by id, as a Peer, or by the address we see it at."""
        if self._loop is None:
            return
        if isinstance(peer, Peer):
            peer = peer.peer_id if peer.peer_id is not None else peer.peer_addr
        target = peer if isinstance(peer, PeerId) else normalize_address(peer)
        self.engine.disconnect(self._now(), target)
        self._after()

    # ------------------------------------------------------------ sending
    async def send(
        self, peer: Peer | NodeInfo | PeerId, msg: bytes, token: int = 0
    ) -> SentUserMessage | UnsentUserMessage:
        """Sends ``msg``; resolves to ``SentUserMessage`` once the peer received
        it, or ``UnsentUserMessage`` (the message handed back) — the same
        outcome is also reported on ``events()`` when ``outcome_events`` is on,
        or when the caller stops waiting. Sending to a Node we are not
        connected to connects first, as the seed did (a ``PeerId`` is looked
        up as ``connect_to`` does). A ``Peer`` or ``PeerId`` goes to the peer
        with that key wherever it is now; a ``NodeInfo`` insists on what it
        pins (its certificate exactly, else its id)."""
        if not isinstance(peer, (Peer, NodeInfo, PeerId)):
            raise TypeError("send takes a Peer, NodeInfo or PeerId")
        if not isinstance(msg, (bytes, bytearray, memoryview)):
            raise TypeError("msg must be bytes")
        if not isinstance(token, int) or not 0 <= token < 2**64:
            raise QuicP2pError("token must be an integer in 0..2**64-1")
        loop = self._running_loop()
        send_id = self.engine.send(loop.time(), peer, bytes(msg), token)
        future: asyncio.Future[SentUserMessage | UnsentUserMessage] = loop.create_future()
        self._send_futures[send_id] = future
        self._after()
        try:
            return await future
        except asyncio.CancelledError:
            # The caller stopped waiting: the outcome goes to events() instead,
            # decided by the engine from now on, or, if it was decided just
            # before the cancellation reached us, put there now.
            if self._send_futures.pop(send_id, None) is not None:
                self.engine.abandon_send(send_id)
            elif future.done() and not future.cancelled() and not self.outcome_events:
                self._channel.queue.push(future.result())
            raise

    # ------------------------------------------------------------ datagrams
    def send_datagram(self, peer: Peer | NodeInfo | PeerId, data: bytes) -> None:
        """Sends ``data`` to a connected peer as one unreliable datagram (RFC
        9221): no acknowledgement, no retransmission, no order; it arrives
        once or not at all. Raises ``DatagramError`` when not connected to
        the peer, when it takes no datagrams, or when ``data`` is larger than
        ``max_datagram_size(peer)`` (one packet's worth, about 1,150 bytes)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        self.engine.send_datagram(self._running_loop().time(), peer, bytes(data))
        self._after()

    def max_datagram_size(self, peer: Peer | NodeInfo | PeerId) -> int:
        """The largest datagram ``send_datagram`` takes for ``peer`` now (0:
        not connected, or the peer takes none)."""
        return self.engine.max_datagram_size(peer)

    async def datagrams(self) -> AsyncIterator[Datagram]:
        """Every datagram connected peers send us, as it arrives; ends when
        the endpoint closes. At most ``datagram_capacity`` wait to be read:
        beyond, new ones are dropped and counted in ``stats["datagrams
        dropped: queue full"]``."""
        async for datagram in self._datagrams:
            yield datagram

    # ------------------------------------------------------------ bootstrap
    def bootstrap_cache(self) -> list[NodeInfo]:
        """Cached nodes, most recently connected first."""
        return self.engine.cache.peers()

    async def bootstrap(self) -> NodeInfo:
        """Joins the network: tries the cached nodes (healthy, most recent first)
        and then the hard-coded contacts, ``BOOTSTRAP_PARALLEL`` at a time. The
        first to complete the role handshake wins (``BootstrappedTo``); the
        others are closed. Raises ``BootstrapError`` (and reports
        ``BootstrapFailure``) with each contact's reason when all fail."""
        self._check_running()
        if self._bootstrapping:
            raise QuicP2pError("a bootstrap is already in progress")
        contacts = self.engine.cache.bootstrap_order()
        contacts += [c for c in self.config.hard_coded_contacts if c not in contacts]
        if not contacts:
            self._channel.queue.push(BootstrapFailure({}))
            raise BootstrapError(
                "nothing to bootstrap from: no hard-coded contacts and an empty bootstrap cache",
                {},
            )
        group = self.engine.bootstrap_begin()
        winner: asyncio.Future[NodeInfo] = self._running_loop().create_future()
        self._winners[group] = winner
        self._bootstrapping = True
        reasons: dict[Address, Reason] = {}
        slots = asyncio.Semaphore(BOOTSTRAP_PARALLEL)

        async def attempt(contact: NodeInfo) -> None:
            for n in range(BOOTSTRAP_ATTEMPTS):
                if n:
                    pause = min(BOOTSTRAP_RETRY_DELAY * 2 ** (n - 1), BOOTSTRAP_RETRY_MAX)
                    await asyncio.sleep(pause * random.uniform(0.5, 1.5))
                async with slots:
                    if winner.done():
                        return
                    try:
                        waiter = self.engine.bootstrap_connect(self._now(), contact, group)
                        if waiter is None:
                            self._after()
                        else:
                            await self._connected(waiter)
                        return
                    except ConnectionFailedError as exc:
                        reasons[contact.peer_addr] = exc.reason
                        if exc.reason.cause is not Cause.REFUSED:
                            break
            if self.engine.cache.record_failure(contact):
                self._schedule_cache_save()

        tasks = [asyncio.ensure_future(attempt(c)) for c in contacts]
        everyone = asyncio.gather(*tasks)
        waitables: set[asyncio.Future[Any]] = {winner, everyone}
        try:
            await asyncio.wait(
                waitables, timeout=BOOTSTRAP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._bootstrapping = False
            self._winners.pop(group, None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(everyone, return_exceptions=True)
            if self._loop is not None:
                self.engine.bootstrap_end(self._now(), group)
                self._after()
        if winner.done() and not winner.cancelled():
            return winner.result()
        winner.cancel()
        for contact in contacts:
            reasons.setdefault(contact.peer_addr, Reason(Cause.NO_ANSWER, "no answer in time"))
        self._channel.queue.push(BootstrapFailure(dict(reasons)))
        raise BootstrapError("bootstrap failed", reasons)

    # ------------------------------------------------------------ asking peers
    async def our_connection_info(self) -> NodeInfo:
        """Our NodeInfo as the network sees us: asks up to three connected
        Nodes (or hard-coded contacts) which address they see. Two or more
        answers must agree; ``EchoDisagreementError`` reports when they do not."""
        self._check_running()
        targets = self.engine.echo_conns()
        temporary: list[int] = []
        if not targets:
            contacts = list(self.config.hard_coded_contacts)[:ECHO_QUORUM]
            if not contacts:
                host = self.local_addr[0]
                if host in ("0.0.0.0", "::"):
                    raise EchoError(
                        "no node to ask for our address (no connected node, no hard-coded"
                        " contact) and we are bound to an unspecified address"
                    )
                return self.node_info
            early: list[str] = []
            for contact in contacts:
                try:
                    temporary.append(self.engine.dial_echo(self._now(), contact))
                except ConnectionFailedError as exc:
                    early.append(str(exc))
            if not temporary:
                raise EchoError("no contact to ask for our address: " + "; ".join(early))
            targets = temporary
        self._after()
        try:
            results = await asyncio.gather(
                *(self._ask_echo(c) for c in targets), return_exceptions=True
            )
        finally:
            if self._loop is not None:
                for conn in temporary:
                    self.engine.close_connection(self._now(), conn, "echo done")
                self._after()
        answers: dict[Address, Address] = {}
        errors: list[str] = []
        for conn, result in zip(targets, results, strict=True):
            peer = self.engine.connection_peer(conn)
            if isinstance(result, BaseException):
                errors.append(f"{peer[0]}:{peer[1]}: {result}")
            else:
                answers[peer] = result
        if not answers:
            raise EchoError("no node answered our echo request: " + "; ".join(errors))
        seen = set(answers.values())
        if len(seen) > 1:
            raise EchoDisagreementError(answers)
        return NodeInfo(seen.pop(), self.our_certificate)

    async def _ask_echo(self, conn: int) -> Address:
        try:
            answer = await self._ask(conn, FrameKind.ECHO_REQUEST, b"")
            return decode_address(answer.body)
        except ConnectionFailedError as exc:
            raise EchoError(exc.reason) from None
        except (WireError, ValueError) as exc:
            raise EchoError(f"bad echo response: {exc}") from None

    async def check_reachability(self, via: NodeInfo | Peer | Address) -> Reachability:
        """Asks ``via``, a Node we are connected to, to dial us from a fresh
        socket — a port we never sent anything to — at the address it sees us
        at. The reverse connection of the Node handshake comes from the very
        socket we dialled, which a NAT lets in as a reply; this dial does not
        ride any mapping we opened, so it tells whether *anyone* can reach us
        (a public address, or a NAT without filtering) or only nodes we
        contact first (then others reach us by ``connect_to(via=...)``).
        Raises ``ConnectionFailedError`` when ``via`` cannot check."""
        self._check_running()
        if self.config.our_type is not OurType.NODE:
            raise QuicP2pError("a Client accepts no connections: nothing to check")
        via_addr = via.peer_addr if isinstance(via, (NodeInfo, Peer)) else normalize_address(via)
        conn = self.engine.rendezvous_conn(via_addr, via_addr)
        # The checker dials us back first (up to PROBE_TIMEOUT, plus a socket).
        answer = await self._ask(
            conn, FrameKind.REACH_REQUEST, b"", within=PROBE_TIMEOUT + ECHO_TIMEOUT
        )
        try:
            reached, addr = decode_reach_result(answer.body)
        except (WireError, ValueError) as exc:
            bad = Reason(Cause.BAD_ANSWER, f"bad reachability answer: {exc}")
            raise ConnectionFailedError(via_addr, bad) from None
        return Reachability(reached, addr, via_addr)

    # ------------------------------------------------------------ the engine, directly
    async def result_of(self, command_id: int) -> Result:
        """Awaits the result of a command given to ``engine`` directly (call
        it right after the command, before yielding to the loop)."""
        return await self._wait(command_id)

    def flush(self) -> None:
        """Sends what ``engine`` queued after a command given to it directly."""
        self._take_results()
        self._flush()

    # ------------------------------------------------------------ helpers
    def _check_running(self) -> None:
        if self._transport is None or self.engine.closing:
            raise EndpointClosedError("endpoint is not running")
