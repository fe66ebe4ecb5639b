"""The write side of ``Client``: one frame sent until every record in it is acked or refused.

Invariants:

- A retry sends the SAME encoded records (same ids), only those not yet answered, so a record
  the cluster stored before the failure is acked ``dup=true`` with its original index, never
  stored twice.
- Every record of a frame ends with exactly one outcome: an ``Ack`` or a ``RecordFailure``
  (the record's own fault). A frame the cluster could not take raises ``SubmitFailed``
  carrying the acks it did get.
- ``last_acked_index`` only grows: it is the highest index this client was acked, what its
  reads wait for (read-your-writes) and where a tail "from now" starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from p2plog.client.batcher import Outcome
from p2plog.client.connection import Connection, Reply
from p2plog.client.errors import (
    Ack,
    ConnectionLost,
    RecordFailure,
    RecordsRejected,
    RequestTimeout,
    SubmitFailed,
    Unreachable,
)
from p2plog.client.options import (
    FAILOVER_CODES,
    RETRY_CODES,
    Backoff,
    ClientOptions,
    server_error,
)
from p2plog.client.records import Record, id_text
from p2plog.wire.envelope import RawList

NOT_ACKED = "not acknowledged"  # the node's per-record "not acknowledged; retry" error


class SubmitClient(Protocol):
    """What a frame's submit uses of its ``Client``: the live connection, the failover when
    that node fails, and the counters it keeps (retries, the highest acked index)."""

    options: ClientOptions
    retries: int
    last_acked_index: int

    async def connection(self) -> Connection: ...

    def failover(self, conn: Connection | None, reason: str) -> None: ...


async def submit_frame(
    client: SubmitClient, records: list[Record], datas: list[bytes], ack: str
) -> list[Outcome]:
    """One frame (``datas``: the records encoded), retried until every record is acked or
    refused; per-record outcomes."""
    out: list[Outcome | None] = [None] * len(records)
    todo = list(range(len(records)))
    b = Backoff(client.options)
    while todo and b.next():
        conn: Connection | None = None
        try:
            conn = await client.connection()
            reply = await conn.request(
                "submit",
                {
                    "ack": ack,
                    "records": RawList([datas[i] for i in todo]),
                    "clock_offset_ns": conn.clock_offset_ns,
                    "compact": True,
                },
                timeout_s=min(client.options.request_timeout_s, b.remaining_s()),
            )
        except (Unreachable, ConnectionLost, RequestTimeout) as e:
            client.failover(conn, str(e))
            client.retries += 1
            code = {Unreachable: "unreachable", ConnectionLost: "connection_lost"}
            await b.wait(str(e), code.get(type(e), "timeout"))
            continue
        if reply["kind"] == "error":
            err = server_error(reply)
            if err.code not in RETRY_CODES | FAILOVER_CODES:
                raise SubmitFailed(str(err), code=err.code, acks=acks_of(out))
            if err.code in FAILOVER_CODES:
                client.failover(conn, str(err))
            client.retries += 1
            await b.wait(str(err), err.code, err.retry_after_ms)
            continue
        todo = apply_ack(client, reply, records, todo, out)
        if todo:
            client.retries += 1
            await b.wait(f"{len(todo)} record(s) not acknowledged", "timeout")
    if todo:
        spent = client.options.submit_deadline_s - max(0.0, b.remaining_s())
        raise SubmitFailed(
            f"not stored after {b.attempt - 1} attempt(s) in {spent:.1f} s: {b.last}",
            code=b.last_code,
            acks=acks_of(out),
            reason=b.last,
        )
    return [x for x in out if x is not None]


def apply_ack(
    client: SubmitClient,
    reply: Reply,
    records: list[Record],
    todo: list[int],
    out: list[Outcome | None],
) -> list[int]:
    """Fill ``out`` from an ``ack`` reply; returns the records to send again."""
    for i0, n, index0, term in reply.get("runs", []):
        for k in range(n):
            pos = todo[i0 + k]
            out[pos] = Ack(id_text(records[pos]["id"]), index0 + k, term, False)
        client.last_acked_index = max(client.last_acked_index, index0 + n - 1)
    for a in reply.get("acks", []):
        pos = todo[a["i"]]
        got = Ack(str(a["id"]), int(a["index"]), int(a["term"]), bool(a["dup"]))
        out[pos] = got
        client.last_acked_index = max(client.last_acked_index, got.index)
    for e in reply.get("errors", []):
        pos = todo[e["i"]]
        text = str(e["error"]).replace(f"record {e['i']}:", f"record {pos}:", 1)
        # "not acknowledged; retry": the node lost track of it (leadership moved); send
        # it again with the same id. Any other per-record error is the record's fault.
        if NOT_ACKED not in text:
            out[pos] = RecordFailure(pos, id_text(records[pos]["id"]), text)
    return [i for i in todo if out[i] is None]


def renumber(x: Outcome, pos: int) -> Outcome:
    """A frame's outcome with the record's position in the whole submit."""
    if isinstance(x, RecordFailure) and x.i != pos:
        return RecordFailure(pos, x.id, x.error.replace(f"record {x.i}:", f"record {pos}:", 1))
    return x


def acks_of(out: Sequence[Outcome | None]) -> list[Ack | None]:
    return [x if isinstance(x, Ack) else None for x in out]


def collect(outcomes: Sequence[Outcome | None]) -> list[Ack]:
    """The acks of a whole submit, in order; ``RecordsRejected`` if any record has none."""
    errors = [x for x in outcomes if isinstance(x, RecordFailure)]
    if errors or any(x is None for x in outcomes):
        detail = "; ".join(e.error for e in errors[:3]) + (" ..." if len(errors) > 3 else "")
        raise RecordsRejected(
            f"{len(errors)} of {len(outcomes)} record(s) rejected: {detail}",
            acks=acks_of(outcomes),
            errors=errors,
        )
    return [x for x in outcomes if isinstance(x, Ack)]
