"""A scripted stand-in for a node's /client endpoint, to drive the client into the replies a
real cluster gives only under faults (unavailable, lost acks, garbage frames)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cbor2
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from p2plog.wire.envelope import encode

Reply = tuple[str, dict[str, Any]] | bytes
Script = Callable[[dict[str, Any]], list[Reply]]


class FakeNode:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.address = ""

    async def start(self, nursery: trio.Nursery) -> str:
        server = await nursery.start(serve_websocket, self._handle, "127.0.0.1", 0, None)
        self.address = f"127.0.0.1:{server.port}"
        return self.address

    async def _handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                msg = cbor2.loads(await ws.get_message())
                if msg.get("kind") == "time":
                    # Answered like a real node, outside the script: the client probes its
                    # clock offset right after connecting.
                    now = time.time_ns()
                    reply = {"req": msg["req"], "t1": msg["t1"], "t2": now, "t3": now}
                    await ws.send_message(encode("time", reply))
                    continue
                self.requests.append(msg)
                for reply in self.script(msg):
                    if isinstance(reply, bytes):
                        await ws.send_message(reply)
                    else:
                        kind, fields = reply
                        await ws.send_message(encode(kind, {"req": msg["req"], **fields}))
        except ConnectionClosed:
            pass


def ack_all(msg: dict[str, Any], start_index: int = 1) -> Reply:
    acks = [
        {"i": i, "id": r["id"], "index": start_index + i, "term": 1, "dup": False}
        for i, r in enumerate(msg["records"])
    ]
    return ("ack", {"acks": acks, "errors": []})
