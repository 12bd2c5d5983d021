"""A quic-p2p peer in its own process, for tests that kill a peer (SIGKILL).

    python tests/peer_process.py [--client] [--idle-timeout-ms N] [--lifetime S]

(tests start it with netutil.python_argv/python_env, so it imports the same
quic_p2p as the test run)

It starts a ``QuicP2p`` endpoint on 127.0.0.1 (a Node unless ``--client``)
and writes to stdout, one line each, flushed:

    ready <NodeInfo JSON>        once, when it serves
    msg <peer host>:<port> <first 16 bytes of the message, hex>
                                 for every user message the endpoint accepts
    event <EventName>            for every other event

``msg`` lines are written by a hook on the endpoint's event queue (``engine.events``), so each
is on stdout *before* the endpoint acknowledges the message to its sender:
a message the sender saw as sent has its ``msg`` line, even when this process
is SIGKILLed right after (a pipe keeps what was written before the kill). If
the endpoint's internals change and the hook cannot be installed, the lines
come from the event reader instead and ``hook missing`` is printed first, so
a test can tell the guarantee is weaker.

The process exits when stdin closes (the test's normal cleanup) or after
``--lifetime`` seconds (default 60), so it can never outlive a broken test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from quic_p2p import Config, NewMessage, OurType, QuicP2p


def _line(text: str) -> None:
    # One write(2) per line: nothing sits in a Python buffer at SIGKILL.
    os.write(1, (text + "\n").encode())


def _msg_line(ev: NewMessage) -> str:
    return f"msg {ev.peer_addr[0]}:{ev.peer_addr[1]} {ev.msg[:16].hex()}"


def _install_hook(ep: QuicP2p) -> bool:
    engine = getattr(ep, "engine", None)
    queue = getattr(engine, "events", None)
    push = getattr(queue, "push", None)
    if queue is None or push is None:
        return False

    def recording_push(event: object) -> None:
        if isinstance(event, NewMessage):
            _line(_msg_line(event))
        push(event)

    queue.push = recording_push  # type: ignore[method-assign]
    return True


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", action="store_true")
    parser.add_argument("--idle-timeout-ms", type=int, default=30_000)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    config = Config(
        ip="127.0.0.1",
        port=0,
        our_type=OurType.CLIENT if args.client else OurType.NODE,
        idle_timeout_msec=args.idle_timeout_ms,
    )
    async with QuicP2p(config) as ep:
        hooked = _install_hook(ep)
        if not hooked:
            _line("hook missing")

        async def read_events() -> None:
            async for ev in ep.events():
                if isinstance(ev, NewMessage):
                    if not hooked:
                        _line(_msg_line(ev))
                else:
                    _line(f"event {type(ev).__name__}")

        reader = asyncio.ensure_future(read_events())
        _line(f"ready {ep.node_info.to_json()}")
        try:
            await asyncio.wait_for(_stdin_closed(), args.lifetime)
        except TimeoutError:
            pass
        finally:
            reader.cancel()


if __name__ == "__main__":
    asyncio.run(main())
