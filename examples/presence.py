"""Presence by datagram: three nodes on 127.0.0.1 each send a small heartbeat
datagram to every connected peer ten times a second, and each keeps a table
of who it heard from and how recently. Datagrams are unreliable, so a lost
heartbeat is simply replaced by the next one: nothing waits for an
acknowledgement and nothing is retransmitted.

    python examples/presence.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

from quic_p2p import Config, DatagramError, PeerId, QuicP2p

INTERVAL = 0.1


async def heartbeat(node: QuicP2p, name: str, stop: asyncio.Event) -> None:
    beat = 0
    while not stop.is_set():
        beat += 1
        data = json.dumps({"name": name, "beat": beat}).encode()
        for peer in node.connected_peers():
            # (DatagramError: the peer left meanwhile; nobody to tell.)
            with contextlib.suppress(DatagramError):
                node.send_datagram(peer, data)
        await asyncio.sleep(INTERVAL)


async def listen(node: QuicP2p, seen: dict[PeerId, tuple[str, int, float]]) -> None:
    async for datagram in node.datagrams():
        hello = json.loads(datagram.data)
        if datagram.peer_id is not None:
            seen[datagram.peer_id] = (hello["name"], hello["beat"], time.monotonic())


async def main(seconds: float) -> None:
    names = ["ann", "bob", "cat"]
    nodes = [QuicP2p(Config(ip="127.0.0.1")) for _ in names]
    for node in nodes:
        await node.start()
    try:
        for i, node in enumerate(nodes):  # a full mesh
            for other in nodes[i + 1 :]:
                await node.connect_to(other.node_info)
        stop = asyncio.Event()
        tables: list[dict[PeerId, tuple[str, int, float]]] = [{} for _ in nodes]
        tasks = [
            asyncio.ensure_future(t)
            for node, name, seen in zip(nodes, names, tables, strict=True)
            for t in (heartbeat(node, name, stop), listen(node, seen))
        ]
        await asyncio.sleep(seconds)
        stop.set()
        now = time.monotonic()
        for name, seen in zip(names, tables, strict=True):
            heard = ", ".join(
                f"{who} (beat {beat}, {now - at:.2f} s ago)"
                for who, beat, at in sorted(seen.values())
            )
            print(f"{name} hears: {heard}")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for node in nodes:
            await node.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    asyncio.run(main(parser.parse_args().seconds))
