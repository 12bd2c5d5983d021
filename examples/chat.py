"""Chat between two terminals.

Terminal 1:  python examples/chat.py
             (prints a line "contact: {...}")
Terminal 2:  python examples/chat.py --peer '{...the JSON from terminal 1...}'

Type lines in either terminal; they appear in the other. Ctrl-D quits;
Ctrl-C quits at once (exit code 130).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading

from quic_p2p import (
    Config,
    ConnectedTo,
    ConnectionFailure,
    NewMessage,
    NodeInfo,
    QuicP2p,
    UnsentUserMessage,
)


def read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Puts each typed line on ``lines``, then None at Ctrl-D. Runs on a daemon
    thread: a read blocked in it never keeps Ctrl-C from exiting (an executor
    thread would, until Enter), and os.read holds no lock that exit waits for."""
    buf = b""
    while True:
        try:
            chunk = os.read(sys.stdin.fileno(), 4096)
        except (OSError, ValueError, AttributeError):  # stdin closed or missing
            chunk = b""
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        for line in done:
            loop.call_soon_threadsafe(lines.put_nowait, line.decode(errors="replace"))
    loop.call_soon_threadsafe(lines.put_nowait, None)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", help="the other side's contact JSON")
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)

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
                elif isinstance(event, ConnectionFailure):
                    print(f"* {event.peer_addr} left ({event.error})", flush=True)

        printer = asyncio.create_task(show_events())
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        threading.Thread(target=read_stdin, args=(loop, lines), daemon=True).start()
        stop = asyncio.create_task(interrupted.wait())
        try:
            while True:
                typed = asyncio.create_task(lines.get())
                await asyncio.wait({typed, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop.done():
                    typed.cancel()
                    print("* interrupted", file=sys.stderr, flush=True)
                    return 130
                line = typed.result()
                if line is None:  # Ctrl-D
                    return 0
                peers = node.connected_peers()
                if not peers:
                    print("! no peer connected: not sent", flush=True)
                for peer in peers:
                    outcome = await node.send(peer, line.encode())
                    if isinstance(outcome, UnsentUserMessage):
                        print(f"! not delivered: {outcome.reason}", flush=True)
        finally:
            stop.cancel()
            printer.cancel()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
