"""A request/response service: a Node answers JSON requests from a Client.

    python examples/request_response.py

Runs the service and a client on 127.0.0.1 in one process. Each request
carries an id; the reply echoes it, so answers are matched to questions even
when several are in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from quic_p2p import Config, NewMessage, OurType, Peer, QuicP2p, SentUserMessage


async def serve(server: QuicP2p) -> None:
    """Answers {"id", "op", "args"} with {"id", "result"} or {"id", "error"}."""
    ops = {"add": lambda a: sum(a), "upper": lambda a: " ".join(a).upper()}
    async for event in server.events():
        if isinstance(event, NewMessage):
            req = json.loads(event.msg)
            try:
                reply = {"id": req["id"], "result": ops[req["op"]](req["args"])}
            except (KeyError, TypeError) as exc:
                reply = {"id": req.get("id"), "error": f"bad request: {exc}"}
            # Back to the peer that asked: its key, wherever it is now.
            await server.send(
                Peer.client(event.peer_addr, event.peer_id), json.dumps(reply).encode()
            )


class RpcClient:
    def __init__(self, client: QuicP2p, server: Peer) -> None:
        self.client, self.server = client, server
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, object]]] = {}

    async def receive(self) -> None:
        async for event in self.client.events():
            if isinstance(event, NewMessage):
                reply = json.loads(event.msg)
                self.waiting.pop(reply["id"]).set_result(reply)

    async def call(self, op: str, *args: object) -> dict[str, object]:
        rid = next(self.ids)
        # Keep our own reference: the reply can arrive before send() returns
        # (send waits for the server's acknowledgement, the reply may beat it).
        answer = self.waiting[rid] = asyncio.get_running_loop().create_future()
        request = json.dumps({"id": rid, "op": op, "args": args}).encode()
        outcome = await self.client.send(self.server, request)
        if not isinstance(outcome, SentUserMessage):
            self.waiting.pop(rid, None)
            raise ConnectionError(f"request {rid} not delivered: {outcome.reason}")
        return await asyncio.wait_for(answer, 10)


async def main() -> None:
    async with (
        QuicP2p(Config(ip="127.0.0.1")) as server,
        QuicP2p(Config(ip="127.0.0.1", our_type=OurType.CLIENT)) as client,
    ):
        service = asyncio.create_task(serve(server))
        peer = await client.connect_to(server.node_info)
        rpc = RpcClient(client, peer)
        receiver = asyncio.create_task(rpc.receive())
        answers = await asyncio.gather(
            rpc.call("add", 1, 2, 3), rpc.call("upper", "hello", "p2p"), rpc.call("nope")
        )
        for answer in answers:
            print(answer)
        service.cancel()
        receiver.cancel()


if __name__ == "__main__":
    asyncio.run(main())
