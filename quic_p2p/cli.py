"""The ``quic-p2p`` command line (also ``python -m quic_p2p``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import __version__


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

    from .config import TrustMode
    from .demo import DemoOptions, format_table, run_demo

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quic-p2p", description="Peer-to-peer networking over QUIC."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "selfcheck",
        help="show which hot-path implementation is active and check C and twin agree",
        description="Show which hot-path implementation is active (C or pure Python) and "
        "check that both agree on a fixed workload. Exit code 0 when every check passes.",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
