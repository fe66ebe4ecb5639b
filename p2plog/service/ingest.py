"""Records that came in over another protocol (OTLP, Loki push) stored as a websocket submit
stores them: each validated once (``record.validate``), then through ``NodeApi.submit`` in
submissions of at most ``MAX_BATCH_RECORDS`` and ``MAX_BATCH_BYTES``, run side by side, with
the ack the request asked for (``ack=quorum`` unless it said ``leader``). At most
``SUBMITS_AT_ONCE`` of one request's submissions are in flight, and a request holds at most
``MAX_PUSH_RECORDS`` (413 beyond): a request the node's in-flight bound could never take whole
would otherwise be refused 429 on every retry.

The outcome is what a push sender can act on: how many records are stored (an ack, or a
duplicate of one stored before: a retry), which were refused and why (they will never be
taken: the sender must not retry them), and, when any record was neither, a retryable refusal
(429 for backpressure, 503 for no leader, a timeout or storage trouble) that makes the sender
send the whole request again; the records already stored dedup on their ids then.

``IngestGate`` bounds the bytes of requests being stored at once on this node: a request that
finds no room is refused 429 before it is decoded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import trio

from p2plog.compat.common import MAX_PUSH_RECORDS, too_many
from p2plog.compat.otlp import Converted
from p2plog.net.http import HttpResponse
from p2plog.record import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    PER_RECORD_OVERHEAD,
    RecordError,
    validate,
)
from p2plog.replica.proposals import SubmitResult
from p2plog.service.api import NodeApi

MAX_INGEST_BYTES = 256 << 20  # decoded bytes of the requests being stored at once, per node
SUBMITS_AT_ONCE = 4  # a request's submissions in flight at once (<= 40,000 records, 4 MiB)
RETRY_AFTER_S = 1
_STATUS = {"overloaded": 429}  # every other failure is a 503 (unavailable, timeout, storage)


@dataclass(slots=True)
class Outcome:
    stored: int = 0
    rejected: list[str] = field(default_factory=list)  # "record i: why", never retryable
    retry: tuple[int, str] | None = None  # (429 or 503, why): send the request again


@dataclass(slots=True)
class IngestStats:
    """What the pushes of one node did, for ``/metrics``: requests by protocol and answer,
    records by protocol and outcome (stored: acked or a duplicate of one; rejected: never
    taken)."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    records: Counter[tuple[str, str]] = field(default_factory=Counter)

    def answered(self, protocol: str, r: HttpResponse) -> HttpResponse:
        self.requests[protocol, r.status] += 1
        return r


class IngestGate:
    """The bytes of ingest requests in flight on one node, bounded."""

    def __init__(self, max_bytes: int = MAX_INGEST_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.refused = 0

    def try_take(self, n: int) -> bool:
        if self.bytes and self.bytes + n > self.max_bytes:
            self.refused += 1
            return False
        self.bytes += n
        return True

    def give(self, n: int) -> None:
        self.bytes -= n


Chunk = tuple[list[int], list[bytes], list[bytes]]  # (positions, ids, bodies): one submission


@dataclass(slots=True)
class Prepared:
    """A push's records validated and packed into submissions (what stays in memory while
    they are stored: the encoded bodies, not the decoded records)."""

    chunks: list[Chunk]
    rejected: list[str]
    bytes: int  # of the bodies


def prepare(
    converted: list[Converted], node_id: str, received_ns: int, uncertain: bool
) -> Prepared:
    """Validate and pack (``record.validate`` as a websocket submit's records; a pure function,
    so the HTTP port runs it in a worker thread, off the Raft loop's)."""
    if len(converted) > MAX_PUSH_RECORDS:  # (the decoders count first: ``common.too_many``)
        raise too_many(len(converted))
    out = Prepared([], [], 0)
    size = 1 << 62
    for i, c in enumerate(converted):
        if c.record is None:
            out.rejected.append(f"record {i}: {c.error}")
            continue
        try:
            a = validate(c.record, node=node_id, received_ns=received_ns, clock_uncertain=uncertain)
        except RecordError as e:
            out.rejected.append(f"record {i}: {e}")
            continue
        n = len(a.body) + PER_RECORD_OVERHEAD
        if size + n > MAX_BATCH_BYTES or len(out.chunks[-1][0]) >= MAX_BATCH_RECORDS:
            out.chunks.append(([], [], []))
            size = 0
        where, ids, bodies = out.chunks[-1]
        where.append(i)
        ids.append(a.id)
        bodies.append(a.body)
        size += n
        out.bytes += n
    return out


async def store(node: NodeApi, prep: Prepared, ack: str) -> Outcome:
    """The submissions of ``prep`` through the node, ``SUBMITS_AT_ONCE`` at a time."""
    out = Outcome(rejected=list(prep.rejected))
    chunks = prep.chunks
    results: list[SubmitResult | None] = [None] * len(chunks)
    limiter = trio.CapacityLimiter(SUBMITS_AT_ONCE)

    async def submit(k: int) -> None:
        _, ids, bodies = chunks[k]
        async with limiter:
            results[k] = await node.submit(ids, bodies, ack)

    async with trio.open_nursery() as nursery:
        for k in range(len(chunks)):
            nursery.start_soon(submit, k)
    for (where, _, _), res in zip(chunks, results, strict=True):
        assert res is not None
        _account(node, out, where, res)
    out.rejected.sort(key=lambda m: int(m.split(":")[0].split()[1]))
    return out


def _account(node: NodeApi, out: Outcome, where: list[int], res: SubmitResult) -> None:
    if res.error is not None:
        code, msg = res.error
        node.rejected[code] += 1
        out.retry = out.retry or (_STATUS.get(code, 503), f"{code}: {msg}")
        return
    out.stored += res.acked
    for k in res.conflicts:
        out.rejected.append(
            f"record {where[k]}: its id is stored already with other content (a "
            f"log.record.uid used twice?)"
        )
    if res.acked + len(res.conflicts) < len(where):
        out.retry = out.retry or (503, "some records were not acknowledged; retry")
