"""``quic-p2p node`` and ``quic-p2p echo``: one endpoint on the command line.

``node`` prints our contact info (one JSON line), optionally bootstraps or
connects to contacts, logs events, and sends each line typed on stdin to every
connected peer: a small chat. It runs until SIGINT/SIGTERM (or stdin ends, with
``--exit-on-eof``) and shuts down cleanly. Without ``--exit-on-eof`` the end of
stdin (``/dev/null``, a closed fd 0, a file read to its end) only means there is
nothing more to send.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from .aio import QuicP2p
from .errors import QuicP2pError
from .events import (
    BootstrappedTo,
    ConnectedTo,
    ConnectionFailure,
    Event,
    Finish,
    NewMessage,
    PeerAddressChanged,
    UnsentUserMessage,
    UpgradedToDirect,
)
from .peer import InvalidContactError, NodeInfo, PeerId, format_address, parse_address
from .proto.certs import load_certificate, load_certificates, load_complete_cert
from .proto.config import CompleteCert, Config, ConfigError, OurType, RelayPolicy, TrustMode

#: Messages longer than this are reported by size instead of printed.
PRINT_LIMIT = 512


class CliError(QuicP2pError):
    """A user mistake or an unusable input: printed as one line, exit code 1."""


def parse_contacts(text: str) -> list[NodeInfo]:
    """One ``--contact``: ``HOST:PORT``, ``PEER_ID@HOST:PORT`` (the node must
    prove that id), ``HOST:PORT@CERTFILE`` (PEM or DER: that certificate
    exactly), the JSON object a node prints about itself, a JSON list of such objects (what
    ``quic-p2p cache export`` writes), or ``@FILE`` holding either JSON."""
    text = text.strip()
    where = "contact"
    if text.startswith("@"):
        where = f"contact file {text[1:]!r}"
        text = _read(Path(text[1:]), "contact file").decode("utf-8", "replace").strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise CliError(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(items, list) or not items:
            raise CliError(f"{where} holds no contacts")
        try:
            return [NodeInfo.from_dict(d) for d in items]
        except (InvalidContactError, TypeError, AttributeError, KeyError) as exc:
            raise CliError(f"{where}: not a list of node contacts ({exc})") from None
    if text.startswith("{"):
        return [NodeInfo.from_json(text)]
    left, sep, right = text.partition("@")
    if sep and ":" not in left:  # an id has no ':', an address always has one
        return [NodeInfo(parse_address(right), peer_id=PeerId.parse(left))]
    cert = load_certificate(_read(Path(right), "certificate")) if sep else b""
    return [NodeInfo(parse_address(left), cert)]


def parse_contact(text: str) -> NodeInfo:
    """The first contact of :func:`parse_contacts` (kept for callers wanting one)."""
    return parse_contacts(text)[0]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None


def add_config_arguments(p: argparse.ArgumentParser, *, default_ip: str) -> None:
    """Options mirroring ``Config``."""
    g = p.add_argument_group("endpoint configuration (mirrors Config)")
    g.add_argument("--ip", default=default_ip, help=f"IP to bind (default {default_ip})")
    g.add_argument("--port", type=int, default=0, help="UDP port to bind (default: any)")
    g.add_argument("--type", choices=["node", "client"], default="node", help="our role")
    g.add_argument(
        "--contact",
        action="append",
        default=[],
        metavar="CONTACT",
        help="hard-coded contact: HOST:PORT, HOST:PORT@CERTFILE, node JSON, or @JSONFILE "
        "holding one node's JSON or a list of them, as `cache export` writes (repeatable)",
    )
    g.add_argument("--cert", help="our certificate (PEM or DER); default: a fresh self-signed one")
    g.add_argument("--key", help="the private key of --cert (PEM or DER)")
    g.add_argument(
        "--trust-mode",
        choices=[m.value for m in TrustMode],
        default=TrustMode.UNVERIFIED.value,
        help="how peers' certificates are checked (default unverified)",
    )
    g.add_argument("--ca", action="append", default=[], help="CA certificate file (repeatable)")
    g.add_argument("--server-name", help="CA modes: the name every peer's certificate must carry")
    g.add_argument("--max-msg-size", type=int, help="largest accepted message (bytes)")
    g.add_argument("--idle-timeout-msec", type=int, help="QUIC idle timeout (0 disables)")
    g.add_argument("--keep-alive-interval-msec", type=int, help="keep-alive PINGs (0 disables)")
    g.add_argument("--cache-dir", help="bootstrap cache directory (default: user cache dir)")
    g.add_argument(
        "--qlog-dir",
        metavar="DIR",
        help="write each connection's qlog trace here, <ODCID>_<client|server>.qlog (for qvis)",
    )


def _our_cert(args: argparse.Namespace) -> CompleteCert | None:
    if not (args.cert or args.key):
        return None
    if not (args.cert and args.key):
        raise CliError("--cert and --key go together")
    return load_complete_cert(_read(Path(args.cert), "certificate"), _read(Path(args.key), "key"))


#: ``Config``/``RelayPolicy`` field names in their errors, as the flags the user typed.
_FLAGS = {
    "max_msg_size_allowed": "--max-msg-size",
    "idle_timeout_msec": "--idle-timeout-msec",
    "keep_alive_interval_msec": "--keep-alive-interval-msec",
    "port": "--port",
    "qlog_dir": "--qlog-dir",
    "ip": "--ip",
    "our_type": "--type",
    "trust_mode PRIVATE_CA": "--trust-mode private-ca",
    "ca_certs_der": "--ca",
    "our_complete_cert": "--cert/--key",
    "max_sessions_per_peer": "--relay-max-per-peer",
    "max_sessions": "--relay-max-sessions",
    "max_bytes": "--relay-max-mb",
    "max_seconds": "--relay-max-seconds",
}
_FIELD_RE = re.compile(r"\b(" + "|".join(re.escape(k) for k in _FLAGS) + r")\b")


def flag_error(exc: ConfigError) -> CliError:
    """``exc`` reworded for the command line: a user typed flags, not fields.
    (Values stay as Config saw them; only --relay-max-mb is scaled, and its
    range is checked by argparse before Config sees it.)"""
    text = _FIELD_RE.sub(lambda m: _FLAGS[m.group(1)], str(exc))
    text = text.replace("the network's CA in --ca", "the network's CA (--ca)")
    return CliError(text)


@contextlib.contextmanager
def _flag_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        raise flag_error(exc) from None


def config_from_args(args: argparse.Namespace) -> Config:
    contacts = tuple(c for text in args.contact for c in parse_contacts(text))
    our_cert = _our_cert(args)
    cas: list[bytes] = []
    for path in args.ca:
        cas.extend(load_certificates(_read(Path(path), "CA certificate")))
    with _flag_errors():
        return _config(args, contacts, our_cert, cas)


def _config(
    args: argparse.Namespace,
    contacts: tuple[NodeInfo, ...],
    our_cert: CompleteCert | None,
    cas: list[bytes],
) -> Config:
    optional = {
        "max_msg_size_allowed": args.max_msg_size,
        "idle_timeout_msec": args.idle_timeout_msec,
        "keep_alive_interval_msec": args.keep_alive_interval_msec,
    }
    return Config(
        hard_coded_contacts=contacts,
        ip=args.ip,
        port=args.port,
        our_type=OurType.parse(args.type),
        our_complete_cert=our_cert,
        trust_mode=TrustMode(args.trust_mode),
        ca_certs_der=tuple(cas),
        tls_server_name=args.server_name,
        bootstrap_cache_dir=args.cache_dir,
        qlog_dir=args.qlog_dir,
        **{k: v for k, v in optional.items() if v is not None},
    )


def _describe(event: Event) -> str | None:
    if isinstance(event, NewMessage):
        if len(event.msg) > PRINT_LIMIT:
            return f"[{format_address(event.peer_addr)}] received {len(event.msg)} bytes"
        return f"[{format_address(event.peer_addr)}] {event.msg.decode('utf-8', 'replace')}"
    if isinstance(event, ConnectedTo):
        line = f"connected to {event.peer.kind.value} {format_address(event.peer.peer_addr)}"
        if event.peer_id is not None:
            line += f" (id {event.peer_id.short()})"
        if event.relay is not None:
            line += f" (relayed via {format_address(event.relay)})"
        return line
    if isinstance(event, PeerAddressChanged):
        return (
            f"peer {event.peer_id.short()} moved from {format_address(event.old)} "
            f"to {format_address(event.new)}"
        )
    if isinstance(event, UpgradedToDirect):
        return (
            f"{format_address(event.peer_addr)} is now reached directly "
            f"(was relayed via {format_address(event.relay)})"
        )
    if isinstance(event, BootstrappedTo):
        return f"bootstrapped to {format_address(event.node.peer_addr)}"
    if isinstance(event, ConnectionFailure):
        return f"connection with {format_address(event.peer_addr)} failed: {event.error}"
    if isinstance(event, UnsentUserMessage):  # a send's outcome (see _chat)
        return f"not delivered to {format_address(event.peer_addr)}: {event.reason}"
    # SentUserMessage and Finish are not worth a line. BootstrapFailure is only
    # caused by run_node's own bootstrap() call, whose failure it reports with
    # the reason: one report, not two.
    return None


async def run_node(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    relay = None
    if args.relay:
        with _flag_errors():
            relay = RelayPolicy(
                max_sessions=args.relay_max_sessions,
                max_sessions_per_peer=args.relay_max_per_peer,
                max_bytes=args.relay_max_mb * 2**20,
                max_seconds=float(args.relay_max_seconds),
            )
    if args.metrics_per_peer and args.metrics is None:
        raise CliError("--metrics-per-peer needs --metrics")
    async with QuicP2p(config, relay=relay) as node, _metrics(node, args) as metrics_url:
        if metrics_url is not None:
            print("Metrics:", metrics_url, flush=True)
        info = node.node_info
        if config.bind_ip in ("0.0.0.0", "::") and config.hard_coded_contacts:
            try:
                info = await node.our_connection_info()
            except QuicP2pError as exc:
                print(f"note: could not learn our external address: {exc}", file=sys.stderr)
        print("Our id:", node.peer_id, flush=True)
        print("Our connection info:", json.dumps(info.to_dict()), flush=True)
        tasks = [asyncio.ensure_future(_print_events(node))]
        if args.bootstrap:
            try:
                joined = await node.bootstrap()
                print(f"bootstrapped through {format_address(joined.peer_addr)}", flush=True)
            except QuicP2pError as exc:
                print(f"bootstrap failed: {exc}", file=sys.stderr, flush=True)
        else:
            for contact in config.hard_coded_contacts:
                tasks.append(asyncio.ensure_future(_connect(node, contact)))
        if not args.no_stdin:
            tasks.append(asyncio.ensure_future(_chat(node, stop, args.exit_on_eof)))
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return 0


@contextlib.asynccontextmanager
async def _metrics(node: QuicP2p, args: argparse.Namespace) -> AsyncIterator[str | None]:
    """``--metrics``: the server's URL while it runs (None without the flag)."""
    if args.metrics is None:
        yield None
        return
    try:
        from .metrics import serve_metrics
    except ImportError as exc:
        raise CliError(f"--metrics: {exc}") from None
    host, port = args.metrics
    server = serve_metrics(node, host, port, per_peer=args.metrics_per_peer)
    try:
        yield server.url
    finally:
        server.close()


async def _connect(node: QuicP2p, contact: NodeInfo) -> None:
    with contextlib.suppress(QuicP2pError):  # reported as a ConnectionFailure event
        await node.connect_to(contact)


async def _print_events(node: QuicP2p) -> None:
    async for event in node.events():
        line = _describe(event)
        if line is not None:
            print(line, flush=True)
        if isinstance(event, Finish):
            return


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[bytes | None]:
    """Lines of stdin, then None at its end, read on a daemon thread.

    Not ``connect_read_pipe``: it cannot take ``/dev/null`` (epoll refuses it:
    an asyncio traceback), a regular file, or a closed fd 0, and it leaves a
    terminal non-blocking for the shell. A blocked ``os.read`` on a daemon
    thread never delays exit, and (unlike ``sys.stdin``) holds no buffer lock
    that interpreter shutdown would wait for.
    """
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()
    # Python sets sys.stdin to None when fd 0 was closed at startup; fd 0 may
    # then be any file we opened since (our socket), so it is never read.
    try:
        fd = sys.stdin.fileno() if sys.stdin is not None else -1
    except (OSError, ValueError):  # replaced by an object without a real fd
        fd = -1

    def put(item: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(lines.put_nowait, item)

    def read() -> None:
        buf = b""
        while fd >= 0:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EBADF, EIO (terminal hung up): the end of input
                break
            if not chunk:
                break
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for line in complete:
                put(line)
        if buf:
            put(buf)
        put(None)

    threading.Thread(target=read, name="quic-p2p-stdin", daemon=True).start()
    return lines


async def _chat(node: QuicP2p, stop: asyncio.Event, exit_on_eof: bool) -> None:
    lines = _stdin_lines(asyncio.get_running_loop())
    while True:
        line = await lines.get()
        if line is None:
            if exit_on_eof:
                stop.set()
            return  # nothing more to send; the node runs on until a signal
        text = line.rstrip(b"\r")
        if not text:
            continue
        peers = node.connected_peers()
        if not peers:
            print("no connected peer to send to", file=sys.stderr, flush=True)
        for outcome in await asyncio.gather(*(node.send(p, text) for p in peers)):
            line_out = _describe(outcome)
            if line_out is not None:
                print(line_out, flush=True)


async def run_echo(args: argparse.Namespace) -> int:
    try:
        contacts = parse_contacts(args.contact_to_ask)
    except InvalidContactError as exc:
        raise CliError(str(exc)) from None
    with _flag_errors():
        config = Config(
            ip=args.ip,
            our_type=OurType.CLIENT,
            hard_coded_contacts=contacts,  # a cache export: each asked in turn
            # In the CA modes a Client must present a certificate of the CA.
            our_complete_cert=_our_cert(args),
            trust_mode=TrustMode(args.trust_mode),
            ca_certs_der=tuple(
                c
                for path in args.ca
                for c in load_certificates(_read(Path(path), "CA certificate"))
            ),
        )
    async with QuicP2p(config) as ep:
        info = await ep.our_connection_info()
    print(format_address(info.peer_addr))
    return 0
