"""Send a large file between two nodes on one stream, with a progress bar,
in constant memory; resume an interrupted transfer; verify it.

    python examples/file_transfer.py FILE [--out PATH] [--chunk-mib 1]

Starts a receiver and a sender on 127.0.0.1 in one process. The receiver
handles the protocol "example/file/1": it tells the sender how much of the
file it already has (the size of ``--out``, so a second run resumes), takes
the rest, appending to ``--out`` as it arrives, and answers the SHA-256 of
the whole file. The sender reads the file a chunk at a time and waits on
``drain()``, so neither side ever holds more than a few stream windows; the
bar shows the bytes the receiver acknowledged. Without ``--out`` the copy
goes to a temporary file, removed at the end. Ctrl-C stops it with a short
message and exit code 130.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from quic_p2p import Config, Peer, QuicP2p, StreamReader, StreamWriter

PROTOCOL = "example/file/1"


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

    def __init__(self, total: int, start: int = 0) -> None:
        self.total, self.start, self.width = total, start, 0
        self.started = time.perf_counter()

    def show(self, done: int) -> None:
        bar = 40 * done // max(self.total, 1)
        rate = (done - self.start) / max(time.perf_counter() - self.started, 1e-9)
        line = (
            f"[{'#' * bar}{'.' * (40 - bar)}] {human(done)} / {human(self.total)}  {human(rate)}/s"
        )
        self.width = max(self.width, len(line))
        sys.stdout.write("\r" + line.ljust(self.width))
        sys.stdout.flush()


def size_of(path: Path) -> int:
    """The file's size, 0 if it does not exist (a quick, local call)."""
    return path.stat().st_size if path.exists() else 0


def receiver_for(out: Path, chunk: int):  # type: ignore[no-untyped-def]
    """The receiving side's stream handler, writing to ``out``."""

    async def receive(peer: Peer, reader: StreamReader, writer: StreamWriter) -> None:
        have = size_of(out)
        writer.write(have.to_bytes(8, "big"))  # where the sender starts
        with out.open("ab") as f:
            while data := await reader.read(chunk):
                f.write(data)
        digest = hashlib.sha256()
        with out.open("rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        writer.write(digest.digest())
        writer.write_eof()

    return receive


async def send_file(sender: QuicP2p, peer: Peer, path: Path, chunk: int) -> tuple[int, bytes]:
    """Sends what the receiver lacks of ``path``; (bytes sent, its digest)."""
    size = size_of(path)
    reader, writer = await sender.open_stream(peer, PROTOCOL)
    start = int.from_bytes(await reader.readexactly(8), "big")
    if start > size:
        raise SystemExit(f"the receiver already has {start} bytes: more than the file")
    bar = Progress(size, start)
    bar.show(start)
    with path.open("rb") as f:
        f.seek(start)
        while data := f.read(chunk):
            writer.write(data)
            await writer.drain()
            bar.show(start + writer.bytes_acknowledged)
    writer.write_eof()
    digest = await reader.readexactly(32)
    bar.show(start + writer.bytes_acknowledged)
    return size - start, digest


def sha256_of(path: Path, chunk: int) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.digest()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--out", type=Path, help="where the copy goes (resumed if it exists)")
    parser.add_argument("--chunk-mib", type=int, default=1)
    args = parser.parse_args()
    chunk = args.chunk_mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out if args.out is not None else Path(tmp) / "copy"
        async with (
            QuicP2p(Config(ip="127.0.0.1")) as receiver,
            QuicP2p(Config(ip="127.0.0.1")) as sender,
        ):
            receiver.set_stream_handler(PROTOCOL, receiver_for(out, chunk))
            peer = await sender.connect_to(receiver.node_info)
            sent, digest = await send_file(sender, peer, args.file, chunk)
        print()
        ok = digest == sha256_of(args.file, chunk)
        print(f"received {out.stat().st_size} bytes, sha256 {'verified' if ok else 'MISMATCH'}")
        if sent != out.stat().st_size:
            print(f"(resumed: {sent} bytes sent this time)")
        return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        # asyncio.run cancelled the transfer and closed both endpoints: a
        # short note, not a traceback; 130 is the shell's code for SIGINT.
        print("\ninterrupted: transfer not completed", file=sys.stderr)
        sys.exit(130)
