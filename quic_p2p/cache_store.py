"""The bootstrap cache's file: load, merge-and-save, recover from corruption.

- Location: ``<directory>/bootstrap_cache.bin``; the directory defaults to the
  platform's user cache directory (:func:`default_cache_dir`). The name differs
  from the Rust seed's ``bootstrap_cache`` so a shared directory never makes one
  library discard the other's file.
- Saving is read-merge-write under an advisory lock (``bootstrap_cache.lock``,
  ``fcntl.flock``; waited for at most :data:`LOCK_TIMEOUT` seconds, then the
  save goes on unlocked), so several processes sharing the directory lose no
  entries. The write is atomic: a temp file in the same directory, fsync,
  ``os.replace``, fsync of the directory. A process killed at any point leaves
  the old file or the new one, never a mix; its temp file is deleted by a later
  load or save once it is :data:`STALE_TEMP_AGE` seconds old.
- A corrupt, truncated, foreign or unknown-version file is renamed
  ``bootstrap_cache.bin.corrupt-<UTC timestamp>`` (the newest
  :data:`KEEP_CORRUPT` are kept) with a warning; the cache starts empty. A
  version-1 file (keyed by address) is read and migrated, not set aside; the
  next save writes version 2.
- Only regular files are used. A FIFO, symlink, directory or device in place
  of the cache file is set aside like a corrupt file (a FIFO would block the
  open, and with it the event loop, forever; a symlink would be read or written
  through); one in place of the lock file is left alone and saves go on
  unlocked, with a warning. Files are opened with ``O_NOFOLLOW | O_NONBLOCK``
  and checked with ``fstat`` before any read.
- Unwritable directory (or a path that is a file): one warning, then the cache
  lives in memory only; every later save still tries, and a success logs that
  the cache is persisted again.

These calls block on file I/O (an fsync is milliseconds on most disks).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .proto.bootstrap_cache import (
    MAX_FILE_SIZE,
    BootstrapCache,
    CacheFormatError,
    CacheState,
    decode_state,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, writes stay atomic
    fcntl = None  # type: ignore[assignment]

__all__ = ["FILE_NAME", "CacheStore", "default_cache_dir"]

log = logging.getLogger(__name__)

FILE_NAME = "bootstrap_cache.bin"
LOCK_NAME = "bootstrap_cache.lock"
LOCK_TIMEOUT = 5.0
#: A temp file older than this belongs to a dead writer (live ones exist for
#: milliseconds; the age keeps a writer that went on unlocked safe).
STALE_TEMP_AGE = 30.0
KEEP_CORRUPT = 5
_TMP_PREFIX = ".bootstrap_cache."
_TMP_SUFFIX = ".tmp"
_CORRUPT_MARK = ".corrupt-"
# Not on Windows (no FIFOs or symlink games there that these would stop).
_SAFE_OPEN = (
    getattr(os, "O_NOFOLLOW", 0)  # a symlink fails with ELOOP instead of being followed
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once instead of waiting for a writer
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class _NotRegularFile(OSError):
    """The path exists but is not a regular file (``kind`` says what it is)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file ({kind})")
        self.kind = kind


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def _open_regular(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink, never blocks, and returns only
    a regular file's fd; anything else raises :class:`_NotRegularFile`."""
    try:
        # lstat first so that a device is never opened at all (opening some
        # has side effects); the fstat below is what closes the race.
        st = os.lstat(path)
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
    else:
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegularFile(_kind(st.st_mode))
    try:
        fd = os.open(path, flags | _SAFE_OPEN, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since the lstat
            raise _NotRegularFile("a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegularFile(_kind(st.st_mode))
        if flags & os.O_ACCMODE == os.O_RDONLY:
            # Back to blocking reads: a regular file never waits, and buffered
            # reads must not see EAGAIN.
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def default_cache_dir() -> Path:
    """The platform's user cache directory for quic-p2p (stdlib only):
    ``$XDG_CACHE_HOME/quic-p2p`` or ``~/.cache/quic-p2p`` on Linux and other
    POSIX, ``~/Library/Caches/quic-p2p`` on macOS,
    ``%LOCALAPPDATA%/quic-p2p/Cache`` on Windows."""
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "quic-p2p" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "quic-p2p"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative path is invalid and must be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "quic-p2p"


class CacheStore:
    """The cache file in ``directory`` (None: :func:`default_cache_dir`).

    ``writable`` is False while saves fail (the cache is then in memory only).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.directory / FILE_NAME
        self.writable = True
        self._stuck: _LockWaiter | None = None
        self._lock_refused = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, permissions, read-only fs
            self._failed(exc)

    def load(self) -> CacheState:
        """The file's entries and tombstones; empty when the file is missing,
        unreadable or corrupt (then moved aside). Never raises for file trouble."""
        with self._locked() as locked:
            if locked:
                self._remove_stale_temps()
            try:
                return self._read(locked)
            except OSError as exc:
                log.warning("cannot read bootstrap cache %s (%s); starting empty", self.path, exc)
                return CacheState()

    def save(self, cache: BootstrapCache, *, merge: bool = True) -> bool:
        """Persist ``cache``: merge it with the file (unless ``merge`` is False,
        which replaces the file's content), then write atomically. The merge
        result is also applied to ``cache``. False when the write failed (the
        cache stays in memory; see the module docstring)."""
        try:
            with self._locked() as locked:
                if locked:
                    self._remove_stale_temps()
                if merge:
                    cache.merge(self._read(locked))
                self._write(cache.encode())
        except OSError as exc:
            self._failed(exc)
            return False
        if not self.writable:
            log.info("bootstrap cache %s is writable again", self.path)
            self.writable = True
        return True

    # ------------------------------------------------------------ internals
    def _failed(self, exc: OSError) -> None:
        if self.writable:
            log.warning(
                "cannot write the bootstrap cache in %s (%s): keeping it in memory only",
                self.directory,
                exc,
            )
        else:
            log.debug("bootstrap cache still unwritable: %s", exc)
        self.writable = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        """Hold the directory's advisory lock; yields whether it is held.
        Without it (no fcntl, read-only directory, timeout) work goes on
        unlocked: writes stay atomic, only a concurrent merge may be lost."""
        fd = -1
        if fcntl is not None:
            try:
                fd = _open_regular(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT)
            except _NotRegularFile as exc:
                # Not ours to move: another process may be using it. Say so
                # once; every save still works, unlocked.
                if not self._lock_refused:
                    log.warning(
                        "bootstrap cache lock %s is %s; saving unlocked",
                        self.directory / LOCK_NAME,
                        exc,
                    )
                self._lock_refused = True
            except OSError:  # read-only dir: readers need no lock
                pass
        locked = False
        try:
            locked = fd >= 0 and self._acquire(fd)
            yield locked
        finally:
            if fd >= 0:
                if locked:
                    # Explicitly: a copy of the fd forked into a child (by another
                    # thread) would otherwise keep the lock held after our close.
                    with contextlib.suppress(OSError):
                        fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _acquire(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        except OSError as exc:  # e.g. ENOLCK on some network filesystems
            log.debug("bootstrap cache lock unavailable: %s", exc)
            return False
        if self._stuck is not None and not self._stuck.done():
            return False  # the holder is still stuck since the last timeout
        # Busy: wait in the kernel's queue, which is fair (polling loses to a
        # holder that re-locks at once), on a helper thread so that a stopped
        # holder cannot hang us beyond LOCK_TIMEOUT.
        waiter = _LockWaiter(os.dup(fd))
        if waiter.wait(LOCK_TIMEOUT):
            return True
        self._stuck = waiter
        log.warning("bootstrap cache lock busy for %.1f s; saving unlocked", LOCK_TIMEOUT)
        return False

    def _read(self, locked: bool) -> CacheState:
        try:
            fd = _open_regular(self.path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return CacheState()
        except _NotRegularFile as exc:
            self._move_aside(str(exc), locked)
            return CacheState()
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
        try:
            return decode_state(data)
        except CacheFormatError as exc:
            self._move_aside(f"unusable ({exc})", locked)
            return CacheState()

    def _move_aside(self, reason: str, locked: bool) -> None:
        secs, ns = divmod(time.time_ns(), 10**9)
        stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(secs))}.{ns:09d}Z"
        aside = self.path.with_name(f"{FILE_NAME}{_CORRUPT_MARK}{stamp}")
        try:
            os.replace(self.path, aside)
        except OSError as err:
            log.warning(
                "bootstrap cache %s is %s and cannot be moved aside (%s); starting empty",
                self.path,
                reason,
                err,
            )
            return
        log.warning(
            "bootstrap cache %s is %s; moved to %s, starting empty",
            self.path,
            reason,
            aside.name,
        )
        if locked:
            self._prune_corrupt()

    def _prune_corrupt(self) -> None:
        with contextlib.suppress(OSError):
            names = sorted(
                e.name for e in os.scandir(self.directory) if _CORRUPT_MARK in e.name
            )  # the timestamp format sorts chronologically
            for name in names[:-KEEP_CORRUPT]:
                with contextlib.suppress(OSError):  # e.g. a directory set aside
                    os.unlink(self.directory / name)

    def _remove_stale_temps(self) -> None:
        # Temp files of writers that died between creating and renaming them.
        cutoff = time.time() - STALE_TEMP_AGE
        with contextlib.suppress(OSError), os.scandir(self.directory) as it:
            for e in it:
                if e.name.startswith(_TMP_PREFIX) and e.name.endswith(_TMP_SUFFIX):
                    with contextlib.suppress(OSError):
                        if e.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(e.path)

    def _write(self, data: bytes) -> None:
        # mkstemp opens with O_CREAT | O_EXCL | O_NOFOLLOW: a fresh regular
        # file, never a link's target; os.replace then replaces whatever is at
        # the path (a symlink itself, not its target).
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        # Makes the rename itself durable; Windows cannot open a directory.
        if os.name == "nt":  # pragma: no cover
            return
        dfd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class _LockWaiter:
    """Blocks in ``flock`` on its own thread, on a dup of the lock fd (the lock
    belongs to the shared open file, so the caller's fd then holds it). If the
    caller gave up, the lock is released as soon as it is granted."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._mutex = threading.Lock()
        self._granted = threading.Event()
        self._ok = False
        self._abandoned = False
        threading.Thread(target=self._run, name="quic-p2p-cache-lock", daemon=True).start()

    def _run(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            ok = True
        except OSError:
            ok = False
        with self._mutex:
            # The dup is closed before the caller goes on, so that a fork
            # cannot copy it into a child that would then pin the lock.
            try:
                if self._abandoned and ok:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
            self._ok = ok
            self._granted.set()

    def done(self) -> bool:
        return self._granted.is_set()

    def wait(self, timeout: float) -> bool:
        """True once the lock is held; False (and abandoned) after ``timeout``."""
        self._granted.wait(timeout)
        with self._mutex:
            if not self._granted.is_set():
                self._abandoned = True
                return False
            return self._ok
