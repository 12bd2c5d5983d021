"""An endpoint driven by JSON lines, for tests that run peers in other network
namespaces (``ip netns exec NS python tests/nat_peer.py ...``).

Prints ``{"ready": <NodeInfo dict>}`` once bound, then answers each command
line on stdin with one JSON line:
  {"op": "connect", "contact": {...}, "via": "host:port"?, "punch": bool?, "relay": bool?}
                                        -> {"ok": "<peer addr>"} | {"error": "..."}
  {"op": "path", "peer": "host:port"}   -> {"ok": "<relay addr>" | null (direct)}
  {"op": "reach", "via": "host:port"}   -> {"ok": {"reachable": bool, "address": "host:port"}}
  {"op": "restart"}                     -> a new endpoint on a new port, connected
                                           to the --contact nodes again; {"ok": info}
  {"op": "echo"}                        -> {"ok": "<our addr as seen>"} | {"error": ...}
  {"op": "send", "to": {...}, "msg": s} -> {"ok": "sent"} | {"error": "<unsent reason>"}
  {"op": "sendmany", "to": {...}, "prefix": s, "n": n}
                                        -> {"ok": {"sent": k, "unsent": [reasons]}}
  {"op": "inbox"}                       -> {"ok": {"messages": [...], "upgraded": [addr...]}}
                                           (events queued so far; messages as text)
  {"op": "peers"}                       -> {"ok": ["addr", ...]}
  {"op": "peerids"}                     -> {"ok": [{"peer_id": s | null, "addr": "host:port",
                                                    "kind": "node" | "client"}, ...]}
  {"op": "sendid", "peer_id": s, "msg": s}
                                        -> like "send", to the connected peer with that id
  {"op": "events"}                      -> {"ok": [{"type": "NewMessage", ...}, ...]}: every
                                           event queued so far (see event_dict)
  {"op": "trace", "to": {...}, "via": "host:port", "seconds": s, "upgrade_at": s}
                                        -> sends 16 KiB messages (32 in flight) to the
                                           connected peer for ``seconds``, one punch
                                           through ``via`` at ``upgrade_at``; {"ok":
                                           {"samples": [[t, path, rtt, bytes_sent], ...],
                                           "changed": [t, ...]}} every 50 ms (peer_stats)
  {"op": "quit"}                        -> exits 0
Every command is bounded by --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import replace

from quic_p2p import (
    Config,
    ConnectedTo,
    ConnectionFailure,
    Event,
    NewMessage,
    NodeInfo,
    OurType,
    PathChanged,
    PeerId,
    QuicP2p,
    QuicP2pError,
    RelayPolicy,
    SentUserMessage,
    UnsentUserMessage,
    UpgradedToDirect,
)
from quic_p2p.peer import format_address, parse_address


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ip", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--type", default="node")
    parser.add_argument("--contact", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--relay", action="store_true", help="relay for others")
    args = parser.parse_args()
    if log_dir := os.environ.get("QUIC_P2P_NAT_LOG"):  # debugging the lab: one log per peer
        logging.basicConfig(
            filename=f"{log_dir}/{os.getpid()}.log",
            level=logging.INFO,
            format="%(asctime)s %(name)s %(message)s",
        )
    config = Config(
        ip=args.ip,
        port=args.port,
        our_type=OurType.parse(args.type),
        hard_coded_contacts=tuple(NodeInfo.from_json(c) for c in args.contact),
        idle_timeout_msec=5000,
        keep_alive_interval_msec=1000,
        bootstrap_cache_dir="/tmp/qp2p-nat-peer-cache",
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(obj: object) -> None:
        print(json.dumps(obj), flush=True)

    relay = RelayPolicy() if args.relay else None
    ep = QuicP2p(config, relay=relay)
    await ep.start()
    try:
        for contact in config.hard_coded_contacts:
            await ep.connect_to(contact)
        say({"ready": ep.node_info.to_dict()})
        while line := await reader.readline():
            cmd = json.loads(line)
            try:
                async with asyncio.timeout(args.timeout):
                    if cmd["op"] == "restart":
                        # A fresh socket on a new port: new NAT mappings.
                        await ep.aclose()
                        ep = QuicP2p(replace(config, port=0), relay=relay)
                        await ep.start()
                        for contact in config.hard_coded_contacts:
                            await ep.connect_to(contact)
                        say({"ok": ep.node_info.to_dict()})
                    else:
                        say({"ok": await run(ep, cmd)})
            except (QuicP2pError, TimeoutError) as exc:
                say({"error": str(exc) or type(exc).__name__})
            if cmd["op"] == "quit":
                return
    finally:
        await ep.aclose()


async def run(ep: QuicP2p, cmd: dict[str, object]) -> object:
    op = cmd["op"]
    if op == "connect":
        via = cmd.get("via")
        peer = await ep.connect_to(
            NodeInfo.from_dict(cmd["contact"]),
            via=parse_address(str(via)) if via else None,
            punch=bool(cmd.get("punch", True)),
            relay=bool(cmd.get("relay", True)),
        )
        return format_address(peer.peer_addr)
    if op == "trace":
        return await trace(ep, cmd)
    if op == "path":
        relay = ep.relayed_via(parse_address(str(cmd["peer"])))
        return None if relay is None else format_address(relay)
    if op == "reach":
        found = await ep.check_reachability(parse_address(str(cmd["via"])))
        return {"reachable": found.reachable, "address": format_address(found.address)}
    if op == "sendmany":
        to = NodeInfo.from_dict(cmd["to"])
        outs = await asyncio.gather(
            *(ep.send(to, f"{cmd['prefix']}{i}".encode()) for i in range(int(str(cmd["n"]))))
        )
        return {
            "sent": sum(isinstance(o, SentUserMessage) for o in outs),
            "unsent": [o.reason for o in outs if isinstance(o, UnsentUserMessage)],
        }
    if op == "inbox":
        messages: list[str] = []
        upgraded: list[str] = []
        paths: list[str] = []
        for _ in range(100_000):
            try:
                ev = await asyncio.wait_for(ep.next_event(), 0.2)
            except TimeoutError:
                break
            if isinstance(ev, NewMessage):
                messages.append(ev.msg.decode())
            elif isinstance(ev, UpgradedToDirect):
                upgraded.append(format_address(ev.peer_addr))
            elif isinstance(ev, PathChanged):
                paths.append(f"{ev.old.kind.value}>{ev.new.kind.value}")
        return {"messages": messages, "upgraded": upgraded, "paths": paths}
    if op == "echo":
        return format_address((await ep.our_connection_info()).peer_addr)
    if op == "send":
        out = await ep.send(NodeInfo.from_dict(cmd["to"]), str(cmd["msg"]).encode())
        if isinstance(out, SentUserMessage):
            return "sent"
        raise QuicP2pError(out.reason)
    if op == "stats":
        return dict(ep.stats())
    if op == "peers":
        return [format_address(p.peer_addr) for p in ep.connected_peers()]
    if op == "peerids":
        return [
            {
                "peer_id": None if p.peer_id is None else str(p.peer_id),
                "addr": format_address(p.peer_addr),
                "kind": p.kind.value,
            }
            for p in ep.connected_peers()
        ]
    if op == "sendid":
        want = PeerId.parse(str(cmd["peer_id"]))
        matches = [p for p in ep.connected_peers() if p.peer_id == want]
        if len(matches) != 1:
            raise QuicP2pError(f"{len(matches)} connected peers with id {want.short()}")
        out = await ep.send(matches[0], str(cmd["msg"]).encode())
        if isinstance(out, SentUserMessage):
            return "sent"
        raise QuicP2pError(out.reason)
    if op == "events":
        events: list[dict[str, object]] = []
        for _ in range(100_000):
            try:
                ev = await asyncio.wait_for(ep.next_event(), 0.2)
            except TimeoutError:
                break
            events.append(event_dict(ev))
        return events
    if op == "quit":
        return "bye"
    raise QuicP2pError(f"unknown op {op!r}")


def event_dict(ev: Event) -> dict[str, object]:
    """An event as JSON: its type, and the fields the tests read (peer ids as
    text, addresses as host:port, messages decoded)."""
    out: dict[str, object] = {"type": type(ev).__name__}
    for name in ("peer_id", "peer_addr", "old", "new"):
        value = getattr(ev, name, None)
        if isinstance(value, PeerId):
            out[name] = str(value)
        elif isinstance(value, tuple):
            out[name] = format_address(value)
    if isinstance(ev, NewMessage):
        out["msg"] = ev.msg.decode(errors="replace")
    if isinstance(ev, ConnectedTo):
        out["peer_addr"] = format_address(ev.peer.peer_addr)
        out["peer_id"] = None if ev.peer_id is None else str(ev.peer_id)
    if isinstance(ev, ConnectionFailure):
        out["error"] = str(ev.error)
    return out


async def trace(ep: QuicP2p, cmd: dict[str, object]) -> object:
    """peer_stats over time while messages flow, with one punch on the way
    (docs/upgrade_plot.py draws it)."""
    to = NodeInfo.from_dict(cmd["to"])
    via = parse_address(str(cmd["via"]))
    seconds, upgrade_at = float(str(cmd["seconds"])), float(str(cmd["upgrade_at"]))
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop = start + seconds
    samples: list[list[object]] = []
    changed: list[float] = []
    payload = bytes(16 * 1024)

    async def pump() -> None:
        while loop.time() < stop:
            await ep.send(to, payload)

    async def punch() -> None:
        await asyncio.sleep(upgrade_at)
        await ep.connect_to(to, via=via)  # relayed: one punch now

    tasks = [asyncio.ensure_future(pump()) for _ in range(32)]
    tasks.append(asyncio.ensure_future(punch()))
    try:
        while (now := loop.time()) < stop:
            stats = ep.peer_stats(to)
            if stats is not None:
                samples.append(
                    [round(now - start, 3), stats.path.kind.value, stats.rtt, stats.bytes_sent]
                )
            while (ev := ep.poll_event()) is not None:
                if isinstance(ev, PathChanged):
                    changed.append(round(now - start, 3))
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"samples": samples, "changed": changed}


if __name__ == "__main__":
    asyncio.run(main())
