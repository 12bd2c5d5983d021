"""``Config.qlog_dir``: each connection's aioquic trace lands in the directory
as ``<ODCID>_<client|server>.qlog`` (qlog 0.3 JSON) when it ends, or when the
endpoint closes; junk never makes a file; a directory that cannot be one is
a ``ConfigError`` at start, and one that goes away later costs traces, never
the endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from test_cli import run
from test_engine_pair import connect

from quic_p2p import Config, ConfigError, NewMessage, QuicP2p, SentUserMessage
from quic_p2p.cli import build_parser
from quic_p2p.cli_node import config_from_args
from quic_p2p.proto.qlog import QlogTrace

from enginepair import Net
from netutil import WAIT, endpoints, node_config, until, wait_for_event

pytestmark = pytest.mark.usefixtures("no_loop_errors")

WRITTEN = "qlog: traces written"
NOT_WRITTEN = "qlog: traces not written"
NAME = re.compile(r"([0-9a-f]{16,40})_(client|server)\.qlog")


def traces(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every file in ``directory``, which must all be qlog traces, by (ODCID, vantage)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in directory.iterdir():
        m = NAME.fullmatch(path.name)
        assert m is not None, f"unexpected file {path.name}"
        doc = json.loads(path.read_text())
        assert (doc["qlog_format"], doc["qlog_version"]) == ("JSON", "0.3")
        (trace,) = doc["traces"]
        assert trace["common_fields"]["ODCID"] == m[1]
        assert trace["vantage_point"]["type"] == m[2]
        out[(m[1], m[2])] = trace
    return out


def files(directory: Path) -> list[str]:
    return os.listdir(directory)


def names(trace: dict[str, Any]) -> set[str]:
    return {e["name"] for e in trace["events"]}


async def exchange(a: QuicP2p, b: QuicP2p, msg: bytes) -> None:
    peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
    out = await asyncio.wait_for(a.send(peer, msg), WAIT)
    assert isinstance(out, SentUserMessage)
    await wait_for_event(b, NewMessage, lambda e: e.msg == msg)


async def test_each_connection_leaves_one_trace_per_side(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b" / "nested"  # created at start
    async with endpoints(node_config(qlog_dir=str(a_dir)), node_config(qlog_dir=str(b_dir))) as (
        a,
        b,
    ):
        await exchange(a, b, b"traced")
        assert files(a_dir) == files(b_dir) == []  # still open
    a_traces, b_traces = traces(a_dir), traces(b_dir)
    # Node to Node: a dialled b, b connected back; each side of each
    # connection names it by the same ODCID.
    (out,) = [odcid for odcid, side in a_traces if side == "client"]
    (back,) = [odcid for odcid, side in a_traces if side == "server"]
    assert out != back
    assert set(a_traces) == {(out, "client"), (back, "server")}
    assert set(b_traces) == {(out, "server"), (back, "client")}
    for trace in (*a_traces.values(), *b_traces.values()):
        assert {"transport:packet_sent", "transport:packet_received"} <= names(trace)
    assert (a.stats().get(WRITTEN), b.stats().get(WRITTEN)) == (2, 2)
    assert NOT_WRITTEN not in a.stats() and NOT_WRITTEN not in b.stats()


async def test_a_connection_that_ends_is_written_before_the_endpoint_closes(
    tmp_path: Path,
) -> None:
    async with endpoints(node_config(qlog_dir=str(tmp_path)), node_config()) as (a, b):
        await exchange(a, b, b"one")
        await asyncio.wait_for(a.disconnect_from(b.local_addr), WAIT)
        # Written once aioquic's closing period ends, with the endpoint up.
        await until(lambda: a.stats().get(WRITTEN, 0) == 2)
        assert {side for _, side in traces(tmp_path)} == {"client", "server"}
        await exchange(a, b, b"two")  # a new pair of connections
    assert a.stats()[WRITTEN] == 4 and len(traces(tmp_path)) == 4


async def test_without_qlog_dir_nothing_is_counted(tmp_path: Path) -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        await exchange(a, b, b"untraced")
    assert WRITTEN not in a.stats() and WRITTEN not in b.stats()


@pytest.mark.parametrize("qlog", [True, False])
def test_the_engine_hands_traces_out_and_writes_nothing(tmp_path: Path, qlog: bool) -> None:
    """Sans-IO, on a fake clock: one ``QlogTrace`` result per connection when
    the engine forgets it, none at all without ``qlog_dir``; the engine
    never touches the directory (the driver creates and writes it)."""
    where = tmp_path / "never created"
    options = {"qlog_dir": str(where)} if qlog else {}
    net = Net()
    a, b = net.engine(**options), net.engine(**options)
    connect(net, a, b)
    for side in (a, b):
        side.engine.close(net.now)
    net.run()
    for side in (a, b):
        side.engine.forget_all()
    net.run()
    got = {
        name: {(r.odcid, r.vantage) for r in side.results if isinstance(r, QlogTrace)}
        for name, side in (("a", a), ("b", b))
    }
    if qlog:
        flipped = {"client": "server", "server": "client"}
        assert len(got["a"]) == 2 and {v for _, v in got["a"]} == {"client", "server"}
        assert got["b"] == {(odcid, flipped[v]) for odcid, v in got["a"]}
    else:
        assert got == {"a": set(), "b": set()}
    assert not where.exists()


def test_qlog_dir_is_checked_as_a_value() -> None:
    assert Config().qlog_dir is None
    assert Config(qlog_dir=Path("x/y")).qlog_dir == str(Path("x/y"))  # type: ignore[arg-type]
    for bad in ("", 3, b"dir"):
        with pytest.raises(ConfigError, match="qlog_dir"):
            Config(qlog_dir=bad)  # type: ignore[arg-type]


async def test_a_qlog_dir_that_is_a_file_fails_the_start(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("not a directory")
    for where in (file, file / "below"):
        ep = QuicP2p(node_config(qlog_dir=str(where)))
        try:
            with pytest.raises(
                ConfigError, match=r"qlog_dir .* (not a directory|cannot be created)"
            ):
                await ep.start()
        finally:
            await ep.aclose()
    assert file.read_text() == "not a directory"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes into read-only directories",
)
async def test_an_unwritable_qlog_dir_fails_the_start(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o500)
    try:
        ep = QuicP2p(node_config(qlog_dir=str(tmp_path)))
        try:
            with pytest.raises(ConfigError, match="not writable"):
                await ep.start()
        finally:
            await ep.aclose()
    finally:
        os.chmod(tmp_path, 0o700)


def _junk_initial(rng: random.Random) -> bytes:
    """A v1 Initial with no token whose payload does not decrypt, padded."""
    dcid, scid = rng.randbytes(8), rng.randbytes(8)
    header = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid
    return header + b"\x00" + (0x4000 | 1200).to_bytes(2, "big") + rng.randbytes(1200)


@pytest.mark.parametrize("stateless_retry", [False, True])
async def test_junk_makes_no_trace(tmp_path: Path, stateless_retry: bool) -> None:
    rng = random.Random(7)
    n = 20
    async with endpoints(node_config(qlog_dir=str(tmp_path)), stateless_retry=stateless_retry) as (
        ep,
    ):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(n):
                sock.sendto(_junk_initial(rng), ep.local_addr)
                sock.sendto(rng.randbytes(rng.randint(1, 1500)), ep.local_addr)
        # Without retry each Initial becomes a connection, found junk and
        # dropped; with it, each gets a Retry and no state.
        key = "admission: retry" if stateless_retry else "dropped: undecryptable Initial"
        await until(lambda: ep.stats().get(key, 0) >= n)
    assert files(tmp_path) == []
    assert WRITTEN not in ep.stats() and NOT_WRITTEN not in ep.stats()


async def test_a_vanished_qlog_dir_costs_traces_not_the_endpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    qlog_dir = tmp_path / "q"
    caplog.set_level(logging.WARNING, logger="quic_p2p.qlog")
    async with endpoints(node_config(qlog_dir=str(qlog_dir)), node_config()) as (a, b):
        shutil.rmtree(qlog_dir)
        await exchange(a, b, b"lost")
        await asyncio.wait_for(a.disconnect_from(b.local_addr), WAIT)
        await until(lambda: a.stats().get(NOT_WRITTEN, 0) == 2)
        warnings = [r for r in caplog.records if r.name == "quic_p2p.qlog"]
        assert len(warnings) == 1 and "cannot write" in warnings[0].getMessage()
        await exchange(a, b, b"still works")
        qlog_dir.mkdir()  # back before the endpoint closes: those two are written
    assert a.stats().get(NOT_WRITTEN) == 2 and a.stats().get(WRITTEN) == 2
    assert len(traces(qlog_dir)) == 2


def test_qlog_dir_flag_maps_into_config(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(["node", "--qlog-dir", str(tmp_path)])
    assert config_from_args(args).qlog_dir == str(tmp_path)
    assert config_from_args(parser.parse_args(["node"])).qlog_dir is None


def test_node_with_a_file_as_qlog_dir_says_so(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    out = run("node", "--ip", "127.0.0.1", "--no-stdin", "--qlog-dir", str(file), timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("quic-p2p: error: qlog_dir") and "not a directory" in out.stderr
    assert "Traceback" not in out.stderr
