"""Retry path cost: what an Initial from an unknown peer costs us, per core.

- ``retry``: ``Admission.decide`` on a tokenless Initial — mint a token and
  build the Retry packet (no state kept);
- ``validate``: ``Admission.decide`` on the Initial that echoes that token —
  verify it (then the endpoint accepts);
- ``accept``: what accepting costs without retry — create the server
  ``QuicConnection``, feed it the Initial (TLS ClientHello: key exchange,
  certificate signature) and build its answer (``datagrams_to_send``).

bench/conftest.py gates ``accept / (retry + validate)``: a stateless retry
must be at least 10x cheaper than a full accept (iroh measured ~10x). Uses the
active accelerator (C when built); the token primitives alone, C against its
twin, are in test_bench_tokens.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from aioquic.quic.connection import QuicConnection

from quic_p2p import Config
from quic_p2p.accel import RetryTokens, classify_datagram
from quic_p2p.certfiles import generate_self_signed
from quic_p2p.proto.admission import Accept, Admission, Reply
from quic_p2p.proto.limits import CID_LENGTH
from quic_p2p.proto.tls import client_configuration, server_configuration

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 4433)
NOW = 1_000.0
QUICK = os.environ.get("QUIC_P2P_BENCH_MODE") == "quick"


@pytest.fixture(scope="module")
def initials() -> dict[str, Any]:
    """A real client's first Initial, and its second one carrying our token."""
    cfg = Config(ip="127.0.0.1")
    admission = Admission(
        RetryTokens(random_bytes=os.urandom), random_bytes=os.urandom, cid_length=CID_LENGTH
    )
    client = QuicConnection(configuration=client_configuration(cfg, None))
    client.connect(SERVER, now=NOW)
    first = client.datagrams_to_send(now=NOW)[0][0]
    decision = admission.decide(classify_datagram(first, CID_LENGTH), len(first), CLIENT, NOW)
    assert isinstance(decision, Reply) and decision.what == "retry"
    client.receive_datagram(decision.datagram, SERVER, now=NOW)
    second = client.datagrams_to_send(now=NOW)[0][0]
    return {
        "admission": admission,
        "first": first,
        "second": second,
        "server_cfg": server_configuration(
            cfg, generate_self_signed(), connection_id_length=CID_LENGTH
        ),
    }


@pytest.mark.parametrize("impl", ["retry", "validate", "accept"])
def test_admission(benchmark: Any, initials: dict[str, Any], impl: str) -> None:
    benchmark.group = "retry-path"
    admission: Admission = initials["admission"]
    if impl in ("retry", "validate"):
        data = initials["first" if impl == "retry" else "second"]
        info = classify_datagram(data, CID_LENGTH)
        size = len(data)
        decide = admission.decide

        def run() -> Any:
            return decide(info, size, CLIENT, NOW + 0.001)

        result = benchmark(run)
        if impl == "retry":
            assert isinstance(result, Reply) and result.what == "retry"
        else:
            assert isinstance(result, Accept) and result.retry_source_cid is not None
        return

    data = initials["first"]
    info = classify_datagram(data, CID_LENGTH)
    server_cfg = initials["server_cfg"]

    def accept() -> int:
        quic = QuicConnection(
            configuration=server_cfg, original_destination_connection_id=info.dcid
        )
        quic.receive_datagram(data, CLIENT, now=NOW)
        return len(quic.datagrams_to_send(now=NOW))

    assert benchmark.pedantic(accept, rounds=60 if QUICK else 200, warmup_rounds=3) > 0
