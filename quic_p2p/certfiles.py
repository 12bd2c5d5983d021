"""The driver-ring side of :mod:`quic_p2p.proto.certs`: what reads the wall clock or
writes files.

:mod:`quic_p2p.proto.certs` is sans-IO, so its creation functions take the current
time (``now=``). The three here have the same names and arguments minus
``now``, which they read from the wall clock (UTC) - the calls to use from
scripts and the CLI::

    from quic_p2p.certfiles import create_ca, issue_certificate

    ca = create_ca("my network CA")
    node = issue_certificate(ca, "node-1", ip_addresses=["192.0.2.1"])

And the key and certificate file writers (atomic, a key never readable by
others), which the ``quic-p2p certs`` commands use.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .proto import certs
from .proto.certs import SELF_SIGNED_DNS_NAME, CertificateError
from .proto.config import CompleteCert

__all__ = [
    "create_ca",
    "generate_self_signed",
    "issue_certificate",
    "write_certificate_file",
    "write_private_key_file",
]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --------------------------------------------------------------------------- creation


def generate_self_signed(
    common_name: str = "quic-p2p node",
    *,
    valid_days: int = 3650,
    not_before: datetime.datetime | None = None,
    dns_names: Sequence[str] = (SELF_SIGNED_DNS_NAME,),
    key_der: bytes | None = None,
) -> CompleteCert:
    """:func:`quic_p2p.proto.certs.generate_self_signed` at the current time
    (``key_der``: certify that key, PKCS#8 DER; None: a fresh P-256 key)."""
    return certs.generate_self_signed(
        common_name,
        now=_now(),
        valid_days=valid_days,
        not_before=not_before,
        dns_names=dns_names,
        key_der=key_der,
    )


def create_ca(
    common_name: str,
    *,
    valid_days: int = 3650,
    not_before: datetime.datetime | None = None,
    issuer: CompleteCert | None = None,
) -> CompleteCert:
    """:func:`quic_p2p.proto.certs.create_ca` at the current time."""
    return certs.create_ca(
        common_name, now=_now(), valid_days=valid_days, not_before=not_before, issuer=issuer
    )


def issue_certificate(
    ca: CompleteCert,
    common_name: str,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    valid_days: int = 825,
    not_before: datetime.datetime | None = None,
) -> CompleteCert:
    """:func:`quic_p2p.proto.certs.issue_certificate` at the current time."""
    return certs.issue_certificate(
        ca,
        common_name,
        now=_now(),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        valid_days=valid_days,
        not_before=not_before,
    )


# --------------------------------------------------------------------------- files


def write_private_key_file(path: str | Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a private key readable by its owner only (mode 0600), atomically."""
    _write_file(Path(path), data, 0o600, overwrite)


def write_certificate_file(path: str | Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a certificate (public) with mode 0644, atomically."""
    _write_file(Path(path), data, 0o644, overwrite)


def _write_file(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    if not overwrite and path.exists():
        raise CertificateError(f"{path} already exists (not overwriting)")
    # The temporary file is created 0600 by mkstemp, so a key is never readable
    # by others, not even for a moment; fchmod sets the final mode whatever the
    # umask. Publishing by rename (overwrite) or link (no overwrite, which fails
    # atomically if the name appeared meanwhile) means readers never see a
    # half-written file.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise CertificateError(f"{path} already exists (not overwriting)") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
