"""quic-p2p: peer-to-peer networking over QUIC.

Nodes prove they are reachable both ways; Clients use one connection; three
TLS trust modes; every ``send`` ends in exactly one outcome (sent or unsent).
"""

from __future__ import annotations

from .aio import QuicP2p
from .aio.streams import StreamReader, StreamWriter
from .errors import (
    BootstrapError,
    ConnectionFailedError,
    DatagramError,
    EchoDisagreementError,
    EchoError,
    EndpointClosedError,
    QuicP2pError,
    RemoteProtocolError,
    RequestError,
    StreamError,
    StreamRefusedError,
    StreamResetError,
)
from .events import (
    BootstrapFailure,
    BootstrappedTo,
    ConnectedTo,
    ConnectionFailure,
    Datagram,
    Event,
    EventQueueWarning,
    Finish,
    NewMessage,
    PathChanged,
    PeerAddressChanged,
    SentUserMessage,
    UnsentUserMessage,
    UpgradedToDirect,
)
from .identity import IdentityError
from .peer import InvalidContactError, NodeInfo, Peer, PeerId, PeerKind, Reachability
from .proto import RelaySessionInfo
from .proto.config import (
    DEFAULT_IDLE_TIMEOUT_MSEC,
    DEFAULT_KEEP_ALIVE_INTERVAL_MSEC,
    DEFAULT_MAX_ALLOWED_MSG_SIZE,
    CompleteCert,
    Config,
    ConfigError,
    Identity,
    OurType,
    RelayPolicy,
    TrustMode,
)
from .reasons import Cause, Reason
from .stats import EndpointStats, EndpointTotals, PathKind, PeerPath, PeerStats

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_IDLE_TIMEOUT_MSEC",
    "DEFAULT_KEEP_ALIVE_INTERVAL_MSEC",
    "DEFAULT_MAX_ALLOWED_MSG_SIZE",
    "BootstrapError",
    "BootstrapFailure",
    "BootstrappedTo",
    "Cause",
    "CompleteCert",
    "Config",
    "ConfigError",
    "ConnectedTo",
    "ConnectionFailedError",
    "ConnectionFailure",
    "Datagram",
    "DatagramError",
    "EchoDisagreementError",
    "EchoError",
    "EndpointClosedError",
    "EndpointStats",
    "EndpointTotals",
    "Event",
    "EventQueueWarning",
    "Finish",
    "Identity",
    "IdentityError",
    "InvalidContactError",
    "NewMessage",
    "NodeInfo",
    "OurType",
    "PathChanged",
    "PathKind",
    "Peer",
    "PeerAddressChanged",
    "PeerId",
    "PeerKind",
    "PeerPath",
    "PeerStats",
    "QuicP2p",
    "QuicP2pError",
    "Reachability",
    "Reason",
    "RelayPolicy",
    "RelaySessionInfo",
    "RemoteProtocolError",
    "RequestError",
    "SentUserMessage",
    "StreamError",
    "StreamReader",
    "StreamRefusedError",
    "StreamResetError",
    "StreamWriter",
    "TrustMode",
    "UnsentUserMessage",
    "UpgradedToDirect",
    "__version__",
]
