"""qlog: aioquic's event trace of each connection, handed to the driver when
the engine forgets the connection (``Config.qlog_dir``; the driver writes
the files, ``quic_p2p.aio.qlog``).

aioquic logs into ``QuicConfiguration.quic_logger``; its ``QuicFileLogger``
writes ``<odcid>.qlog`` itself, from inside the connection, when the close
ends. The engine does no I/O and a connection may be forgotten without
closing (endpoint shut down, junk Initial), so each connection gets a
logger of its own holding its one trace, and the engine emits the trace as
a ``QlogTrace`` result when it forgets the connection. Nothing of this runs
when ``qlog_dir`` is None: no logger, no configuration copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.logger import QLOG_VERSION, QuicLogger, QuicLoggerTrace

Vantage = Literal["client", "server"]


@dataclass(frozen=True)
class QlogTrace:
    """One connection's trace, for the driver to write (a ``Result``)."""

    #: The connection's original destination connection id, hex: what
    #: aioquic and qvis name a trace by (both sides of a connection share it).
    odcid: str
    #: Our side of the connection.
    vantage: Vantage
    #: aioquic's trace (``QuicLoggerTrace.to_dict()``): JSON-able.
    trace: dict[str, Any]

    @property
    def file_name(self) -> str:
        """``<odcid>_<client|server>.qlog``: two endpoints sharing a
        directory write the two sides of a connection apart."""
        return f"{self.odcid}_{self.vantage}.qlog"

    def document(self) -> dict[str, Any]:
        """The file's JSON: qlog 0.3, one trace, as aioquic's file logger writes."""
        return {"qlog_format": "JSON", "qlog_version": QLOG_VERSION, "traces": [self.trace]}


class ConnectionQlog(QuicLogger):
    """aioquic's in-memory logger for one connection: it holds that
    connection's one trace until the engine takes it (``finish``)."""

    def __init__(self) -> None:
        super().__init__()
        self._trace: QuicLoggerTrace | None = None
        self._vantage: Vantage = "client"
        self._odcid = b""

    def start_trace(self, is_client: bool, odcid: bytes) -> QuicLoggerTrace:
        trace = super().start_trace(is_client, odcid)
        self._trace = trace
        self._vantage = "client" if is_client else "server"
        self._odcid = odcid
        return trace

    def finish(self) -> QlogTrace | None:
        """The trace so far (None if aioquic never started one); the logger
        lets go of it, so a second call returns None."""
        trace, self._trace = self._trace, None
        if trace is None:
            return None
        self._traces.clear()
        return QlogTrace(self._odcid.hex(), self._vantage, trace.to_dict())


def with_logger(configuration: QuicConfiguration) -> tuple[QuicConfiguration, ConnectionQlog]:
    """A copy of ``configuration`` (shared by every incoming connection)
    carrying a logger of its own. Shallow: the certificates and settings
    are shared, read-only, as they are between connections anyway."""
    logger = ConnectionQlog()
    own = copy.copy(configuration)
    own.quic_logger = logger
    return own, logger
