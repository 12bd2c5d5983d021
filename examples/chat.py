"""Chat between two terminals.

Terminal 1:  python examples/chat.py
             (prints a line "contact: {...}")
Terminal 2:  python examples/chat.py --peer '{...the JSON from terminal 1...}'

Type lines in either terminal; they appear in the other. Ctrl-D quits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from quic_p2p import Config, ConnectedTo, NewMessage, NodeInfo, QuicP2p


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", help="the other side's contact JSON")
    args = parser.parse_args()

    async with QuicP2p(Config(ip="127.0.0.1")) as node:
        print("contact:", node.node_info.to_json(), flush=True)
        if args.peer:
            await node.connect_to(NodeInfo.from_json(args.peer))

        async def show_events() -> None:
            async for event in node.events():
                if isinstance(event, ConnectedTo):
                    print(f"* connected to {event.peer.peer_addr}", flush=True)
                elif isinstance(event, NewMessage):
                    print(f"> {event.msg.decode(errors='replace')}", flush=True)

        printer = asyncio.create_task(show_events())
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            for peer in node.connected_peers():
                outcome = await node.send(peer, line.rstrip("\n").encode())
                if type(outcome).__name__ == "UnsentUserMessage":
                    print(f"! not delivered: {outcome.reason}", flush=True)
        printer.cancel()


if __name__ == "__main__":
    asyncio.run(main())
