"""A request/response service: a Node answers JSON requests from a Client.

    python examples/request_response.py

Runs the service and a client on 127.0.0.1 in one process. The service
handles the protocol "example/calc/1" with a request handler: each
``request()`` is a stream of its own, so replies need no ids to be matched
and many can be in flight at once. A request the service cannot parse gets an
error in the reply; one for a protocol nobody serves raises ``RequestError``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from quic_p2p import Config, OurType, Peer, QuicP2p, RequestError

PROTOCOL = "example/calc/1"
OPS: dict[str, Any] = {"add": lambda a: sum(a), "upper": lambda a: " ".join(a).upper()}


async def calc(peer: Peer, data: bytes) -> bytes:
    """Answers {"op", "args"} with {"result"} or {"error"}."""
    try:
        req = json.loads(data)
        reply = {"result": OPS[req["op"]](req["args"])}
    except (KeyError, TypeError, ValueError) as exc:
        reply = {"error": f"bad request: {exc!r}"}
    return json.dumps(reply).encode()


async def call(client: QuicP2p, server: Peer, op: str, *args: object) -> dict[str, Any]:
    request = json.dumps({"op": op, "args": args}).encode()
    reply: dict[str, Any] = json.loads(await client.request(server, request, PROTOCOL, timeout=10))
    return reply


async def main() -> None:
    async with (
        QuicP2p(Config(ip="127.0.0.1")) as server,
        QuicP2p(Config(ip="127.0.0.1", our_type=OurType.CLIENT)) as client,
    ):
        server.set_request_handler(PROTOCOL, calc)
        peer = await client.connect_to(server.node_info)
        answers = await asyncio.gather(
            call(client, peer, "add", 1, 2, 3),
            call(client, peer, "upper", "hello", "p2p"),
            call(client, peer, "nope"),
        )
        for answer in answers:
            print(answer)
        try:
            await client.request(peer, b"{}", "example/unknown/1", timeout=10)
        except RequestError as exc:
            print({"refused": exc.reason.cause.name})


if __name__ == "__main__":
    asyncio.run(main())
