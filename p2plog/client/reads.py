"""The read side of ``Client``: paged queries and the NTP-style clock offset to a node.

Invariants:

- Read-your-writes: a query first waits (bounded) until the connected node has applied the
  highest index this client was acked, so it sees the client's own acked writes unless that
  wait times out.
- A query pages in at most ``QUERY_PAGE`` records per request and stops at ``limit``, at the
  node's ``done``, or when the node's ``next_index`` would not move forward.
- Every request goes through ``ReadClient.call``: idempotent, retried with failover.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from p2plog.client.connection import Reply
from p2plog.client.errors import ServerError
from p2plog.client.options import ClockOffset
from p2plog.client.tail import query_fields

QUERY_PAGE = 1000


class ReadClient(Protocol):
    """What a read uses of its ``Client``: retried idempotent requests, the index of the
    client's own last acked write and the wait for the node to apply it."""

    last_acked_index: int

    async def call(
        self, kind: str, fields: dict[str, Any], deadline_s: float | None = None
    ) -> Reply: ...

    async def wait_applied(self, index: int, timeout_s: float = 2.0) -> bool: ...


async def query_pages(
    client: ReadClient, limit: int, selectors: dict[str, Any]
) -> list[dict[str, Any]]:
    """Committed records matching ``selectors``, at most ``limit``, paging as needed."""
    fields = query_fields(selectors)
    await client.wait_applied(client.last_acked_index)
    out: list[dict[str, Any]] = []
    while len(out) < limit:
        page = min(QUERY_PAGE, limit - len(out))
        reply = await client.call("query", {**fields, "limit": page})
        if reply["kind"] != "batch":
            raise ServerError("bad_reply", f"query answered with {reply['kind']!r}")
        out.extend(reply["records"])
        nxt = int(reply["next_index"])
        if reply.get("done", True) or nxt <= (fields.get("from_index") or 1):
            break
        fields["from_index"] = nxt
    return out[:limit]  # event order: the node returns the stream's own order and flags


async def probe_clock_offset(client: ReadClient, samples: int) -> ClockOffset:
    """NTP-style offset to the connected node: the sample with the least round trip."""
    best: ClockOffset | None = None
    for _ in range(samples):
        t1 = time.time_ns()
        r = await client.call("time", {"t1": t1})
        t4 = time.time_ns()
        t2, t3 = int(r["t2"]), int(r["t3"])
        s = ClockOffset(((t2 - t1) + (t3 - t4)) // 2, (t4 - t1) - (t3 - t2))
        if best is None or s.delay_ns < best.delay_ns:
            best = s
    assert best is not None
    return best
