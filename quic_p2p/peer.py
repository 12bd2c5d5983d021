"""Who a peer is: ``NodeInfo`` (address + certificate) and ``Peer`` (Node or Client).

Addresses are ``(host, port)`` tuples as asyncio reports them. ``NodeInfo``
round-trips through JSON so contacts can be shared as text.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import QuicP2pError

Address = tuple[str, int]


class InvalidContactError(QuicP2pError, ValueError):
    """A contact (address or NodeInfo JSON) could not be parsed."""


def normalize_address(addr: tuple[Any, ...] | list[Any]) -> Address:
    """``(host, port)`` with the host in canonical IP form (asyncio's IPv6 tuples
    carry flowinfo and scope id; those are dropped)."""
    if not isinstance(addr, (tuple, list)) or len(addr) < 2:
        raise InvalidContactError(f"address must be (host, port), got {addr!r}")
    host, port = addr[0], addr[1]
    try:
        ip = ipaddress.ip_address(host)
    except (ValueError, TypeError):
        raise InvalidContactError(f"address host must be an IP address, got {host!r}") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 0xFFFF:
        raise InvalidContactError(f"port must be an integer 0..65535, got {port!r}")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # one peer, one key: ::ffff:a.b.c.d is a.b.c.d
    return (str(ip), port)


def format_address(addr: Address) -> str:
    """``1.2.3.4:5`` or ``[::1]:5``."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> Address:
    """Inverse of :func:`format_address`."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        raise InvalidContactError(f"address must look like host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port_num = int(port)
    except ValueError:
        raise InvalidContactError(f"bad port in address {text!r}") from None
    return normalize_address((host, port_num))


@dataclass(frozen=True, repr=False)
class NodeInfo:
    """A Node's contact: where it listens and the certificate (DER) it presents.

    Connecting to a NodeInfo with a certificate verifies that the peer presents
    exactly that certificate. Equality and hashing use both fields.
    """

    peer_addr: Address
    peer_cert_der: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "peer_addr", normalize_address(self.peer_addr))
        if not isinstance(self.peer_cert_der, (bytes, bytearray)):
            raise InvalidContactError("peer_cert_der must be bytes")
        object.__setattr__(self, "peer_cert_der", bytes(self.peer_cert_der))

    def to_dict(self) -> dict[str, str]:
        return {
            "peer_addr": format_address(self.peer_addr),
            "peer_cert_der": base64.b64encode(self.peer_cert_der).decode("ascii"),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> NodeInfo:
        if not isinstance(data, dict) or not isinstance(data.get("peer_addr"), str):
            raise InvalidContactError('NodeInfo JSON needs {"peer_addr": "host:port", ...}')
        cert = data.get("peer_cert_der", "")
        if not isinstance(cert, str):
            raise InvalidContactError("peer_cert_der must be a base64 string")
        try:
            der = base64.b64decode(cert, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidContactError("peer_cert_der is not valid base64") from None
        return cls(parse_address(data["peer_addr"]), der)

    @classmethod
    def from_json(cls, text: str) -> NodeInfo:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidContactError(f"NodeInfo is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        return f"NodeInfo({format_address(self.peer_addr)}, cert={_short_hex(self.peer_cert_der)})"

    __repr__ = __str__


def _short_hex(data: bytes) -> str:
    return f"[{data.hex()}]" if len(data) < 8 else f"[{data[:4].hex()}..{data[-4:].hex()}]"


@dataclass(frozen=True)
class Reachability:
    """What ``QuicP2p.check_reachability`` found: whether ``checked_by`` could
    reach us at ``address`` from a socket we never sent to. ``reachable``
    False means a filtering NAT (or firewall): only nodes we contact first
    reach us, so others need hole punching or a relay to connect."""

    reachable: bool
    address: Address
    checked_by: Address


class PeerKind(Enum):
    NODE = "node"
    CLIENT = "client"


@dataclass(frozen=True)
class Peer:
    """A connected peer: a Node (with its proven ``NodeInfo``) or a Client
    (address only; clients are never asked to prove reachability)."""

    kind: PeerKind
    peer_addr: Address
    node_info: NodeInfo | None = None

    @classmethod
    def node(cls, info: NodeInfo) -> Peer:
        return cls(PeerKind.NODE, info.peer_addr, info)

    @classmethod
    def client(cls, addr: Address) -> Peer:
        return cls(PeerKind.CLIENT, normalize_address(addr))

    def __post_init__(self) -> None:
        object.__setattr__(self, "peer_addr", normalize_address(self.peer_addr))
        if (self.kind is PeerKind.NODE) != (self.node_info is not None):
            raise ValueError("a Node peer has a NodeInfo; a Client peer has none")
        if self.node_info is not None and self.node_info.peer_addr != self.peer_addr:
            raise ValueError("peer_addr must equal node_info.peer_addr")

    @property
    def is_node(self) -> bool:
        return self.kind is PeerKind.NODE

    @property
    def peer_cert_der(self) -> bytes | None:
        return self.node_info.peer_cert_der if self.node_info is not None else None
