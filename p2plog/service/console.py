"""The live console on the node's HTTP port: a static page (``console.html``: HTML and plain
JavaScript, no build step, nothing fetched from elsewhere) and the JSON it reads.

- ``GET /``: the page. It works from any node: the cluster view comes from the node it was
  loaded from, which asks its peers over the peer links.
- ``GET /api/cluster``: every member's status (this node's first), in the token's view.
- ``GET /api/cluster/stream``: the same as server-sent events, twice a second (a peer that
  does not answer within 0.4 s shows as unreachable).
- ``GET /api/tail?order=index|event&level=&source=&grep=``: the live tail as server-sent
  events (records with their late/early/absurd and clock_uncertain flags), as the websocket
  ``tail`` follows it (``service.reads``), with a keepalive comment every few seconds so a
  client that went away is noticed.
- ``GET /api/query?since=&until=&level=&source=&grep=&field=k=v&order=&limit=``: one page
  of ``query``.

With a tokens file the ``/api`` paths need a read-role token (``Authorization: Bearer``;
the page asks for one and keeps it in the tab's session storage); the page itself needs none.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import msgspec
import trio

from p2plog.net.http import HttpRequest, HttpResponse, Writer, text
from p2plog.security.tokens import Grant
from p2plog.service import reads
from p2plog.service.api import NodeApi
from p2plog.service.status import view
from p2plog.wire.client import Query, Tail, decode_request
from p2plog.wire.envelope import ProtocolError

CLUSTER_EVERY_S = 0.5
KEEPALIVE_S = 5.0
MAX_CONSOLE_TAILS = 16
JSON = "application/json"
EVENTS = "text/event-stream"


def page() -> bytes:
    return resources.files("p2plog.service").joinpath("console.html").read_bytes()


def _sse(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


class Console:
    def __init__(self, node: NodeApi) -> None:
        self.node = node
        self.tails = 0

    async def handle(self, req: HttpRequest, grant: Grant) -> HttpResponse:
        if req.path == "/api/cluster":
            return HttpResponse(200, json.dumps(await self._cluster(grant)).encode(), JSON)
        if req.path == "/api/cluster/stream":
            return HttpResponse(200, content_type=EVENTS, stream=lambda w: self._clusters(w, grant))
        if req.path == "/api/query":
            return await self._query(req)
        if req.path == "/api/tail":
            return self._tail(req)
        return text(404, f"no {req.path} here")

    async def _cluster(self, grant: Grant) -> dict[str, Any]:
        nodes = await self.node.cluster_status()
        shown = [n if not n.get("reachable") else view(n, grant) for n in nodes]
        for n, full in zip(shown, nodes, strict=True):
            n["reachable"] = full.get("reachable", False)
            n.setdefault("id", full.get("id"))
        return {"node": self.node.id, "cluster": self.node.cluster.name, "nodes": shown}

    async def _clusters(self, write: Writer, grant: Grant) -> None:
        while True:  # one view per period, however long the peers took to answer
            t0 = trio.current_time()
            await write(_sse("cluster", await self._cluster(grant)))
            await trio.sleep_until(t0 + CLUSTER_EVERY_S)

    async def _query(self, req: HttpRequest) -> HttpResponse:
        try:
            q = decode_request(_select(req, "query", limit=int(req.arg("limit") or 200)))
        except (ProtocolError, ValueError, msgspec.ValidationError) as e:
            return text(400, f"bad query: {e}")
        assert isinstance(q, Query)
        got = _Collect(self.node)
        await reads.query(got, q)
        return HttpResponse(200, json.dumps(got.fields.get("batch", {})).encode(), JSON)

    def _tail(self, req: HttpRequest) -> HttpResponse:
        try:
            t = decode_request(_select(req, "tail"))
        except (ProtocolError, ValueError, msgspec.ValidationError) as e:
            return text(400, f"bad tail: {e}")
        assert isinstance(t, Tail)
        if self.tails >= MAX_CONSOLE_TAILS:
            return text(
                503, f"{MAX_CONSOLE_TAILS} console tails are open, the most this node takes"
            )
        return HttpResponse(200, content_type=EVENTS, stream=lambda w: self._follow(w, t))

    async def _follow(self, write: Writer, t: Tail) -> None:
        self.tails += 1
        lock = trio.Lock()  # the tail and the keepalive write on one connection

        async def send(chunk: bytes) -> None:
            async with lock:
                await write(chunk)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_keepalive, send)
                await send(b": following\n\n")
                await reads.tail(_Stream(self.node, send), t)
                nursery.cancel_scope.cancel()
        finally:
            self.tails -= 1


async def _keepalive(send: Writer) -> None:
    while True:
        await trio.sleep(KEEPALIVE_S)
        await send(b": keepalive\n\n")


def _select(req: HttpRequest, kind: str, **extra: Any) -> dict[str, Any]:
    """The request's query string as a ``query``/``tail`` request map (checked as a client's)."""
    d: dict[str, Any] = {"v": 1, "kind": kind, "req": 0, **extra}
    for key in ("level", "source", "grep", "order"):
        v = req.arg(key)
        if v:
            d[key] = v
    from p2plog.client.commands import parse_time  # (here: the node never loads the client)

    for key in ("since", "until"):
        v = req.arg(key)
        if v:
            d[key] = parse_time(v)
    for key in ("from_index", "to_index"):
        v = req.arg(key)
        if v:
            d[key] = int(v)
    fields = []
    for f in req.query.get("field", []):
        k, eq, v = f.partition("=")
        if not eq or not k:
            raise ValueError(f"field filter {f!r}: expected KEY=VALUE")
        fields.append([k, v])
    if fields:
        d["fields"] = fields
    return d


class _Collect:
    """A read's session that keeps its one reply (a query page)."""

    def __init__(self, node: NodeApi) -> None:
        self.node = node
        self.fields: dict[str, dict[str, Any]] = {}

    async def send(self, kind: str, fields: dict[str, Any]) -> None:
        self.fields[kind] = fields


class _Stream:
    """A read's session whose replies go out as server-sent events."""

    def __init__(self, node: NodeApi, send: Writer) -> None:
        self.node = node
        self._send = send

    async def send(self, kind: str, fields: dict[str, Any]) -> None:
        await self._send(_sse(kind, fields))
