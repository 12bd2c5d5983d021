"""Admission of unknown Initials (sans-IO): retry, accept, refuse, the rate policy."""

from __future__ import annotations

import os

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from quic_p2p.accel import RetryTokens, classify_datagram
from quic_p2p.proto.admission import Accept, Admission, Ignore, Reply
from quic_p2p.proto.tls import ALPN

ADDR = ("127.0.0.1", 40000)


def initial(token: bytes = b"") -> bytes:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
    if token:
        cfg.token = token
    quic = QuicConnection(configuration=cfg)
    quic.connect(("127.0.0.1", 4433), now=0.0)
    return quic.datagrams_to_send(now=0.0)[0][0]


def test_tokenless_initial_gets_a_retry_and_its_token_is_accepted() -> None:
    adm = Admission(RetryTokens(b"k" * 32, random_bytes=os.urandom), random_bytes=os.urandom)
    first = initial()
    info = classify_datagram(first, 8)
    decision = adm.decide(info, len(first), ADDR, now=100.0)
    assert isinstance(decision, Reply) and decision.what == "retry"
    # The Retry's token and SCID come back in the client's next Initial.
    retry = classify_datagram(decision.datagram, 8)
    token = decision.datagram[7 + len(retry.dcid) + len(retry.scid) : -16]
    # Same keys, no other state needed: stateless.
    again = Admission(adm.tokens, random_bytes=os.urandom)
    second = initial(token)
    info2 = classify_datagram(second, 8)._replace(dcid=retry.scid)
    accepted = again.decide(info2, len(second), ADDR, now=100.5)
    assert accepted == Accept(original_destination_cid=info.dcid, retry_source_cid=retry.scid)
    # The same token from another address is refused with INVALID_TOKEN.
    refused = again.decide(info2, len(second), ("127.0.0.2", 40000), now=100.5)
    assert isinstance(refused, Reply) and refused.what == "invalid token"


def test_retry_only_above_the_handshake_rate() -> None:
    adm = Admission(
        RetryTokens(random_bytes=os.urandom), random_bytes=os.urandom, retry_above_rate=3
    )
    data = initial()
    info = classify_datagram(data, 8)
    kinds = [type(adm.decide(info, len(data), ADDR, now=10.0 + i * 0.01)) for i in range(6)]
    assert kinds == [Accept, Accept, Accept, Reply, Reply, Reply]
    # A second later the rate has dropped: accepted directly again.
    assert isinstance(adm.decide(info, len(data), ADDR, now=12.0), Accept)


def test_refusal_small_datagrams_and_other_packet_types() -> None:
    adm = Admission(RetryTokens(random_bytes=os.urandom), random_bytes=os.urandom)
    data = initial()
    info = classify_datagram(data, 8)
    refused = adm.decide(info, len(data), ADDR, now=1.0, accepting=False)
    assert isinstance(refused, Reply) and refused.what == "refused"
    assert isinstance(adm.decide(info, 1199, ADDR, now=1.0), Ignore)
    assert adm.counters["refused"] == 1
