"""Address scopes: which peer addresses a Node at one address could have seen.

A rendezvous tells us where another peer is "as it sees it". It sees a peer
at the source address of that peer's packets, and which sources can reach it
depends on where it is: a rendezvous we reach at a loopback address only ever
sees loopback sources; one on a link-local address, link-local ones; one on
a public address sees public sources (a private source is not routed to it
across the Internet). A notice naming an address outside that set is a lie —
typically an attempt to make us send packets into our own LAN or host — and
is declined. Sans-IO: plain functions of addresses.
"""

from __future__ import annotations

import enum
import ipaddress

from ..peer import Address


class Scope(enum.IntEnum):
    """Where an address reaches, narrowest first."""

    UNUSABLE = 0  # unspecified, multicast, broadcast, reserved: never a peer
    LOOPBACK = 1
    LINK_LOCAL = 2
    PRIVATE = 3  # any other non-global range (RFC 1918, ULA, CGNAT, documentation, ...)
    GLOBAL = 4


def scope(addr: Address) -> Scope:
    host, port = addr
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return Scope.UNUSABLE
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if port == 0 or ip.is_unspecified or ip.is_multicast:
        return Scope.UNUSABLE
    if ip.is_loopback:  # (before is_reserved: ::1 lies in the reserved ::/8)
        return Scope.LOOPBACK
    if ip.is_link_local:
        return Scope.LINK_LOCAL
    if ip.is_reserved or ip == ipaddress.IPv4Address("255.255.255.255"):
        return Scope.UNUSABLE
    if ip.is_global:
        return Scope.GLOBAL
    return Scope.PRIVATE


def could_observe(seen_at: Address, named: Address) -> bool:
    """Whether a Node we reach at ``seen_at`` could have seen a connected
    peer at ``named``: loopback and link-local only within their own scope,
    a private address only by a Node on a private address (which may also
    see public ones, e.g. through a port forward), a public Node only public
    peers."""
    ours, theirs = scope(seen_at), scope(named)
    if Scope.UNUSABLE in (ours, theirs):
        return False
    if ours is Scope.PRIVATE:
        return theirs in (Scope.PRIVATE, Scope.GLOBAL)
    return theirs is ours
