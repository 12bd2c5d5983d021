"""Configuration: ``Config`` with the seed's fields and meanings, plus trust modes.

Every value is checked at construction; a bad one raises ``ConfigError`` naming
the field, so mistakes surface where they are made, not in the event loop.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal

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
class Identity:
    """Where an endpoint's private key - its identity, :class:`~quic_p2p.peer.PeerId`
    - comes from. Make one with a constructor:

    - :meth:`file`: a key file the user names, loaded if it exists, created
      (mode 0600) if not; locked while an endpoint uses it, so two endpoints
      never share it.
    - :meth:`key`: a private key given in memory.
    - :meth:`ephemeral`: a fresh key at every start (a new id each time).

    ``Config.identity`` None is the default described there. Whatever the
    source, the endpoint presents a fresh self-signed certificate for the key
    (a renewed certificate keeps the id). This type only describes the
    source; :func:`quic_p2p.identity.acquire_identity` opens and locks files.
    """

    kind: Literal["file", "key", "ephemeral"]
    #: ``file``: the key file.
    path: Path | None = None
    #: ``key``: the key, as PKCS#8 DER (whatever form was given).
    key_der: bytes | None = field(default=None, repr=False)

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> Identity:
        """The key in ``path``: loaded if the file exists (it must be a
        regular file, ours, readable by us only), else a new key written
        there with mode 0600 (its directory must exist). A relative path is
        taken from the working directory when the endpoint starts."""
        return cls("file", path=_file_path(path))

    @classmethod
    def key(cls, data: bytes) -> Identity:
        """This private key: PEM or DER, PKCS#8 or traditional (SEC1, PKCS#1),
        unencrypted, of a type TLS 1.3 can sign with (ECDSA P-256/P-384, RSA,
        Ed25519, Ed448). Checked now: ``ConfigError`` if it is not one."""
        return cls("key", key_der=data)

    @classmethod
    def ephemeral(cls) -> Identity:
        """A fresh key at every start: nothing is written, the id changes."""
        return cls("ephemeral")

    def __post_init__(self) -> None:
        if self.kind == "file":
            if self.key_der is not None:
                raise ConfigError("Identity.file takes a path, not a key")
            object.__setattr__(self, "path", _file_path(self.path))
        elif self.kind == "key":
            if self.path is not None:
                raise ConfigError("Identity.key takes a key, not a path")
            object.__setattr__(self, "key_der", _checked_key(self.key_der))
        elif self.kind == "ephemeral":
            if self.path is not None or self.key_der is not None:
                raise ConfigError("Identity.ephemeral takes neither a path nor a key")
        else:
            raise ConfigError(
                f"Identity kind must be 'file', 'key' or 'ephemeral', got {self.kind!r} "
                "(use Identity.file(), Identity.key() or Identity.ephemeral())"
            )


def _file_path(path: object) -> Path:
    if isinstance(path, (str, os.PathLike)):
        text = os.fspath(path)
        if isinstance(text, str) and text:
            return Path(text)
    raise ConfigError(f"Identity.file needs a file path, got {path!r}")


def _checked_key(data: object) -> bytes:
    # Imported here: certs imports this module (CompleteCert).
    from .certs import CertificateError, load_private_key, load_signing_key

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ConfigError(f"Identity.key needs the key as bytes, got {type(data).__name__}")
    try:
        key_der = load_private_key(bytes(data))
        load_signing_key(key_der)
    except CertificateError as exc:
        raise ConfigError(f"Identity.key: {exc}") from None
    return key_der


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
    #: Where our private key (our PeerId) comes from: see :class:`Identity`.
    #: None: a Node keeps its key in the identity store beside its bootstrap
    #: cache (``identity/`` in the same directory as ``bootstrap_cache_dir``,
    #: default the platform's user cache directory), so it keeps its id across
    #: restarts; a Client is ephemeral (a fresh key per start). Not with
    #: ``our_complete_cert``: that certificate's key is the identity.
    identity: Identity | None = None
    #: A directory to write each connection's qlog trace into (aioquic's
    #: events, qlog 0.3 JSON, viewable in qvis), as ``<ODCID hex>_<client|
    #: server>.qlog`` when the connection ends (or the endpoint closes).
    #: Created at start if missing; ``ConfigError`` at start if it is not a
    #: writable directory. A trace is held in memory until its connection
    #: ends: for debugging, not for a long-lived node. None: no tracing.
    qlog_dir: str | None = None

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
        if self.qlog_dir is not None:
            qlog_dir: object = self.qlog_dir
            if isinstance(qlog_dir, os.PathLike):  # (a Path works too)
                qlog_dir = os.fspath(qlog_dir)
            if not isinstance(qlog_dir, str) or not qlog_dir:
                raise ConfigError(f"qlog_dir must be a directory path, got {self.qlog_dir!r}")
            object.__setattr__(self, "qlog_dir", qlog_dir)
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
        if self.identity is not None and not isinstance(self.identity, Identity):
            raise ConfigError(
                "identity must be an Identity (Identity.file(), .key() or .ephemeral())"
            )
        if self.identity is not None and self.our_complete_cert is not None:
            raise ConfigError(
                "set identity or our_complete_cert, not both: the certificate's key is the identity"
            )
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
