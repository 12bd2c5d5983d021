"""Configuration: ``Config`` with the seed's fields and meanings, plus trust modes.

Every value is checked at construction; a bad one raises ``ConfigError`` naming
the field, so mistakes surface where they are made, not in the event loop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ..accel.types import FRAME_MAX_BODY
from ..errors import QuicP2pError
from ..peer import NodeInfo
from .wire import SMALL_MESSAGE_MAX

#: The seed's defaults (quic-p2p 0.2.0).
DEFAULT_MAX_ALLOWED_MSG_SIZE = 500 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT_MSEC = 30_000
DEFAULT_KEEP_ALIVE_INTERVAL_MSEC = 10_000


class ConfigError(QuicP2pError, ValueError):
    """A configuration value is invalid."""


class OurType(Enum):
    """Our role. A Node accepts connections and proves it is reachable both
    ways; a Client only dials out and uses one connection per peer."""

    CLIENT = "client"
    NODE = "node"

    @classmethod
    def parse(cls, text: str) -> OurType:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ConfigError(f"Unknown client type: {text}") from None


class TrustMode(Enum):
    """How a peer's certificate is checked when we connect to it.

    - ``PUBLIC_CA``: it must chain to an agreed CA (the system's public roots,
      or the bundle given in ``ca_certs_der``).
    - ``PRIVATE_CA``: it must chain to the network's own CA (``ca_certs_der``).
    - ``UNVERIFIED``: no identity check beyond pinning; still encrypted.

    In every mode, a ``NodeInfo`` that carries a certificate pins it: the peer
    must present exactly that certificate; and a certificate outside its
    validity period is refused. In the CA modes a Node also refuses incoming
    connections (Clients and Nodes) whose client certificate does not chain to
    the CA.
    """

    PUBLIC_CA = "public-ca"
    PRIVATE_CA = "private-ca"
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class CompleteCert:
    """Our certificate (DER), its private key (PKCS#8 DER) and any
    intermediate CA certificates (DER) sent along with it."""

    cert_der: bytes
    key_der: bytes = field(repr=False)
    chain_der: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not self.cert_der or not self.key_der:
            raise ConfigError("our_complete_cert needs both a certificate and a key")


@dataclass(frozen=True)
class Config:
    """Endpoint configuration (the seed's fields, then ours)."""

    #: Nodes to bootstrap from and to ask for our external address. Any
    #: sequence (a list is fine); stored as a de-duplicated tuple.
    hard_coded_contacts: Sequence[NodeInfo] = ()
    #: UDP port to bind; None or 0: the OS picks one.
    port: int | None = None
    #: IP to bind; None: 0.0.0.0.
    ip: str | None = None
    #: Largest user message accepted from a peer (bytes, at least 16 KiB);
    #: checked from the frame header, before any of the body is buffered.
    max_msg_size_allowed: int = DEFAULT_MAX_ALLOWED_MSG_SIZE
    #: QUIC idle timeout; 0 disables.
    idle_timeout_msec: int = DEFAULT_IDLE_TIMEOUT_MSEC
    #: QUIC keep-alive (PING) interval; 0 disables.
    keep_alive_interval_msec: int = DEFAULT_KEEP_ALIVE_INTERVAL_MSEC
    #: Our certificate and key, presented to the peer on every connection (as
    #: server, and as client when asked: our Nodes always ask); None: a fresh
    #: self-signed one per start (not allowed for a Client in the CA modes).
    our_complete_cert: CompleteCert | None = None
    our_type: OurType = OurType.NODE
    #: Where the bootstrap cache lives; None: the platform's user cache directory.
    bootstrap_cache_dir: str | Path | None = None
    trust_mode: TrustMode = TrustMode.UNVERIFIED
    #: CA certificates (DER): required for PRIVATE_CA; for PUBLIC_CA they replace
    #: the default public roots. Any sequence; stored as a tuple.
    ca_certs_der: Sequence[bytes] = ()
    #: CA modes: a name every peer's certificate must be valid for (the network's
    #: agreed name). None: the chain is checked, not the name.
    tls_server_name: str | None = None

    def __post_init__(self) -> None:
        contacts = self.hard_coded_contacts
        if isinstance(contacts, NodeInfo) or not isinstance(contacts, Iterable):
            raise ConfigError("hard_coded_contacts must be an iterable of NodeInfo")
        contacts = tuple(dict.fromkeys(contacts))  # de-duplicated, order kept
        if not all(isinstance(c, NodeInfo) for c in contacts):
            raise ConfigError("hard_coded_contacts must hold NodeInfo values")
        object.__setattr__(self, "hard_coded_contacts", contacts)
        object.__setattr__(self, "ca_certs_der", tuple(self.ca_certs_der))

        if self.port is not None and (
            not isinstance(self.port, int)
            or isinstance(self.port, bool)
            or not 0 <= self.port <= 0xFFFF
        ):
            raise ConfigError(f"port must be 0..65535, got {self.port!r}")
        if self.ip is not None:
            try:
                object.__setattr__(self, "ip", str(ipaddress.ip_address(self.ip)))
            except ValueError:
                raise ConfigError(f"ip must be an IP address, got {self.ip!r}") from None
        _check_int(
            "max_msg_size_allowed", self.max_msg_size_allowed, SMALL_MESSAGE_MAX, FRAME_MAX_BODY
        )
        _check_int("idle_timeout_msec", self.idle_timeout_msec, 0, 2**62)
        _check_int("keep_alive_interval_msec", self.keep_alive_interval_msec, 0, 2**62)
        if not isinstance(self.our_type, OurType):
            raise ConfigError("our_type must be an OurType")
        if not isinstance(self.trust_mode, TrustMode):
            raise ConfigError("trust_mode must be a TrustMode")
        if self.trust_mode is TrustMode.PRIVATE_CA and not self.ca_certs_der:
            raise ConfigError("trust_mode PRIVATE_CA needs the network's CA in ca_certs_der")
        if self.our_complete_cert is not None and not isinstance(
            self.our_complete_cert, CompleteCert
        ):
            raise ConfigError("our_complete_cert must be a CompleteCert")
        if (
            self.trust_mode is not TrustMode.UNVERIFIED
            and self.our_type is OurType.CLIENT
            and self.our_complete_cert is None
        ):
            # Nodes refuse a connection whose certificate does not chain to
            # the CA, and the self-signed one we would generate never does:
            # such a Client could never be served, so say so here.
            raise ConfigError(
                f"trust_mode {self.trust_mode.name}: a Client must present a certificate "
                "issued by the network's CA; set our_complete_cert"
            )

    @property
    def bind_ip(self) -> str:
        return self.ip if self.ip is not None else "0.0.0.0"

    @property
    def bind_port(self) -> int:
        return self.port if self.port is not None else 0


@dataclass(frozen=True)
class RelayPolicy:
    """A Node's offer to relay between two Nodes connected to it whose hole
    punching failed (``QuicP2p(relay=RelayPolicy())``; off by default). The
    relay forwards their QUIC packets: it sees sizes and timing, never
    plaintext, and each session ends at the first limit reached."""

    #: Sessions relayed at once, and at once for any one Node that asked for
    #: them (counted per asker, so nobody can spend another pair's share).
    max_sessions: int = 32
    max_sessions_per_peer: int = 4
    #: Bytes forwarded per session, both directions together.
    max_bytes: int = 64 * 1024 * 1024
    #: Lifetime of one session.
    max_seconds: float = 600.0

    def __post_init__(self) -> None:
        _check_int("max_sessions", self.max_sessions, 1, 1_000_000)
        _check_int("max_sessions_per_peer", self.max_sessions_per_peer, 1, 1_000_000)
        _check_int("max_bytes", self.max_bytes, 1, 2**62)
        if not isinstance(self.max_seconds, (int, float)) or not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be positive, got {self.max_seconds!r}")


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
