"""Send a large file between two nodes with a progress bar, then verify it.

    python examples/file_transfer.py FILE [--chunk-mib 4]

Starts a receiver and a sender on 127.0.0.1 in one process. The file goes in
chunks (each one message: large messages travel on their own streams, so they
never hold up small ones); each chunk counts once the receiver acknowledged it.
The receiver checks the SHA-256 of what it got.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from pathlib import Path

from quic_p2p import Config, NewMessage, QuicP2p, SentUserMessage


def progress(done: int, total: int, started: float) -> None:
    width = 40
    filled = width * done // max(total, 1)
    rate = done / max(time.perf_counter() - started, 1e-9) / 1e6
    sys.stdout.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} B {rate:.1f} MB/s")
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
        started, sent = time.perf_counter(), 0
        progress(0, len(data), started)
        # One chunk at a time keeps memory bounded and the order trivial.
        for offset in range(0, len(data), chunk):
            outcome = await sender.send(peer, data[offset : offset + chunk], token=offset)
            if not isinstance(outcome, SentUserMessage):
                print(f"\nchunk at {offset} not delivered: {outcome.reason}")
                return 1
            sent += len(outcome.msg)
            progress(sent, len(data), started)
        await asyncio.wait_for(receiving, 30)
        print()
        ok = got.hexdigest() == hashlib.sha256(data).hexdigest()
        print(f"received {received} bytes, sha256 {'verified' if ok else 'MISMATCH'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
