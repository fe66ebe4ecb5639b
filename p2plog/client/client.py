"""``p2plog.Client``: the async client. Talks to any node of a list, fails over between them.

Theory of operation:

- One connection at a time, to the first address of the list that answers; on a connection
  error (refused, lost, a request timing out, ``shutting_down``) the next address is tried.
- Retries: ``unavailable``, ``overloaded``, ``timeout``, ``storage_failed``, ``shutting_down``
  and connection loss are retried with exponential backoff and jitter (at least the node's
  ``retry_after_ms``), under ``max_attempts`` and a total ``submit_deadline_s``. A retry sends
  the SAME record ids, so a record the cluster stored before the failure is acked ``dup=true``
  with its original index, never stored twice.
- Coalescing: ``submit`` of one record goes through the ``Batcher`` (short linger, frames cut
  at the limits of ``p2plog.record``); a list is cut into frames and sent in order.
- Many requests share the connection (``req`` matching in ``Connection``).
- All background tasks (connections, batcher, frames) live in the client's nursery, opened by
  ``open_client``/``Client.connect``: leaving the ``async with`` stops them.

This module holds the connection, failover and request retries; one frame's submit lives in
``p2plog.client.submit``, paged queries and the clock offset in ``p2plog.client.reads``, tails
in ``p2plog.client.tail``: each takes the ``Client`` through a ``Protocol`` of what it uses,
so none of them imports this module.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from p2plog.client.batcher import Batcher, Outcome
from p2plog.client.connection import Connection, Reply
from p2plog.client.dial import Dial, dial_for
from p2plog.client.errors import (
    Ack,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    RecordFailure,
    RequestTimeout,
    SubmitFailed,
    Unreachable,
)
from p2plog.client.options import (
    FAILOVER_CODES,
    RETRY_CODES,
    Backoff,
    ClientOptions,
    ClientStatistics,
    ClockOffset,
    server_error,
)
from p2plog.client.reads import probe_clock_offset, query_pages
from p2plog.client.records import (
    Record,
    UnencodableRecord,
    addresses_of,
    encode_record,
    ensure_id,
    frames,
    id_text,
)
from p2plog.client.submit import collect, renumber, submit_frame
from p2plog.client.tail import TailStream
from p2plog.config import Config

OFFSET_PROBE_TIMEOUT_S = 1.0


class Client:
    def __init__(
        self,
        addresses: list[str],
        options: ClientOptions,
        nursery: trio.Nursery,
        dial: Dial | None = None,
    ) -> None:
        self.addresses = addresses
        self.options = options
        self.dial = dial or Dial(None)
        self._nursery = nursery
        self._conn: Connection | None = None
        self._next = 0
        self._dial_lock = trio.Lock()
        self._closed = False
        self._frames_direct = 0
        self._records_direct = 0
        self.retries = 0
        self.failovers = 0
        self.connects = 0
        self.last_acked_index = 0  # highest index this client was acked (read-your-writes)
        self._applied_seen: tuple[Connection | None, int] = (None, 0)
        o = options
        self._batcher = Batcher(
            self._submit_frame,
            linger_s=o.linger_ms / 1000,
            max_records=o.frame_records,
            max_bytes=o.frame_bytes,
            max_inflight=o.max_inflight_frames,
            queue_records=o.queue_records,
        )

    @classmethod
    def connect(
        cls,
        nodes: str | Path | Config | Sequence[str],
        options: ClientOptions | None = None,
        *,
        lazy: bool = False,
    ) -> AbstractAsyncContextManager[Client]:
        """``async with Client.connect([...]) as c``: same as ``open_client``."""
        return open_client(nodes, options, lazy=lazy)

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            frames_sent=self._frames_direct + self._batcher.frames,
            records_sent=self._records_direct + self._batcher.records,
            coalesced_frames=self._batcher.frames,
            retries=self.retries,
            failovers=self.failovers,
            connects=self.connects,
            address=self._conn.address if self._conn is not None and self._conn.alive else None,
        )

    # -------------------------------------------------------------- connection

    async def connection(self) -> Connection:
        """The live connection, dialing the addresses in turn if there is none."""
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        async with self._dial_lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            if self._conn is not None and self._conn.alive:
                return self._conn
            if self._conn is not None:
                # It died under us (node stopped, link lost): start with the next node.
                self.failover(self._conn, self._conn.closed_reason or "connection lost")
            tried: list[tuple[str, str]] = []
            n = len(self.addresses)
            for k in range(n):
                pos = (self._next + k) % n
                c = Connection(
                    self.addresses[pos],
                    connect_timeout_s=self.options.connect_timeout_s,
                    max_pending=self.options.max_pending,
                    dial=self.dial,
                )
                try:
                    self._conn = await self._nursery.start(c.run)
                except ConnectError as e:
                    tried.append((e.address, e.reason))
                    continue
                self._next = pos
                self.connects += 1
                await self._measure_offset(c)
                return c
            raise Unreachable(tried)

    async def _measure_offset(self, conn: Connection, probes: int = 3) -> None:
        """Our clock's offset to the node (best of a few four-timestamp probes), sent with every
        submit so the node can correct the records' ``ts``. A node that does not answer in time
        leaves the offset at 0: the records then carry the producer's uncorrected time."""
        best: tuple[int, int] | None = None
        with trio.move_on_after(OFFSET_PROBE_TIMEOUT_S):
            for _ in range(probes):
                t1 = time.time_ns()
                try:
                    r = await conn.request("time", {"t1": t1}, timeout_s=OFFSET_PROBE_TIMEOUT_S)
                except (ConnectionLost, RequestTimeout):
                    return  # the submit that follows will see the dead connection and fail over
                t4 = time.time_ns()
                if r.get("kind") != "time":
                    return
                t2, t3 = int(r["t2"]), int(r["t3"])
                delay = (t4 - t1) - (t3 - t2)
                if best is None or delay < best[1]:
                    best = (((t2 - t1) + (t3 - t4)) // 2, delay)
        if best is not None:
            conn.clock_offset_ns = best[0]

    def failover(self, conn: Connection | None, reason: str) -> None:
        """Drop ``conn`` (if it is still the current one); the next dial tries the next node."""
        if conn is not None and conn is self._conn:
            conn.close(reason)
            self._conn = None
            self._next = (self._next + 1) % len(self.addresses)
            self.failovers += 1

    async def call(
        self, kind: str, fields: dict[str, Any], deadline_s: float | None = None
    ) -> Reply:
        """An idempotent request (query page, status, time), retried with failover. Raises
        ``ServerError`` for an error reply retrying cannot fix, ``Unreachable`` or
        ``RequestTimeout`` when attempts or the deadline run out."""
        b = Backoff(self.options, deadline_s)
        while b.next():
            conn: Connection | None = None
            try:
                conn = await self.connection()
                reply = await conn.request(
                    kind, fields, timeout_s=min(self.options.request_timeout_s, b.remaining_s())
                )
            except (Unreachable, ConnectionLost, RequestTimeout) as e:
                self.failover(conn, str(e))
                self.retries += 1
                await b.wait(str(e), "unreachable" if isinstance(e, Unreachable) else "timeout")
                continue
            if reply["kind"] != "error":
                return reply
            err = server_error(reply)
            if err.code not in RETRY_CODES | FAILOVER_CODES:
                raise err
            if err.code in FAILOVER_CODES:
                self.failover(conn, str(err))
            self.retries += 1
            await b.wait(str(err), err.code, err.retry_after_ms)
        if b.last_code == "unreachable":
            raise Unreachable([(a, b.last) for a in self.addresses])
        raise RequestTimeout(f"{kind}: gave up after {b.attempt - 1} attempts: {b.last}")

    # ------------------------------------------------------------------ submit

    async def submit(self, records: Record | Sequence[Record], ack: str = "quorum") -> list[Ack]:
        """Store records; returns one ``Ack`` per record, in order. A record without ``id`` gets
        one (in place). Raises ``RecordsRejected`` if some records were invalid (the others
        are stored; see ``.acks``), ``SubmitFailed`` if the cluster could not take them."""
        if ack not in ("quorum", "leader"):
            raise ValueError(f"ack must be 'quorum' or 'leader', got {ack!r}")
        if self._closed:
            raise ClientClosed("the client is closed")
        if isinstance(records, dict):
            ensure_id(records)
            timeout = 2 * self.options.submit_deadline_s + self.options.linger_ms / 1000 + 1
            out = await self._batcher.submit_one(records, ack, timeout_s=timeout)
            return collect([out])
        recs = list(records)
        outcomes: list[Outcome | None] = [None] * len(recs)
        good: list[int] = []  # positions of the records that encode
        datas: list[bytes] = []
        for pos, r in enumerate(recs):
            ensure_id(r)
            try:
                datas.append(encode_record(r))
            except UnencodableRecord as e:
                outcomes[pos] = RecordFailure(pos, id_text(r["id"]), f"record {pos}: {e}")
                continue
            good.append(pos)
        o = self.options
        for start, end in frames(datas, o.frame_records, o.frame_bytes):
            where = good[start:end]
            self._frames_direct += 1
            self._records_direct += len(where)
            try:
                got = await self._submit_frame([recs[p] for p in where], datas[start:end], ack)
            except SubmitFailed as e:
                acks: list[Ack | None] = [x if isinstance(x, Ack) else None for x in outcomes]
                for p, a in zip(where, e.acks, strict=False):
                    acks[p] = a
                raise SubmitFailed(
                    str(e), code=e.code, acks=acks, errors=e.errors, reason=e.reason
                ) from None
            for p, x in zip(where, got, strict=True):
                outcomes[p] = renumber(x, p)
        return collect(outcomes)

    async def _submit_frame(
        self, records: list[Record], datas: list[bytes], ack: str
    ) -> list[Outcome]:
        """One frame, retried until every record is acked or refused (``submit.py``)."""
        return await submit_frame(self, records, datas, ack)

    # ------------------------------------------------------------------- reads

    async def query(self, *, limit: int = 1000, **selectors: Any) -> list[dict[str, Any]]:
        """Committed records matching the selectors (``from_index, to_index, since, until,
        level, source, grep, fields ({key: value}, checked on the node), order``), at most
        ``limit``, paging as needed."""
        return await query_pages(self, limit, selectors)

    async def wait_applied(self, index: int, timeout_s: float = 2.0) -> bool:
        """Wait (bounded) until the connected node has applied ``index``: a follower applies
        a commit a heartbeat after the leader acked it, and this client must read its own
        writes. False if it did not within ``timeout_s`` (the read then may be stale)."""
        conn, seen = self._applied_seen
        if index <= 0 or (conn is self._conn and seen >= index):
            return True
        with trio.move_on_after(timeout_s):
            while True:
                st = await self.call("status", {})
                applied = int(st["node"]["record_index"])
                self._applied_seen = (self._conn, applied)
                if applied >= index:
                    return True
                await trio.sleep(0.005)
        return False

    def tail(self, **selectors: Any) -> TailStream:
        """Live records from ``from_index`` (default: from now), following until closed:
        ``async with client.tail(level="warning") as t: async for rec in t: ...``"""
        return TailStream(self, selectors)

    async def status(self) -> dict[str, Any]:
        reply = await self.call("status", {})
        node: dict[str, Any] = reply["node"]
        return node

    async def clock_offset(self, samples: int = 5) -> ClockOffset:
        """NTP-style offset to the connected node: the sample with the least round trip."""
        return await probe_clock_offset(self, samples)

    async def aclose(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close("client closed")
        self._nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_client(
    nodes: str | Path | Config | Sequence[str],
    options: ClientOptions | None = None,
    *,
    lazy: bool = False,
    token: str | None = None,
) -> AsyncIterator[Client]:
    """A connected client (``lazy``: connect on first use). ``nodes``: ``host:port`` (or
    ``wss://host:port``) addresses, a peers.toml path or a Config. ``token``: the client's
    token (else ``options.token``, else ``P2PLOG_TOKEN``). Raises ``Unreachable`` if no node
    answers (not lazy), ``AuthError`` if a node refuses the token."""
    addresses = addresses_of(nodes)
    opts = options or ClientOptions()
    if token is not None:
        opts = replace(opts, token=token)
    dial = dial_for(nodes, opts, addresses)
    try:
        async with trio.open_nursery() as nursery:
            client = Client(addresses, opts, nursery, dial)
            nursery.start_soon(client._batcher.run)
            try:
                if not lazy:
                    await client.connection()
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as eg:
        # Let callers catch what they expect (Unreachable, their own errors), as
        # trio-websocket's open_websocket does: unwrap a lone exception.
        rest = eg.split(trio.Cancelled)[1]
        if rest is not None and len(rest.exceptions) == 1:
            only = rest.exceptions[0]
            if not isinstance(only, BaseExceptionGroup):
                raise only from None
        raise
