"""Send a large file between two nodes with a progress bar, then verify it.

    python examples/file_transfer.py FILE [--chunk-mib 4]

Starts a receiver and a sender on 127.0.0.1 in one process. The file goes in
chunks (each one message: large messages travel on their own streams, so they
never hold up small ones); each chunk counts once the receiver acknowledged it.
The receiver checks the SHA-256 of what it got. Ctrl-C stops it with a short
message and exit code 130.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from pathlib import Path

from quic_p2p import Config, NewMessage, QuicP2p, SentUserMessage


def human(n: float) -> str:
    """Bytes in binary units: 512 B, 3.2 MiB, 1.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """One status line, redrawn in place with a carriage return. Each redraw is
    padded to the widest one so far: a shorter line (a lower rate) leaves no
    stale characters behind (works on any terminal, and in a log file)."""

    def __init__(self, total: int) -> None:
        self.total, self.started, self.width = total, time.perf_counter(), 0

    def show(self, done: int) -> None:
        bar = 40 * done // max(self.total, 1)
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        line = (
            f"[{'#' * bar}{'.' * (40 - bar)}] {human(done)} / {human(self.total)}  {human(rate)}/s"
        )
        self.width = max(self.width, len(line))
        sys.stdout.write("\r" + line.ljust(self.width))
        sys.stdout.flush()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--chunk-mib", type=int, default=4)
    args = parser.parse_args()
    data = args.file.read_bytes()
    chunk = args.chunk_mib * 1024 * 1024

    async with (
        QuicP2p(Config(ip="127.0.0.1")) as receiver,
        QuicP2p(Config(ip="127.0.0.1")) as sender,
    ):
        peer = await sender.connect_to(receiver.node_info)
        got = hashlib.sha256()
        received = 0

        async def receive() -> None:
            nonlocal received
            async for event in receiver.events():
                if isinstance(event, NewMessage):
                    got.update(event.msg)
                    received += len(event.msg)
                    if received == len(data):
                        return

        receiving = asyncio.create_task(receive())
        bar, sent = Progress(len(data)), 0
        bar.show(0)
        # One chunk at a time keeps memory bounded and the order trivial.
        for offset in range(0, len(data), chunk):
            outcome = await sender.send(peer, data[offset : offset + chunk], token=offset)
            if not isinstance(outcome, SentUserMessage):
                print(f"\nchunk at {offset} not delivered: {outcome.reason}")
                return 1
            sent += len(outcome.msg)
            bar.show(sent)
        await asyncio.wait_for(receiving, 30)
        print()
        ok = got.hexdigest() == hashlib.sha256(data).hexdigest()
        print(f"received {received} bytes, sha256 {'verified' if ok else 'MISMATCH'}")
        return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        # asyncio.run cancelled the transfer and closed both endpoints: a
        # short note, not a traceback; 130 is the shell's code for SIGINT.
        print("\ninterrupted: transfer not completed", file=sys.stderr)
        sys.exit(130)
