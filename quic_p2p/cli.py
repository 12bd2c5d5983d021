"""The ``quic-p2p`` command line (also ``python -m quic_p2p``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import QuicP2pError
from .proto.config import RelayPolicy

#: The loggers aioquic writes to (``aioquic.quic.connection`` and ``.h3``).
AIOQUIC_LOGGERS = ("quic", "http3", "aioquic")


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from .selfcheck import run

    checks = run()
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'PASS' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}")
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from .demo import DemoOptions, format_table, run_demo
    from .proto.config import TrustMode

    options = DemoOptions(
        nodes=args.nodes,
        clients=args.clients,
        messages=args.messages,
        size=args.size,
        trust_mode=TrustMode(args.trust_mode),
    )
    print(
        f"quic-p2p demo: {options.nodes} nodes, {options.clients} clients on 127.0.0.1, "
        f"trust mode {options.trust_mode.value}"
    )
    result = asyncio.run(run_demo(options, say=lambda line: print(line, flush=True)))
    print()
    print(format_table(result.table))
    print()
    for name, ok, detail in result.checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print("\nall checks passed" if result.ok else "\nSOME CHECKS FAILED")
    return 0 if result.ok else 1


def _cmd_node(args: argparse.Namespace) -> int:
    from .cli_node import run_node

    return asyncio.run(run_node(args))


def _cmd_echo(args: argparse.Namespace) -> int:
    from .cli_node import run_echo

    return asyncio.run(run_echo(args))


def _cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    return asyncio.run(doctor.run(args))


def _cmd_certs(args: argparse.Namespace) -> int:
    from . import certfiles
    from .proto import certs

    if args.certs_command == "inspect":
        data = _read_file(args.file)
        described = [certs.describe_certificate(der) for der in certs.load_certificates(data)]
        if args.json:
            print(json.dumps(described, indent=2))
        else:
            for i, d in enumerate(described):
                if i:
                    print()
                for key, value in d.items():
                    shown = ", ".join(value) if isinstance(value, list) else value
                    print(f"{key:<13}{shown}")
        return 0
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.certs_command == "create-ca":
        made = certfiles.create_ca(args.name, valid_days=args.days)
    elif args.certs_command == "self-signed":
        made = certfiles.generate_self_signed(args.name, valid_days=args.days)
    else:  # issue
        ca = certs.load_complete_cert(_read_file(args.ca_cert), _read_file(args.ca_key))
        made = certfiles.issue_certificate(
            ca, args.name, dns_names=args.dns, ip_addresses=args.ip, valid_days=args.days
        )
    stem = args.file_stem or file_stem(args.name)
    cert_path, key_path = out / f"{stem}.pem", out / f"{stem}.key"
    chain = b"".join(certs.to_pem(d) for d in (made.cert_der, *made.chain_der))
    certfiles.write_certificate_file(cert_path, chain, overwrite=args.force)
    certfiles.write_private_key_file(key_path, certs.key_to_pem(made.key_der), overwrite=args.force)
    print(f"certificate: {cert_path}")
    print(f"private key: {key_path} (mode 0600)")
    print(f"sha256:      {certs.fingerprint(made.cert_der).hex()}")
    return 0


def file_stem(name: str) -> str:
    """The default file name (without extension) for a certificate named
    ``name``: every character other than a letter, digit, '.', '_' or '-'
    becomes '-', so that a name with spaces or a '/' stays one file in
    --out-dir."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", name)
    return "cert" if stem.strip(".") == "" else stem


def _cmd_cache(args: argparse.Namespace) -> int:
    from .cache_store import CacheStore
    from .proto.bootstrap_cache import BootstrapCache

    store = CacheStore(args.cache_dir)
    cache = BootstrapCache(random_bytes=os.urandom)
    cache.merge(store.load())
    if args.cache_command == "clear":
        removed = len(cache)
        cache.clear()
        if not store.save(cache, merge=False):
            raise QuicP2pError(f"cannot write {store.path}")
        print(f"cleared {removed} entries from {store.path}")
    elif args.cache_command == "export":
        text = json.dumps([e.info.to_dict() for e in cache.entries()], indent=2)
        if args.output:
            Path(args.output).write_text(text + "\n")
            print(f"exported {len(cache)} entries to {args.output}")
        else:
            print(text)
    else:  # show
        from .peer import format_address

        print(f"{store.path}: {len(cache)} entries, most recently connected first")
        for e in cache.entries():
            fails = f"  ({e.failures} failed attempts)" if e.failures else ""
            where = ", ".join(format_address(a) for a in e.info.addresses)
            print(f"  {e.info.peer_id}  {where}{fails}")
    return 0


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise QuicP2pError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def _positive(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IP address; ``[::1]:PORT`` for IPv6) for a server of ours."""
    from .peer import InvalidContactError, parse_address

    try:
        return parse_address(text)
    except InvalidContactError as exc:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT ({exc})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quic-p2p", description="Peer-to-peer networking over QUIC."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "selfcheck",
        help="show which hot-path implementation is active and check C and twin agree",
        description="Show which hot-path implementation is active (C or the pure-Python "
        "twin, and why) and check that both agree on a fixed workload. The twin is "
        "supported: with it active (QUIC_P2P_NO_EXTENSIONS=1, or the C module not built) "
        "the workloads run on it alone. Exit code 1 only when an implementation fails or "
        "C and twin disagree.",
    )
    p.set_defaults(func=_cmd_selfcheck)

    d = sub.add_parser(
        "demo",
        help="run a local demo network on loopback and check it end to end",
        description="Start nodes and clients on 127.0.0.1, bootstrap them through one "
        "another, connect the nodes in a full mesh, exchange messages, and print a summary. "
        "Exit code 0 only if every check passed.",
    )
    d.add_argument("--nodes", type=_positive(2), default=5, help="number of nodes (default 5)")
    d.add_argument("--clients", type=_positive(0), default=2, help="number of clients (default 2)")
    d.add_argument(
        "--messages", type=_positive(1), default=10, help="messages per pair (default 10)"
    )
    d.add_argument("--size", type=_positive(0), default=1024, help="message size in bytes")
    d.add_argument(
        "--trust-mode",
        choices=["unverified", "private-ca"],
        default="unverified",
        help="certificate checks (private-ca creates a CA for the run)",
    )
    d.set_defaults(func=_cmd_demo)

    from .cli_node import add_config_arguments

    n = sub.add_parser(
        "node",
        help="run one node or client: print its contact info, log events, chat on stdin",
        description="Run one endpoint. It prints its contact info as a JSON line (give it to "
        "others as --contact), connects to the contacts (or bootstraps with --bootstrap), "
        "logs events, and sends every line typed on stdin to all connected peers. "
        "Stops on Ctrl-C / SIGTERM.",
    )
    add_config_arguments(n, default_ip="0.0.0.0")
    n.add_argument("--bootstrap", action="store_true", help="bootstrap instead of connecting")
    r = n.add_argument_group("relaying for Nodes that cannot punch through their NATs")
    r.add_argument("--relay", action="store_true", help="offer to relay (off by default)")
    r.add_argument(
        "--relay-max-sessions",
        type=_positive(1),
        default=RelayPolicy.max_sessions,
        metavar="N",
        help="sessions relayed at once",
    )
    r.add_argument(
        "--relay-max-per-peer",
        type=_positive(1),
        default=RelayPolicy.max_sessions_per_peer,
        metavar="N",
        help="sessions at once for any one node",
    )
    r.add_argument(
        "--relay-max-mb",
        type=_positive(1),
        default=RelayPolicy.max_bytes // 2**20,
        metavar="MB",
        help="bytes per session, both ways (MiB)",
    )
    r.add_argument(
        "--relay-max-seconds",
        type=_positive(1),
        default=int(RelayPolicy.max_seconds),
        metavar="S",
        help="lifetime of a session",
    )
    m = n.add_argument_group("seeing what happens")
    m.add_argument(
        "--metrics",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (the metrics extra; "
        "port 0: any, printed)",
    )
    m.add_argument(
        "--metrics-per-peer",
        action="store_true",
        help="with --metrics: series per connected peer too (label peer_id)",
    )
    n.add_argument("--no-stdin", action="store_true", help="do not read stdin (a server)")
    n.add_argument("--exit-on-eof", action="store_true", help="stop when stdin ends")
    n.set_defaults(func=_cmd_node)

    e = sub.add_parser(
        "echo",
        help="ask a running node which address it sees for us",
        description="Connect to CONTACT and print our address as it sees us.",
    )
    e.add_argument(
        "contact_to_ask",
        metavar="CONTACT",
        help="HOST:PORT, HOST:PORT@CERTFILE, node JSON or @JSONFILE (one node's JSON, or a "
        "list as `cache export` writes: each is asked in turn)",
    )
    e.add_argument("--ip", default="0.0.0.0", help="IP to bind (default 0.0.0.0)")
    e.add_argument(
        "--trust-mode", choices=["public-ca", "private-ca", "unverified"], default="unverified"
    )
    e.add_argument("--ca", action="append", default=[], help="CA certificate file")
    e.add_argument(
        "--cert", help="our certificate (PEM or DER); needed in the CA modes (issued by the CA)"
    )
    e.add_argument("--key", help="the private key of --cert (PEM or DER)")
    e.set_defaults(func=_cmd_echo)

    from . import doctor

    dr = sub.add_parser(
        "doctor",
        help="check this machine and network for running a node: a verdict per line",
        description="Check what a node here depends on: the C accelerator, UDP buffer sizes, "
        "IPv4/IPv6, our address as each CONTACT sees it and the NAT's mapping, reachability "
        "from a fresh socket, the clock and the trust configuration. Takes the options of "
        "`quic-p2p node`. Exit code 0 when nothing FAILs, 1 when something does, 2 for bad "
        "arguments.",
    )
    doctor.add_arguments(dr)
    dr.set_defaults(func=_cmd_doctor)

    c = sub.add_parser(
        "certs",
        help="create a private CA, issue node certificates, inspect",
        description="Certificates for the three trust modes. Keys are written "
        "with mode 0600; existing files are kept unless --force.",
    )
    csub = c.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    for name, what in (
        ("create-ca", "a private CA for your network"),
        ("self-signed", "a self-signed node certificate"),
        ("issue", "a node certificate signed by your CA"),
    ):
        cp = csub.add_parser(name, help=f"create {what}", description=f"Create {what}.")
        cp.add_argument("--name", required=True, help="common name")
        cp.add_argument(
            "--out-dir",
            default=".",
            help="where to write STEM.pem (the certificate) and STEM.key (its key); "
            "both paths are printed",
        )
        cp.add_argument(
            "--file-stem",
            metavar="STEM",
            help="file name without extension (default: NAME with every character other "
            "than letters, digits, '.', '_' and '-' replaced by '-': "
            "'My Net CA' writes My-Net-CA.pem)",
        )
        cp.add_argument("--days", type=_positive(1), default=825 if name == "issue" else 3650)
        cp.add_argument("--force", action="store_true", help="overwrite existing files")
        if name == "issue":
            cp.add_argument("--ca-cert", required=True, help="the CA certificate (PEM/DER)")
            cp.add_argument("--ca-key", required=True, help="the CA private key (PEM/DER)")
            cp.add_argument("--dns", action="append", default=[], help="DNS name (repeatable)")
            cp.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")
        cp.set_defaults(func=_cmd_certs)
    ip = csub.add_parser(
        "inspect",
        help="describe a certificate file",
        description="Describe every certificate in a PEM or DER file.",
    )
    ip.add_argument("file")
    ip.add_argument("--json", action="store_true", help="JSON output")
    ip.set_defaults(func=_cmd_certs)

    k = sub.add_parser(
        "cache",
        help="show, export or clear the bootstrap cache",
        description="The bootstrap cache: nodes to re-join through.",
    )
    ksub = k.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    for name, what in (
        ("show", "list the cached nodes"),
        ("export", "write the cached nodes as JSON contacts"),
        ("clear", "remove every cached node"),
    ):
        kp = ksub.add_parser(name, help=what, description=what.capitalize() + ".")
        kp.add_argument("--cache-dir", help="cache directory (default: user cache dir)")
        if name == "export":
            kp.add_argument("-o", "--output", help="file to write (default: stdout)")
        kp.set_defaults(func=_cmd_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # aioquic logs every failed handshake or closed connection at WARNING
        # ("quic") on its own; our error line already says what failed. -v
        # shows them, at DEBUG, with ours.
        for name in AIOQUIC_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except (QuicP2pError, OSError) as exc:
        # A user mistake or an unreachable peer: one line, no traceback
        # (-v shows the details in the debug log).
        logging.getLogger(__name__).debug("command failed", exc_info=True)
        print(f"quic-p2p: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
