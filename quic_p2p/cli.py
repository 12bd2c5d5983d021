"""The ``quic-p2p`` command line (also ``python -m quic_p2p``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
