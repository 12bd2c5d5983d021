"""QUIC datagram classifier: real aioquic packets, hand-built layouts, C vs twin."""

from __future__ import annotations

import datetime
from types import ModuleType
from typing import Any

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quic_p2p.accel.types import (
    MAX_CID_LEN,
    QUIC_V1,
    DatagramError,
    DatagramErrorCode,
    DatagramInfo,
    PacketType,
)

pytestmark = pytest.mark.c_extension

FIXTURE_OK = [HealthCheck.function_scoped_fixture]
CID_LEN = 8  # aioquic's default connection_id_length
T = DatagramErrorCode.TRUNCATED


def _self_signed() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _packets(datagram: bytes) -> list[bytes]:
    """Each coalesced packet of a datagram, with the rest of the datagram after it."""
    out = []
    pos = 0
    for _ in range(8):
        if pos >= len(datagram):
            break
        try:
            h = pull_quic_header(Buffer(data=datagram[pos:]), host_cid_length=CID_LEN)
        except ValueError:  # zero padding after the last packet
            break
        out.append(datagram[pos:])
        pos += h.packet_length
    return out


@pytest.fixture(scope="module")
def real_packets() -> list[bytes]:
    """Packets of a real in-memory aioquic handshake plus a 1-RTT stream write,
    an Initial carrying a token, a Retry and a Version Negotiation."""
    cert, key = _self_signed()
    client = QuicConnection(
        configuration=QuicConfiguration(is_client=True, alpn_protocols=["qp2p"], verify_mode=0)
    )
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["qp2p"])
    server_config.certificate = cert
    server_config.private_key = key
    server = QuicConnection(
        configuration=server_config,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    now = 1.0
    client.connect(("192.0.2.2", 4433), now=now)
    datagrams: list[bytes] = []
    for _ in range(10):
        moved = False
        for src, dst, addr in (
            (client, server, ("192.0.2.1", 1)),
            (server, client, ("192.0.2.2", 4433)),
        ):
            for data, _addr in src.datagrams_to_send(now=now):
                datagrams.append(data)
                dst.receive_datagram(data, addr, now=now)
                moved = True
        if not moved:
            break
    stream = client.get_next_available_stream_id()
    client.send_stream_data(stream, b"hello", end_stream=False)
    datagrams += [d for d, _ in client.datagrams_to_send(now=now)]

    with_token = QuicConnection(
        configuration=QuicConfiguration(is_client=True, token=bytes(range(70)))  # 2-byte varint
    )
    with_token.connect(("192.0.2.2", 4433), now=now)
    datagrams += [d for d, _ in with_token.datagrams_to_send(now=now)]
    datagrams.append(encode_quic_retry(QUIC_V1, b"S" * 8, b"D" * 8, b"O" * 8, b"retry-token"))
    datagrams.append(encode_quic_version_negotiation(b"S" * 5, b"D" * 20, [QUIC_V1, 0x6B3343CF]))
    return [p for d in datagrams for p in _packets(d)]


def test_real_packets_match_aioquic(impl: ModuleType, real_packets: list[bytes]) -> None:
    seen = set()
    for packet in real_packets:
        info = impl.classify_datagram(packet, CID_LEN)
        h = pull_quic_header(Buffer(data=packet), host_cid_length=CID_LEN)
        seen.add(h.packet_type)
        assert info.packet_type.name == h.packet_type.name
        assert info.long_header == (h.packet_type != QuicPacketType.ONE_RTT)
        assert info.version == (h.version or 0)
        assert info.dcid == h.destination_cid
        assert info.scid == h.source_cid
        if h.packet_type == QuicPacketType.INITIAL:
            assert info.token == h.token
        else:
            assert info.token == b""  # a Retry's token is not ours to parse
    # 0-RTT needs session resumption; its layout is covered by LAYOUTS below.
    assert seen == set(QuicPacketType) - {QuicPacketType.ZERO_RTT}
    tokens = [impl.classify_datagram(p, CID_LEN).token for p in real_packets]
    assert bytes(range(70)) in tokens


def test_every_prefix_of_real_packets_agrees(
    c_impl: ModuleType, py_impl: ModuleType, real_packets: list[bytes]
) -> None:
    for packet in real_packets:
        full = py_impl.classify_datagram(packet, CID_LEN)
        header_end = 1 + CID_LEN
        if full.long_header:
            header_end = packet.index(full.scid, 7 + len(full.dcid)) + len(full.scid)
            if full.packet_type == PacketType.INITIAL:
                header_end = packet.index(full.token, header_end + 1) + len(full.token)
        for n in range(len(packet) + 1):
            outcomes = [_outcome(mod, packet[:n], CID_LEN) for mod in (c_impl, py_impl)]
            assert outcomes[0] == outcomes[1]
            if n < header_end:
                assert outcomes[0] == ("error", T)
            else:
                assert outcomes[0] == ("ok", full)


# ---------------------------------------------------------------- hand-built layouts


def long_header(first: int, version: int, dcid: bytes, scid: bytes, rest: bytes = b"") -> bytes:
    return (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + rest
    )


LAYOUTS: list[tuple[bytes, int, Any]] = [
    # (datagram, short_dcid_len, expected DatagramInfo or error code)
    (
        b"\x40" + b"C" * 8 + b"pay",
        8,
        DatagramInfo(False, PacketType.ONE_RTT, 0, b"C" * 8, b"", b""),
    ),
    (b"\x7f", 0, DatagramInfo(False, PacketType.ONE_RTT, 0, b"", b"", b"")),
    (b"\x40" + b"C" * 20, 20, DatagramInfo(False, PacketType.ONE_RTT, 0, b"C" * 20, b"", b"")),
    (b"\x40" + b"C" * 7, 8, T),
    (b"\x00" + b"C" * 8, 8, DatagramErrorCode.FIXED_BIT),
    (b"\x3f", 0, DatagramErrorCode.FIXED_BIT),
    (b"", 0, T),
    (b"", 8, T),
    (
        long_header(0xC0, QUIC_V1, b"D" * 8, b"S" * 3, b"\x05token\x44\xd0rest"),
        8,
        DatagramInfo(True, PacketType.INITIAL, QUIC_V1, b"D" * 8, b"S" * 3, b"token"),
    ),
    (
        long_header(0xC0, QUIC_V1, b"", b"", b"\x40\x03abc"),  # 2-byte varint token length
        8,
        DatagramInfo(True, PacketType.INITIAL, QUIC_V1, b"", b"", b"abc"),
    ),
    (
        long_header(0xC0, QUIC_V1, b"", b"", b"\x80\x00\x00\x02ab"),  # 4-byte varint
        8,
        DatagramInfo(True, PacketType.INITIAL, QUIC_V1, b"", b"", b"ab"),
    ),
    (
        long_header(0xC0, QUIC_V1, b"", b"", b"\xc0\x00\x00\x00\x00\x00\x00\x01z"),  # 8-byte
        8,
        DatagramInfo(True, PacketType.INITIAL, QUIC_V1, b"", b"", b"z"),
    ),
    (long_header(0xC0, QUIC_V1, b"", b"", b"\xff" * 8 + b"z" * 50), 8, T),  # 2**62-1 token
    (long_header(0xC0, QUIC_V1, b"", b"", b"\x06token"), 8, T),  # token one short
    (long_header(0xC0, QUIC_V1, b"", b"", b"\x80\x00\x00"), 8, T),  # varint cut
    (long_header(0xC0, QUIC_V1, b"", b""), 8, T),  # no token length at all
    (
        long_header(0xD0, QUIC_V1, b"D", b"S"),
        8,
        DatagramInfo(True, PacketType.ZERO_RTT, QUIC_V1, b"D", b"S", b""),
    ),
    (
        long_header(0xE0, QUIC_V1, b"D" * 20, b"S" * 20),
        8,
        DatagramInfo(True, PacketType.HANDSHAKE, QUIC_V1, b"D" * 20, b"S" * 20, b""),
    ),
    (
        long_header(0xF0, QUIC_V1, b"D", b"S", b"\x05token-bytes"),
        8,
        DatagramInfo(True, PacketType.RETRY, QUIC_V1, b"D", b"S", b""),
    ),
    (long_header(0x80, QUIC_V1, b"D", b"S"), 8, DatagramErrorCode.FIXED_BIT),
    (long_header(0xC0, QUIC_V1, b"D" * 21, b"S"), 8, DatagramErrorCode.CID_LENGTH),
    (long_header(0xE0, QUIC_V1, b"D", b"S" * 21), 8, DatagramErrorCode.CID_LENGTH),
    (b"\xc0\x00\x00\x00\x01\x15" + b"D" * 3, 8, DatagramErrorCode.CID_LENGTH),  # before truncation
    (
        long_header(0x80, 0, b"D" * 255, b"S" * 255, b"\x00\x00\x00\x01"),
        8,
        DatagramInfo(True, PacketType.VERSION_NEGOTIATION, 0, b"D" * 255, b"S" * 255, b""),
    ),
    (
        long_header(0x8A, 0xFF00001D, b"D" * 40, b""),
        8,
        DatagramInfo(True, PacketType.UNKNOWN_VERSION, 0xFF00001D, b"D" * 40, b"", b""),
    ),
    (long_header(0x80, 0xFF00001D, b"D" * 40, b"")[:-1], 8, T),
    (b"\xc0\x00\x00\x00", 8, T),
    (b"\xc0\x00\x00\x00\x01", 8, T),
    (b"\xc0\x00\x00\x00\x01\x08" + b"D" * 7, 8, T),
    (b"\xc0\x00\x00\x00\x01\x08" + b"D" * 8, 8, T),
    (b"\xc0\x00\x00\x00\x01\x00\x01", 8, T),
]


@pytest.mark.parametrize(("data", "k", "expected"), LAYOUTS)
def test_known_layouts(impl: ModuleType, data: bytes, k: int, expected: Any) -> None:
    if isinstance(expected, DatagramInfo):
        assert impl.classify_datagram(data, k) == expected
    else:
        with pytest.raises(DatagramError) as info:
            impl.classify_datagram(data, k)
        assert info.value.code == expected


@pytest.mark.parametrize("k", [-1, MAX_CID_LEN + 1, 255])
@pytest.mark.parametrize("data", [b"\x40" + b"C" * 300, b"", b"\x00", b"\xc0\x00\x00\x00\x01"])
def test_short_dcid_len_out_of_range(impl: ModuleType, data: bytes, k: int) -> None:
    with pytest.raises(ValueError) as info:
        impl.classify_datagram(data, k)
    assert not isinstance(info.value, DatagramError)


# ---------------------------------------------------------------- C vs twin


def _outcome(mod: ModuleType, data: bytes, k: int) -> tuple[Any, ...]:
    try:
        return ("ok", mod.classify_datagram(data, k))
    except DatagramError as exc:
        return ("error", exc.code)


def varint(value: int, size: int) -> bytes:
    """RFC 9000 section 16 varint of a given size (1, 2, 4 or 8 bytes)."""
    prefix = {1: 0, 2: 1, 4: 2, 8: 3}[size] << (8 * size - 2)
    return (prefix | value).to_bytes(size, "big")


initial_st = st.builds(
    lambda first, d, s, size, token, rest: long_header(
        0xC0 | (first & 0x0F), QUIC_V1, d, s, varint(len(token), size) + token + rest
    ),
    st.integers(0, 255),
    st.binary(max_size=21),
    st.binary(max_size=21),
    st.sampled_from([1, 2, 4, 8]),
    st.binary(max_size=50),
    st.binary(max_size=8),
)

datagram_st = st.one_of(
    st.binary(max_size=80),
    initial_st.flatmap(lambda d: st.integers(0, len(d)).map(lambda n: d[:n])),
    st.builds(
        lambda first, version, d, s, rest: long_header(first | 0x80, version, d, s, rest),
        st.integers(0, 255),
        st.sampled_from([0, QUIC_V1, QUIC_V1, QUIC_V1, 0x6B3343CF, 0xFFFFFFFF]),
        st.binary(max_size=24),
        st.binary(max_size=24),
        st.binary(max_size=40),
    ).flatmap(lambda d: st.integers(0, len(d)).map(lambda n: d[:n])),
)


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=datagram_st, k=st.integers(0, MAX_CID_LEN))
def test_c_and_py_agree_on_garbage(
    c_impl: ModuleType, py_impl: ModuleType, data: bytes, k: int
) -> None:
    assert _outcome(c_impl, data, k) == _outcome(py_impl, data, k)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=datagram_st, k=st.integers(0, MAX_CID_LEN))
def test_c_function_directly_matches_twin(
    c_impl: ModuleType, py_impl: ModuleType, data: bytes, k: int
) -> None:
    """qp2p_classify_datagram itself, short headers included (the C wrapper answers
    well-formed short headers in Python, so this is where C sees them)."""
    from quic_p2p.accel.cimpl._ffi import ffi, lib

    info = ffi.new("qp2p_dgram_info_t *")
    pt = lib.qp2p_classify_datagram(data, len(data), k, info)
    assert lib.qp2p_classify_datagram(data, len(data), k, ffi.NULL) == pt
    expected = _outcome(py_impl, data, k)
    if expected[0] == "error":
        assert pt == expected[1]
        return
    want: DatagramInfo = expected[1]
    assert pt == want.packet_type
    assert info.packet_type == pt
    assert info.form == (lib.QP2P_FORM_LONG if want.long_header else lib.QP2P_FORM_SHORT)
    assert info.version == want.version
    for field, value in (("dcid", want.dcid), ("scid", want.scid), ("token", want.token)):
        offset, length = getattr(info, f"{field}_offset"), getattr(info, f"{field}_length")
        assert data[offset : offset + length] == value
        assert offset + length <= len(data)
    assert lib.qp2p_classify_datagram(data, len(data), MAX_CID_LEN + 1, info) == lib.QP2P_E_ARG


def test_concurrent_calls_each_read_their_own_result(impl: ModuleType) -> None:
    """cffi drops the GIL inside C, so calls from several threads overlap: each
    must read back its own output struct (the C wrapper's free list), never
    another call's."""
    import threading

    def handshake(i: int) -> bytes:
        dcid, scid = i.to_bytes(8, "big"), (i * 7).to_bytes(4, "big")
        return long_header(0xE0, QUIC_V1, dcid, scid, b"payload")

    failures: list[str] = []
    start = threading.Barrier(4)

    def worker(base: int) -> None:
        start.wait()
        try:
            for i in range(base, base + 2000):
                data = handshake(i)
                info = impl.classify_datagram(data, CID_LEN)
                if (info.packet_type, info.dcid, info.scid) != (
                    PacketType.HANDSHAKE,
                    data[6:14],
                    data[15:19],
                ):
                    failures.append(f"call {i} read {info}")
                with pytest.raises(DatagramError):  # the error path gives its struct back too
                    impl.classify_datagram(data[:10], CID_LEN)
        except BaseException as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(n * 2000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_call_owns_its_output_struct_while_c_runs(
    c_impl: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic form of the test above: another call runs while this one
    is inside C (as another thread may, the GIL being released) and must not
    write into this call's output struct."""
    from quic_p2p.accel.cimpl import classify

    real = classify._classify
    outer = long_header(0xE0, QUIC_V1, b"O" * 8, b"o" * 3, b"outer payload")
    inner = long_header(0xC0, QUIC_V1, b"I" * 2, b"i" * 9, b"\x05token" + bytes(30))
    seen: list[DatagramInfo] = []

    def interleaved(data: bytes, n: int, k: int, info: Any) -> int:
        rc: int = real(data, n, k, info)
        if data is outer:
            seen.append(classify.classify_datagram(inner, CID_LEN))
            with pytest.raises(DatagramError):
                classify.classify_datagram(inner[:3], CID_LEN)
        return rc

    monkeypatch.setattr(classify, "_classify", interleaved)
    for _ in range(3):  # first with an empty free list, then reusing its structs
        got = classify.classify_datagram(outer, CID_LEN)
        assert got == DatagramInfo(True, PacketType.HANDSHAKE, QUIC_V1, b"O" * 8, b"o" * 3, b"")
        assert seen.pop() == DatagramInfo(
            True, PacketType.INITIAL, QUIC_V1, b"I" * 2, b"i" * 9, b"token"
        )
