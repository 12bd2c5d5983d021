"""Who a peer is: ``PeerId`` (its key), ``NodeInfo`` (a Node's contact) and
``Peer`` (a connected Node or Client).

A peer *is* its key: ``PeerId`` is the SHA-256 of the public key in the
certificate it presents (every peer presents one, in every trust mode).
Addresses are ``(host, port)`` tuples as asyncio reports them: hints where a
peer was last seen, which change when a NAT rebinds or the peer restarts.
``NodeInfo`` round-trips through JSON so contacts can be shared as text.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import QuicP2pError

Address = tuple[str, int]


class InvalidContactError(QuicP2pError, ValueError):
    """A contact (address or NodeInfo JSON) could not be parsed."""


PEER_ID_TEXT_LEN = 52


@dataclass(frozen=True, order=True)
class PeerId:
    """A peer's identity: the SHA-256 of the SubjectPublicKeyInfo (DER) of its
    certificate's public key, whatever the key type. A renewed certificate
    for the same key keeps the id; another key is another peer.

    Its text form (``str``) is 52 lowercase base32 characters (RFC 4648, no
    padding); :meth:`parse` reads it back (case-insensitively). Hashable,
    ordered, and usable as a dict key."""

    digest: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            raise InvalidContactError("a PeerId is 32 bytes (a SHA-256 digest)")

    @classmethod
    def from_spki(cls, spki_der: bytes) -> PeerId:
        """The id of a public key given as SubjectPublicKeyInfo DER."""
        return cls(hashlib.sha256(spki_der).digest())

    @classmethod
    def from_public_key(cls, key: Any) -> PeerId:
        """The id of a ``cryptography`` public key object."""
        return cls.from_spki(
            key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @classmethod
    def from_certificate(cls, cert_der: bytes) -> PeerId:
        """The id of the key in a certificate (DER); ``InvalidContactError``
        when it is not a certificate."""
        return _id_of_certificate(bytes(cert_der))

    @classmethod
    def parse(cls, text: str) -> PeerId:
        """Inverse of ``str(peer_id)``; ``InvalidContactError`` on anything else."""
        if not isinstance(text, str):
            raise InvalidContactError(f"a peer id is text, got {type(text).__name__}")
        cleaned = text.strip().lower()
        if len(cleaned) != PEER_ID_TEXT_LEN or not cleaned.isascii():
            raise InvalidContactError(
                f"a peer id is {PEER_ID_TEXT_LEN} base32 characters, got {text!r}"
            )
        try:
            digest = base64.b32decode(cleaned.upper() + "====")
        except (binascii.Error, ValueError):
            raise InvalidContactError(f"not a peer id (bad base32): {text!r}") from None
        return cls(digest)

    def short(self) -> str:
        """The first 10 characters, for logs and tables."""
        return str(self)[:10]

    def __str__(self) -> str:
        return base64.b32encode(self.digest).decode("ascii").rstrip("=").lower()

    def __repr__(self) -> str:
        return f"PeerId({str(self)!r})"


@functools.lru_cache(maxsize=4096)
def _id_of_certificate(cert_der: bytes) -> PeerId:
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        return PeerId.from_public_key(cert.public_key())
    except (ValueError, TypeError) as exc:
        raise InvalidContactError(f"not a usable certificate: {exc}") from None


def normalize_address(addr: tuple[Any, ...] | list[Any]) -> Address:
    """``(host, port)`` with the host in canonical IP form (asyncio's IPv6 tuples
    carry flowinfo and scope id; those are dropped)."""
    if not isinstance(addr, (tuple, list)) or len(addr) < 2:
        raise InvalidContactError(f"address must be (host, port), got {addr!r}")
    host, port = addr[0], addr[1]
    if type(host) is str and type(port) is int:
        return _normalize_cached(host, port)
    return _normalize(host, port)


@functools.lru_cache(maxsize=4096)
def _normalize_cached(host: str, port: int) -> Address:
    # Peers are few and their Peer/NodeInfo values are rebuilt often (every
    # stream, every event): parsing the same address again costs more than
    # the rest of building one.
    return _normalize(host, port)


def _normalize(host: Any, port: Any) -> Address:
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
    """A Node's contact: who it is and where to reach it.

    - ``peer_addr``: the address to try first (the seed's field: where it
      listens, or where we last saw it); ``other_addrs``: more to try after it,
      in order (another family, an observed address). ``addresses`` is all of
      them.
    - ``peer_id``: the key the Node must prove; connecting checks it, so a
      renewed certificate for the same key is still accepted.
    - ``peer_cert_der``: a certificate (DER) to pin exactly, as the seed did;
      its key's id is ``peer_id`` (given both, they must agree).

    With neither, any Node at the address is accepted (and its id learnt).
    Equality and hashing use every field.
    """

    peer_addr: Address
    peer_cert_der: bytes = b""
    peer_id: PeerId | None = None
    other_addrs: tuple[Address, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "peer_addr", normalize_address(self.peer_addr))
        if not isinstance(self.peer_cert_der, (bytes, bytearray)):
            raise InvalidContactError("peer_cert_der must be bytes")
        object.__setattr__(self, "peer_cert_der", bytes(self.peer_cert_der))
        if self.peer_id is not None and not isinstance(self.peer_id, PeerId):
            raise InvalidContactError("peer_id must be a PeerId (PeerId.parse reads text)")
        if self.peer_cert_der:
            of_cert = PeerId.from_certificate(self.peer_cert_der)
            if self.peer_id is not None and self.peer_id != of_cert:
                raise InvalidContactError("peer_id is not the id of the key in peer_cert_der")
            object.__setattr__(self, "peer_id", of_cert)
        if isinstance(self.other_addrs, (str, bytes)):
            raise InvalidContactError("other_addrs must be a sequence of (host, port)")
        others = tuple(dict.fromkeys(normalize_address(a) for a in self.other_addrs))
        object.__setattr__(self, "other_addrs", tuple(a for a in others if a != self.peer_addr))

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Every address to try, in order: ``peer_addr`` first."""
        return (self.peer_addr, *self.other_addrs)

    def at(self, addr: Address) -> NodeInfo:
        """The same Node (id, certificate) reached at ``addr`` only."""
        return NodeInfo(addr, self.peer_cert_der, self.peer_id)

    def to_dict(self) -> dict[str, Any]:
        """The contact JSON, version 2 (docs/wire.md): ``peer_id`` (when
        known), ``addresses``, and ``peer_cert_der`` when one is pinned."""
        out: dict[str, Any] = {"v": 2}
        if self.peer_id is not None:
            out["peer_id"] = str(self.peer_id)
        out["addresses"] = [format_address(a) for a in self.addresses]
        if self.peer_cert_der:
            out["peer_cert_der"] = base64.b64encode(self.peer_cert_der).decode("ascii")
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> NodeInfo:
        """Reads contact JSON version 2, or version 1 (``{"peer_addr":
        "host:port", "peer_cert_der": base64}``)."""
        if not isinstance(data, dict):
            raise InvalidContactError("a contact is a JSON object")
        cert = data.get("peer_cert_der", "")
        if not isinstance(cert, str):
            raise InvalidContactError("peer_cert_der must be a base64 string")
        try:
            der = base64.b64decode(cert, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidContactError("peer_cert_der is not valid base64") from None
        if "addresses" not in data:
            if not isinstance(data.get("peer_addr"), str):
                raise InvalidContactError(
                    'a contact needs "addresses": ["host:port", ...] (or v1 "peer_addr")'
                )
            addrs = [parse_address(data["peer_addr"])]
        else:
            raw = data["addresses"]
            if not isinstance(raw, list) or not raw or not all(isinstance(a, str) for a in raw):
                raise InvalidContactError('"addresses" must be a non-empty list of "host:port"')
            if len(raw) > MAX_CONTACT_ADDRESSES:
                raise InvalidContactError(
                    f"a contact carries at most {MAX_CONTACT_ADDRESSES} addresses"
                )
            addrs = [parse_address(a) for a in raw]
        peer_id = None
        if data.get("peer_id") is not None:
            peer_id = PeerId.parse(data["peer_id"])
        return cls(addrs[0], der, peer_id, tuple(addrs[1:]))

    @classmethod
    def from_json(cls, text: str) -> NodeInfo:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidContactError(f"NodeInfo is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        who = self.peer_id.short() if self.peer_id is not None else "any"
        where = ", ".join(format_address(a) for a in self.addresses)
        pin = f", cert={_short_hex(self.peer_cert_der)}" if self.peer_cert_der else ""
        return f"NodeInfo({who} at {where}{pin})"

    __repr__ = __str__


#: Addresses one contact may carry (a bound on what a contact makes us try).
MAX_CONTACT_ADDRESSES = 8


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
    """A connected peer: a Node (with its proven ``NodeInfo``) or a Client.
    ``peer_id`` is the key it proved; ``peer_addr`` where we last saw it."""

    kind: PeerKind
    peer_addr: Address
    node_info: NodeInfo | None = None
    peer_id: PeerId | None = None

    @classmethod
    def node(cls, info: NodeInfo) -> Peer:
        return cls(PeerKind.NODE, info.peer_addr, info, info.peer_id)

    @classmethod
    def client(cls, addr: Address, peer_id: PeerId | None = None) -> Peer:
        return cls(PeerKind.CLIENT, normalize_address(addr), None, peer_id)

    def __post_init__(self) -> None:
        object.__setattr__(self, "peer_addr", normalize_address(self.peer_addr))
        if (self.kind is PeerKind.NODE) != (self.node_info is not None):
            raise ValueError("a Node peer has a NodeInfo; a Client peer has none")
        if self.node_info is not None:
            if self.node_info.peer_addr != self.peer_addr:
                raise ValueError("peer_addr must equal node_info.peer_addr")
            if self.peer_id is None:
                object.__setattr__(self, "peer_id", self.node_info.peer_id)
            elif self.peer_id != self.node_info.peer_id:
                raise ValueError("peer_id must equal node_info.peer_id")

    @property
    def is_node(self) -> bool:
        return self.kind is PeerKind.NODE

    @property
    def peer_cert_der(self) -> bytes | None:
        return self.node_info.peer_cert_der if self.node_info is not None else None
