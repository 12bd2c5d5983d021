"""The UDP sockets: batched receive, enlarged buffers, IPv4-on-IPv6 sends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from ..peer import Address

log = logging.getLogger("quic_p2p.socket")

#: Source addresses whose canonical form is remembered (cleared when full).
ADDRESS_CACHE_SIZE = 4096
#: Datagrams read per wake-up: asyncio's datagram transport reads one per
#: readiness event, then the loop selects again; we drain what is queued (up
#: to this many) and transmit once, so a burst of packets is answered with one
#: flush (coalesced ACKs) instead of one per datagram.
RECV_BATCH = 64
#: Largest UDP payload we read (IPv4/IPv6 maximum).
RECV_BUFFER = 65_535
#: Socket buffers asked for (the kernel caps them at net.core.[rw]mem_max): a
#: full congestion window arriving between two reads must not be dropped.
SOCKET_BUFFER = 4 * 1024 * 1024


class MainProtocol(asyncio.DatagramProtocol):
    """The endpoint's socket: every datagram goes to ``receive``; after a
    wake-up's batch, ``done`` transmits once."""

    def __init__(
        self,
        receive: Callable[[bytes, tuple[Any, ...]], None],
        done: Callable[[], None],
    ) -> None:
        self.receive = receive
        self.done = done
        #: A duplicate of the transport's socket, to drain queued datagrams.
        self.sock: socket.socket | None = None

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        receive = self.receive
        receive(data, addr)
        # Drain what else is queued on the socket, then transmit once.
        sock = self.sock
        if sock is not None:
            recvfrom = sock.recvfrom
            for _ in range(RECV_BATCH - 1):
                try:
                    data, addr = recvfrom(RECV_BUFFER)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    self.error_received(exc)
                    break
                receive(data, addr)
        self.done()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (e.g. port unreachable) arrive here; QUIC's own timers
        # decide when a peer is gone, so this is only worth a debug line.
        log.debug("socket error: %s", exc)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class SideProtocol(asyncio.DatagramProtocol):
    """A socket opened for one connection (a reachability check)."""

    def __init__(self, receive: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        self.receive = receive

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.receive(data, addr)


def drain_socket(transport: asyncio.DatagramTransport) -> socket.socket | None:
    """Enlarges the socket buffers and returns a non-blocking duplicate of the
    transport's socket (asyncio exposes no read call on it), or ``None`` if the
    loop's transport has no socket (then we read one datagram per wake-up)."""
    tsock = transport.get_extra_info("socket")
    if tsock is None:
        return None
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):  # a platform refusing is harmless
            tsock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    try:
        sock: socket.socket = tsock.dup()
    except (AttributeError, OSError):  # pragma: no cover
        return None
    sock.setblocking(False)
    return sock


def socket_families(transport: asyncio.DatagramTransport, local: Address) -> tuple[bool, bool]:
    """(IPv6 socket, IPv4 peers reachable from it)."""
    tsock = transport.get_extra_info("socket")
    v6 = tsock is not None and tsock.family == socket.AF_INET6
    if not v6:
        return False, True
    assert tsock is not None
    v6only = 1
    with contextlib.suppress(OSError):
        v6only = tsock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    return True, local[0] == "::" and not v6only


def v6_form(addr: Address) -> tuple[str, int]:
    """An address as an IPv6 socket sends to it (IPv4 as ``::ffff:a.b.c.d``)."""
    return addr if ":" in addr[0] else ("::ffff:" + addr[0], addr[1])
