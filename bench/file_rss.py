"""Peak RSS growth of a large file transfer, in a process of its own.

    python bench/file_rss.py BYTES DIR

Writes a BYTES-long file in DIR, starts a receiver and a sender on loopback
and moves the file with examples/file_transfer.py's own ``send_file`` and
``receiver_for`` (1 MiB reads and writes, ``drain()`` between), then checks
the copy's SHA-256. The peak RSS is reset (``/proc/self/clear_refs``) once
both endpoints are connected, so the growth printed is the transfer's alone.
Prints ``key=value`` lines: rss_growth_mib, baseline_mib, peak_mib, seconds,
mib_per_s. Exit status 1 if the copy differs. Linux only (reads /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from file_transfer import PROTOCOL, receiver_for, send_file, sha256_of

from quic_p2p import Config, QuicP2p

MIB = 1024 * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Resets the peak RSS (VmHWM) to the current one (Linux >= 4.0); where
    that is refused the peak stays the process's, an overestimate."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


_QUIET = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)


def _write_file(path: Path, size: int) -> None:
    block = hashlib.sha256(b"seed").digest() * (MIB // 32)  # 1 MiB, not all zeros
    with path.open("wb") as f:
        for offset in range(0, size, MIB):
            f.write(block[: size - offset])


async def main(size: int, where: Path) -> int:
    source, copy = where / "source", where / "copy"
    _write_file(source, size)
    async with (
        QuicP2p(Config(ip="127.0.0.1")) as receiver,
        QuicP2p(Config(ip="127.0.0.1")) as sender,
    ):
        receiver.set_stream_handler(PROTOCOL, receiver_for(copy, MIB))
        peer = await sender.connect_to(receiver.node_info)
        gc.collect()
        baseline = _status_kib("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(_QUIET):  # (send_file draws a progress bar)
            sent, digest = await send_file(sender, peer, source, MIB)
        took = time.perf_counter() - t0
        peak = _status_kib("VmHWM")
    ok = sent == size and digest == sha256_of(source, MIB) == sha256_of(copy, MIB)
    print(f"rss_growth_mib={(peak - baseline) / 1024:.2f}")
    print(f"baseline_mib={baseline / 1024:.2f}")
    print(f"peak_mib={peak / 1024:.2f}")
    print(f"seconds={took:.3f}")
    print(f"mib_per_s={size / MIB / took:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]))))
