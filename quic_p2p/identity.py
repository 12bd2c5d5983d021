"""An endpoint's identity on disk: the private key behind its
:class:`~quic_p2p.peer.PeerId`, kept across restarts and locked while in use.

:func:`acquire_identity` turns ``Config`` into an :class:`IdentityLease`: the
certificate to present (a fresh self-signed one for the key, made at each
call), the id, and the lock on the key file, held until
:meth:`IdentityLease.release`. Where the key comes from:

============================================  =====================================
``Config``                                    key
============================================  =====================================
``our_complete_cert`` set                     that certificate's, used as given
``identity=Identity.key(data)``               that key; no file, no lock
``identity=Identity.ephemeral()``, or None    a fresh key; nothing on disk
for a Client
``identity=Identity.file(path)``              that file, locked; created if missing
``identity`` None for a Node                  the identity store (below)
============================================  =====================================

The identity store
------------------
``<cache_dir>/identity/`` (mode 0700; ``cache_dir`` is the bootstrap cache's
directory), holding ``node-<slot>.key`` files (PKCS#8 PEM, mode 0600), slots
0 to :data:`MAX_SLOTS` - 1. An endpoint takes the lowest slot whose file it
can lock (``fcntl.flock(LOCK_EX | LOCK_NB)`` on the file's fd, kept open for
the lease's life), creating the key if the slot has none. flock conflicts
between two fds of one process too, so two endpoints alive at once never
share a key, whichever processes they are in. "Keeping its id" therefore
means: an endpoint gets the lowest slot not locked at the time it starts. A
lone node always gets slot 0, so it keeps its id across restarts; of several
nodes sharing a directory, which one gets which slot depends on the order
they start in. The lock goes when the lease is released or its process
exits, however it exits. A forked child inherits the open fd and with it the
lock (it is the same open file), so release before forking a long-lived
child; exec closes it (``O_CLOEXEC``).

Files are handled like the bootstrap cache's (:mod:`quic_p2p.cache_store`):
opened with ``O_NOFOLLOW | O_NONBLOCK`` (a symlink is refused, a FIFO never
blocks), checked with ``fstat`` to be a regular file owned by us, locked
before they are read. A new key is written to a temporary file in the same
directory (0600, fsync) and published with ``os.link`` - atomic, and failing
if another process published the name first (then that file is used) - so a
key file is never seen empty or half written.

What goes wrong, and what happens:

- A store file readable or writable by group or others: its mode is fixed to
  0600, with a warning (the key may have been read: replace it if that
  matters). A user-named file (``Identity.file``): refused with
  :class:`IdentityError`, as ssh refuses such a key; nothing is changed.
- A store file that is not a usable key (corrupt, truncated, not a regular
  file): renamed ``node-<slot>.key.corrupt-<UTC timestamp>`` (the newest
  :data:`KEEP_CORRUPT` are kept), a warning says the node's id changes, and a
  new key is made. A user-named file: :class:`IdentityError`; a user's file is
  never overwritten or moved.
- A store file owned by another user: that slot is skipped, with a warning.
  A user-named one: :class:`IdentityError`.
- The store's directory cannot be created or written: a warning, and the
  endpoint starts with an ephemeral key (its id changes at every start) - the
  same as a bootstrap cache that cannot be saved. A user-named file that
  cannot be created: :class:`IdentityError`.
- Every slot locked: :class:`IdentityError`, saying to set ``Config.identity``.
- Windows has no ``fcntl``: keys are kept and reused the same way, but not
  locked, so endpoints started at once on one store share slot 0's key.

Everything here blocks (file I/O, one key generation); an endpoint calls it
once, when it is created. No threads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
import time
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import certfiles
from .cache_store import _NotRegularFile, _open_regular, default_cache_dir
from .errors import QuicP2pError
from .peer import PeerId
from .proto import certs
from .proto.config import CompleteCert, Config, OurType

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: keys are kept, never locked
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DIR_NAME",
    "MAX_SLOTS",
    "IdentityError",
    "IdentityLease",
    "acquire_identity",
    "slot_file_name",
]

log = logging.getLogger(__name__)

#: The store's directory, inside the bootstrap cache's directory.
DIR_NAME = "identity"
#: Slots in the store: endpoints alive at once on one directory.
MAX_SLOTS = 64
#: Key files larger than this are not keys (a P-256 PEM is ~240 bytes; RSA
#: 16384 ~12 KiB).
MAX_KEY_FILE_SIZE = 64 * 1024
#: Corrupt key files kept (newest first) when another is set aside.
KEEP_CORRUPT = 5
#: A store temp file older than this belongs to a creator that died.
STALE_TEMP_AGE = 30.0
_TMP_PREFIX = ".node-"
_TMP_SUFFIX = ".tmp"
_CORRUPT_MARK = ".corrupt-"
#: Tries per slot when its file changes under us (another process set it
#: aside, or published it, between our open and our lock).
_RACE_RETRIES = 8


class IdentityError(QuicP2pError):
    """The endpoint's key cannot be had: a key file in use by another
    endpoint, unsafe, unreadable or not a key, or every store slot busy."""


def slot_file_name(slot: int) -> str:
    """The store's file for ``slot``: ``node-<slot>.key``."""
    return f"node-{slot}.key"


class IdentityLease:
    """An endpoint's key while it runs: ``cert`` to present, ``peer_id``, and
    (for a key file) the lock on ``path`` (``slot``: its store slot, None for
    a user-named file or no file). :meth:`release` drops the lock
    (idempotent); also a context manager."""

    def __init__(
        self,
        cert: CompleteCert,
        peer_id: PeerId,
        path: Path | None = None,
        slot: int | None = None,
        fd: int | None = None,
    ) -> None:
        self.cert = cert
        self.peer_id = peer_id
        self.path = path
        self.slot = slot
        self._fd = fd

    @property
    def locked(self) -> bool:
        """Whether this lease still holds its file's lock (False when it has
        no file, after :meth:`release`, and on Windows)."""
        return self._fd is not None and fcntl is not None

    def release(self) -> None:
        """Drops the lock (closes the key file); the key stays on disk."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last fd of the open file drops the flock

    def __enter__(self) -> IdentityLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # A lease dropped without release() must not keep the slot forever.
        with contextlib.suppress(Exception):
            self.release()

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path is not None else ""
        slot = f" slot {self.slot}" if self.slot is not None else ""
        return f"IdentityLease({self.peer_id.short()}{slot}{where})"


def acquire_identity(
    config: Config, cache_dir: str | os.PathLike[str] | None = None
) -> IdentityLease:
    """The key ``config`` names (see the module's table), with a fresh
    self-signed certificate for it, and its file locked when it has one.

    ``cache_dir``: the bootstrap cache's directory (None:
    :func:`~quic_p2p.cache_store.default_cache_dir`); the store is its
    ``identity/``. Raises :class:`IdentityError` (never for a store that
    cannot be written: that is a warning and an ephemeral key)."""
    if config.our_complete_cert is not None:
        cert = config.our_complete_cert
        try:
            peer_id = PeerId.from_certificate(cert.cert_der)
        except QuicP2pError as exc:
            raise IdentityError(f"our_complete_cert: {exc}") from None
        return IdentityLease(cert, peer_id)
    identity = config.identity
    if identity is None:
        if config.our_type is OurType.CLIENT:
            return _lease(_new_key_der())
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        return _acquire_from_store(directory / DIR_NAME)
    if identity.kind == "key":
        assert identity.key_der is not None
        return _lease(identity.key_der)
    if identity.kind == "ephemeral":
        return _lease(_new_key_der())
    assert identity.path is not None
    return _acquire_user_file(identity.path)


# --------------------------------------------------------------------------- keys


def _new_key_der() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _lease(
    key_der: bytes, path: Path | None = None, slot: int | None = None, fd: int | None = None
) -> IdentityLease:
    try:
        cert = certfiles.generate_self_signed(key_der=key_der)
        return IdentityLease(cert, PeerId.from_certificate(cert.cert_der), path, slot, fd)
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise


def _parse_key(data: bytes) -> bytes:
    """PKCS#8 DER of a usable key; :class:`certs.CertificateError` otherwise."""
    if len(data) > MAX_KEY_FILE_SIZE:
        raise certs.CertificateError(f"larger than {MAX_KEY_FILE_SIZE} bytes")
    key_der = certs.load_private_key(data)
    certs.load_signing_key(key_der)  # a type TLS 1.3 can sign with
    return key_der


# --------------------------------------------------------------------------- files


class _Busy(Exception):
    """The file is locked by another endpoint."""


class _Unsafe(Exception):
    """The file exists but must not be used (``str`` says why)."""


class _Corrupt(Exception):
    """The file is there but holds no usable key (``str`` says why)."""


def _lock(fd: int) -> None:
    if fcntl is None:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _Busy() from None
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            raise _Busy() from None
        raise


def _still_at(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _open_locked(path: Path) -> int | None:
    """``path``'s fd, locked, still at ``path``; None if there is no file.

    Raises :class:`_Busy`, :class:`_Corrupt` (not a regular file) or OSError
    (e.g. PermissionError: not ours to read)."""
    for _ in range(_RACE_RETRIES):
        try:
            fd = _open_regular(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except _NotRegularFile as exc:
            raise _Corrupt(str(exc)) from None
        try:
            _lock(fd)
            if _still_at(path, fd):
                return fd
        except BaseException:
            os.close(fd)
            raise
        # Set aside or replaced between our open and our lock: once more.
        os.close(fd)
    raise _Busy()  # replaced again and again: someone else is at work on it


def _check_owner_and_mode(path: Path, fd: int, *, fix_mode: bool) -> None:
    st = os.fstat(fd)
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise _Unsafe(f"it is owned by another user (uid {st.st_uid})")
    loose = stat.S_IMODE(st.st_mode) & 0o077
    if not loose or os.name == "nt":
        return
    if not fix_mode:
        raise _Unsafe(
            f"its mode {stat.S_IMODE(st.st_mode):04o} lets group or others read or write "
            f"it; a private key must be 0600 (chmod 600 {path})"
        )
    os.fchmod(fd, 0o600)
    log.warning(
        "identity key %s had mode %04o (open to group or others); set to 0600. "
        "If others may have read it, delete it for a new key (and id)",
        path,
        stat.S_IMODE(st.st_mode),
    )


def _read_key(fd: int) -> bytes:
    """The key in the (locked) file ``fd``; :class:`_Corrupt` if none."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_KEY_FILE_SIZE:
        chunk = os.read(fd, MAX_KEY_FILE_SIZE + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    if not data:
        raise _Corrupt("empty")
    try:
        return _parse_key(data)
    except certs.CertificateError as exc:
        raise _Corrupt(str(exc)) from None


def _publish_new_key(path: Path) -> tuple[int, bytes] | None:
    """A new key at ``path``, created atomically and locked: (fd, key DER);
    None if a file appeared there first. OSError if it cannot be written."""
    key_der = _new_key_der()
    pem = certs.key_to_pem(key_der)
    # mkstemp: O_CREAT | O_EXCL, mode 0600 from the first instant.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        _lock(fd)  # a fresh inode: nobody else can hold it yet
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            os.close(fd)
            return None
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return fd, key_der


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":  # pragma: no cover - a directory cannot be opened there
        return
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --------------------------------------------------------------------------- user's file


def _acquire_user_file(path: Path) -> IdentityLease:
    for _ in range(_RACE_RETRIES):
        try:
            fd = _open_locked(path)
        except _Busy:
            raise IdentityError(
                f"identity key file {path} is in use by another endpoint "
                "(each endpoint alive at once needs its own key)"
            ) from None
        except _Corrupt as exc:
            raise IdentityError(f"identity key file {path} is {exc}; not using it") from None
        except OSError as exc:
            raise IdentityError(f"identity key file {path} cannot be opened: {exc}") from None
        if fd is None:
            if not path.parent.is_dir():
                raise IdentityError(
                    f"identity key file {path} does not exist and cannot be created: "
                    f"its directory {path.parent} does not exist"
                )
            try:
                made = _publish_new_key(path)
            except OSError as exc:
                raise IdentityError(
                    f"identity key file {path} does not exist and cannot be created: {exc}"
                ) from None
            if made is None:
                continue  # another process created it first: use theirs
            fd, key_der = made
            log.info("identity: created a new key in %s", path)
            return _lease(key_der, path, None, fd)
        try:
            _check_owner_and_mode(path, fd, fix_mode=False)
            key_der = _read_key(fd)
            return _lease(key_der, path, None, fd)
        except _Unsafe as exc:
            os.close(fd)
            raise IdentityError(f"identity key file {path} is unsafe: {exc}") from None
        except _Corrupt as exc:
            os.close(fd)
            raise IdentityError(
                f"identity key file {path} holds no usable private key ({exc}); "
                "fix or remove it (it is never overwritten)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
    raise IdentityError(f"identity key file {path} keeps changing; not using it")


# --------------------------------------------------------------------------- the store


def _acquire_from_store(directory: Path) -> IdentityLease:
    try:
        _prepare_store_dir(directory)
    except (OSError, _Unsafe) as exc:
        return _ephemeral_fallback(directory, exc)
    _remove_stale_temps(directory)
    for slot in range(MAX_SLOTS):
        path = directory / slot_file_name(slot)
        try:
            lease = _try_slot(path, slot)
        except OSError as exc:
            return _ephemeral_fallback(directory, exc)
        if lease is not None:
            return lease
    raise IdentityError(
        f"all {MAX_SLOTS} identity slots in {directory} are in use by other endpoints; "
        "set Config.identity (Identity.file(...) for a key of this endpoint's own, "
        "or Identity.ephemeral())"
    )


def _try_slot(path: Path, slot: int) -> IdentityLease | None:
    """The lease on ``slot``; None when it is busy (or unusable: skipped).
    OSError when the directory cannot be written."""
    for _ in range(_RACE_RETRIES):
        try:
            fd = _open_locked(path)
        except _Busy:
            return None
        except PermissionError as exc:
            log.warning("identity key %s cannot be read (%s); skipping slot %d", path, exc, slot)
            return None
        except _Corrupt as exc:
            _set_aside(path, str(exc))
            continue
        if fd is None:
            made = _publish_new_key(path)
            if made is None:
                continue  # another process created it first: try to lock theirs
            fd, key_der = made
            log.info("identity: created a new key in %s (slot %d)", path, slot)
            return _lease(key_der, path, slot, fd)
        try:
            _check_owner_and_mode(path, fd, fix_mode=True)
            key_der = _read_key(fd)
        except _Unsafe as exc:
            os.close(fd)
            log.warning("identity key %s is unusable (%s); skipping slot %d", path, exc, slot)
            return None
        except _Corrupt as exc:
            # Moved aside while we hold its lock; the next round creates anew.
            try:
                _set_aside(path, str(exc))
            finally:
                os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        return _lease(key_der, path, slot, fd)
    log.warning("identity key %s keeps changing; skipping slot %d", path, slot)
    return None


def _prepare_store_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))
    if os.name == "nt":  # pragma: no cover
        return
    if st.st_uid != os.geteuid():
        raise _Unsafe(f"it is owned by another user (uid {st.st_uid})")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(directory, 0o700)
        log.warning(
            "identity store %s had mode %04o; set to 0700",
            directory,
            stat.S_IMODE(st.st_mode),
        )


def _ephemeral_fallback(directory: Path, exc: BaseException) -> IdentityLease:
    log.warning(
        "identity store %s is unusable (%s); using an ephemeral key: this node's id "
        "changes at every start (set Config.identity to keep one)",
        directory,
        exc,
    )
    return _lease(_new_key_der())


def _set_aside(path: Path, reason: str) -> None:
    secs, ns = divmod(time.time_ns(), 10**9)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(secs))}.{ns:09d}Z"
    aside = path.with_name(f"{path.name}{_CORRUPT_MARK}{stamp}")
    try:
        os.replace(path, aside)  # OSError: the directory is not writable
    except FileNotFoundError:
        return  # another process set it aside first
    log.warning(
        "identity key %s is %s; moved to %s and a new key is made: this node's id changes",
        path,
        reason,
        aside.name,
    )
    _prune_corrupt(path.parent)


def _prune_corrupt(directory: Path) -> None:
    with contextlib.suppress(OSError):
        names = sorted(
            (e.name for e in os.scandir(directory) if _CORRUPT_MARK in e.name),
            key=lambda name: name.rpartition(_CORRUPT_MARK)[2],  # timestamps sort by time
        )
        for name in names[:-KEEP_CORRUPT]:
            with contextlib.suppress(OSError):
                os.unlink(directory / name)


def _remove_stale_temps(directory: Path) -> None:
    cutoff = time.time() - STALE_TEMP_AGE
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        for e in it:
            if e.name.startswith(_TMP_PREFIX) and e.name.endswith(_TMP_SUFFIX):
                with contextlib.suppress(OSError):
                    if e.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(e.path)
