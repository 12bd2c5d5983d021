"""qlog files: the directory check at start, and ``QlogFiles``, which writes
each trace the engine hands out (``QlogTrace``) into ``Config.qlog_dir``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..proto.config import ConfigError
from ..proto.qlog import QlogTrace

log = logging.getLogger("quic_p2p.qlog")

#: ``stats()`` keys: traces written, and traces lost to a write error.
WRITTEN = "qlog: traces written"
NOT_WRITTEN = "qlog: traces not written"


def check_qlog_dir(path: str) -> Path:
    """``path`` as a writable directory, created (with its parents) if
    missing; ``ConfigError`` saying why it cannot be one."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"qlog_dir {path!r} exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"qlog_dir {path!r} cannot be created: {exc.strerror}") from None
    # Writing a file needs write and search permission on the directory.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"qlog_dir {path!r} is not writable")
    return directory


class QlogFiles:
    """Writes traces as ``<ODCID>_<client|server>.qlog`` into one directory.

    Each file is written whole under a temporary name and renamed into
    place, so a viewer never sees half a trace. A failed write (disk full,
    directory removed) is counted and logged, once until a write succeeds
    again; it never reaches the endpoint: a trace is a debugging aid."""

    def __init__(self, directory: Path, count: Callable[[str], None]) -> None:
        self.directory = directory
        self._count = count
        self._failing = False

    def write(self, trace: QlogTrace) -> bool:
        """Writes one trace; False (counted, logged) if it could not be."""
        target = self.directory / trace.file_name
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{trace.file_name}.", suffix=".tmp", dir=self.directory
            )
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    # No fsync: the rename makes it whole or absent, and a
                    # debugging trace is not worth a disk flush per connection.
                    json.dump(trace.document(), f, separators=(",", ":"))
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except (OSError, TypeError, ValueError) as exc:
            self._count(NOT_WRITTEN)
            if not self._failing:
                self._failing = True
                log.warning(
                    "qlog: cannot write %s (not logged again until a write succeeds): %s",
                    target,
                    exc,
                )
            return False
        self._failing = False
        self._count(WRITTEN)
        return True
