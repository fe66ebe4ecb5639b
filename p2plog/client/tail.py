"""``TailStream``: live records as an async iterator that survives connection loss.

The stream remembers the next index it expects. Whenever its subscription ends (the
connection drops, the node says ``end behind``, or the local buffer overflows) it subscribes
again from that index, on the same node if the connection lives and on the next node if not,
so the reader sees every matching committed record once and in index order. A tail "from now"
first asks the node's applied index, so even the first reconnect resumes exactly.
"""

from __future__ import annotations

import json
from collections import deque
from types import TracebackType
from typing import Any, Protocol

from p2plog.client.connection import Connection, Stream
from p2plog.client.errors import (
    ClientError,
    ConnectionLost,
    RequestTimeout,
    ServerError,
    StreamOverflow,
    Unreachable,
)
from p2plog.client.options import Backoff, ClientOptions

SELECTORS = (
    "from_index",
    "to_index",
    "since",
    "until",
    "level",
    "source",
    "grep",
    "fields",
    "order",
)
RETRY_CODES = frozenset({"unavailable", "overloaded", "timeout", "shutting_down"})


def query_fields(selectors: dict[str, Any]) -> dict[str, Any]:
    """The wire fields of query/tail selectors; unknown names are a programming error."""
    unknown = set(selectors) - set(SELECTORS)
    if unknown:
        raise TypeError(f"unknown selector(s) {sorted(unknown)}; use {', '.join(SELECTORS)}")
    out = {k: v for k, v in selectors.items() if v is not None}
    if "fields" in out:  # {key: value}: each value as text (JSON for numbers and booleans)
        out["fields"] = [
            [k, v if isinstance(v, str) else json.dumps(v)] for k, v in out["fields"].items()
        ]
        if not out["fields"]:
            del out["fields"]
    return out


class TailClient(Protocol):
    """What a ``TailStream`` uses of its ``Client``: a connection to the node it reads from,
    the failover when that node is lost, and the index of the client's own last acked write
    (a tail "from now" starts after it)."""

    options: ClientOptions
    last_acked_index: int

    async def connection(self) -> Connection: ...

    def failover(self, conn: Connection | None, reason: str) -> None: ...


class TailStream:
    def __init__(self, client: TailClient, selectors: dict[str, Any]) -> None:
        sel = dict(selectors)
        self.limit: int | None = sel.pop("limit", None)
        fields = query_fields(sel)
        self.to_index: int | None = fields.pop("to_index", None)
        self.next_index: int | None = fields.pop("from_index", None)
        self._fields = fields
        self._client = client
        self._stream: Stream | None = None
        self._buf: deque[dict[str, Any]] = deque()
        self._count = 0
        self._done = False
        self.subscriptions = 0

    def __aiter__(self) -> TailStream:
        return self

    async def __aenter__(self) -> TailStream:
        # Subscribe now, not at the first read: "from now" means from entering the block.
        await self._subscribe()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._done = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    async def __anext__(self) -> dict[str, Any]:
        while True:
            if self._buf and not self._done:
                rec = self._buf.popleft()
                if self.to_index is not None and rec["index"] > self.to_index:
                    await self.aclose()
                    raise StopAsyncIteration
                self._count += 1
                if self.limit is not None and self._count >= self.limit:
                    await self.aclose()
                return rec
            if self._done:
                raise StopAsyncIteration
            if self._stream is None:
                await self._subscribe()
            assert self._stream is not None
            try:
                frame = await self._stream.receive()
            except (ConnectionLost, StreamOverflow) as e:
                stream, self._stream = self._stream, None
                await stream.aclose()
                if isinstance(e, ConnectionLost):
                    self._client.failover(stream.conn, str(e))
                continue
            await self._on_frame(frame)

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["kind"]
        if kind == "batch":
            if self._fields.get("order") == "event":
                # Event-time order is not index order; the node's stream is already exactly
                # once per subscription, and a resubscription follows it from now.
                self._buf.extend(frame["records"])
                return
            nxt = self.next_index or 1
            for rec in frame["records"]:
                if rec["index"] >= nxt:
                    self._buf.append(rec)
                    nxt = rec["index"] + 1
            self.next_index = nxt
            return
        stream, self._stream = self._stream, None
        assert stream is not None
        await stream.aclose()
        if kind == "end":
            # The node cut us off (e.g. "behind"); resume where it says, on the same node.
            resume = frame.get("resume_index")
            if isinstance(resume, int):
                self.next_index = max(self.next_index or 1, resume)
        elif kind == "error":
            code = str(frame.get("code"))
            if code not in RETRY_CODES:
                self._done = True
                raise ServerError(code, str(frame.get("msg", "")))
            self._client.failover(stream.conn, f"{code}: {frame.get('msg', '')}")

    async def _subscribe(self) -> None:
        opts = self._client.options
        b = Backoff(opts, opts.tail_reconnect_s, max_attempts=1_000_000)
        while b.next():
            conn: Connection | None = None
            timeout = min(opts.request_timeout_s, max(0.1, b.remaining_s()))
            try:
                conn = await self._client.connection()
                if self.next_index is None:
                    reply = await conn.request("status", {}, timeout_s=timeout)
                    if reply["kind"] == "error":
                        raise ConnectionLost(f"status: {reply.get('msg')}")
                    # "From now" is after the node's last applied record, and never before
                    # what this client was acked already (a follower may not have applied
                    # the client's last write yet): the tail does not replay the client's
                    # own acked writes.
                    node_index = int(reply["node"]["record_index"])
                    self.next_index = max(node_index, self._client.last_acked_index) + 1
                fields = {**self._fields, "from_index": self.next_index}
                self._stream = await conn.open_stream("tail", fields, timeout_s=timeout)
                self.subscriptions += 1
                return
            except (Unreachable, ConnectionLost, RequestTimeout) as e:
                self._client.failover(conn, str(e))
                await b.wait(str(e), "unreachable")
        self._done = True
        raise ClientError(
            f"tail: no node answered for {opts.tail_reconnect_s:.0f} s; last error: {b.last}"
        )
