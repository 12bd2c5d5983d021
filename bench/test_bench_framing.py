"""Hot path 1: message framing and the datagram classifier, C vs twin.

One group per workload; the gate in conftest.py compares the two medians.
Run: .venv/bin/python -m pytest bench/test_bench_framing.py --benchmark-only -q
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from quic_p2p.accel.types import FrameKind, PacketType

pytestmark = pytest.mark.c_extension

_rng = random.Random(1)
#: 256 small messages of 64..1024 bytes, as a busy stream delivers them.
SMALL_FRAMES = [
    (int(FrameKind.USER_MESSAGE), i, _rng.randbytes(_rng.randint(64, 1024))) for i in range(256)
]
#: A 1 MiB message arriving in QUIC-packet-sized (1200-byte) stream chunks.
LARGE_BODY = _rng.randbytes(1 << 20)
CHUNK = 1200
SHORT_CID_LEN = 8


def _client_initial() -> bytes:
    client = QuicConnection(configuration=QuicConfiguration(is_client=True))
    client.connect(("192.0.2.1", 4433), now=0.0)
    datagram: bytes = client.datagrams_to_send(now=0.0)[0][0]
    return datagram


INITIAL = _client_initial()
#: A 1-RTT packet as a peer sends it: short header, our 8-byte CID, payload.
SHORT = bytes([0x43]) + _rng.randbytes(SHORT_CID_LEN) + _rng.randbytes(1100)


def test_frame_decode_batch(benchmark: Any, impl: ModuleType) -> None:
    benchmark.group = "frame-decode-batch"
    data = impl.encode_frames(SMALL_FRAMES)
    decoder = impl.FrameDecoder(1 << 20)
    frames = benchmark(decoder.feed, data)
    assert len(frames) == len(SMALL_FRAMES)
    assert frames[-1].body == SMALL_FRAMES[-1][2]


def test_frame_decode_chunked(benchmark: Any, impl: ModuleType) -> None:
    """Informational: once a header is checked, both decoders only collect body
    chunks with the same Python code (there is nothing for C to scan), so the
    two are equal by construction and the ratio is noise around 1.0."""
    benchmark.group = "info-frame-decode-chunked"
    data = impl.encode_frames([(int(FrameKind.USER_MESSAGE), 1, LARGE_BODY)])
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    decoder = impl.FrameDecoder(1 << 21)

    def run() -> list[Any]:
        out = []
        for chunk in chunks:
            out += decoder.feed(chunk)
        return out

    frames = benchmark(run)
    assert len(frames) == 1
    assert frames[0].body == LARGE_BODY


def test_frame_encode_batch(benchmark: Any, impl: ModuleType) -> None:
    benchmark.group = "frame-encode-batch"
    batch = SMALL_FRAMES[:64]
    data = benchmark(impl.encode_frames, batch)
    assert len(data) == sum(16 + len(b) for _, _, b in batch)


def test_classify_initial(benchmark: Any, impl: ModuleType) -> None:
    benchmark.group = "classify-initial"
    info = benchmark(impl.classify_datagram, INITIAL, SHORT_CID_LEN)
    assert info.packet_type == PacketType.INITIAL


def test_classify_short(benchmark: Any, impl: ModuleType) -> None:
    """Informational: a well-formed short header is a byte test and a slice; one
    cffi crossing costs more (~850 vs ~670 ns), so the C wrapper takes the
    twin's path for it and calls C only for long headers and errors."""
    benchmark.group = "info-classify-short"
    info = benchmark(impl.classify_datagram, SHORT, SHORT_CID_LEN)
    assert info.packet_type == PacketType.ONE_RTT
