"""The event-time ordered stream of committed records, and its live subscribers.

Every node feeds one ``ReorderBuffer`` with every applied record and every leader time tick
(which moves the watermark when no records come), in log order. The stream is therefore a
pure function of the committed log: every node emits the same records in the same order with
the same ``late``/``early``/``absurd`` flags. ``feed_entry`` is the one rule for how an entry
feeds a buffer; the query replay (``reads.event_scan``) uses it too, so the two cannot drift
apart. Subscribers get what is emitted from the moment they subscribe, through a ``TailHub``
(bounded per-subscriber buffers; a reader that falls behind is cut off, not waited for).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

from p2plog.entry import BatchRef, entry_tick_ts, parse_batch
from p2plog.order.reorder import Emitted, ReorderBuffer
from p2plog.raft.types import Entry
from p2plog.record import NO_TS, StoredRecord
from p2plog.runtime.tail_hub import TailHub
from p2plog.state.applier import Applied

IsDup = Callable[[int], bool]


def _never(_index: int) -> bool:
    return False


def feed_entry(
    buf: ReorderBuffer[BatchRef],
    e: Entry,
    *,
    dup: IsDup = _never,
    lo: int = 0,
    hi: int | None = None,
) -> list[Emitted[BatchRef]]:
    """Feed one committed entry, record by record in index order: the records of ``[lo, hi)``
    as records (keyed from the body's binary prefix, no CBOR decode), the others only as the
    watermark move they cause (records outside a replayed range). Duplicates feed nothing; an
    absurd record moves nothing; a leader tick moves the watermark. An entry fed whole with
    no duplicate goes in as one batch (``ReorderBuffer.add_batch``: the same result)."""
    b = parse_batch(e.data)
    if b is None:
        t = entry_tick_ts(e.data)
        return [] if t is None else buf.add_tick(t)
    ingest, base, n = b.ingest_ts, b.base, b.n
    offsets = b.offsets()
    ref = BatchRef(e.term, b, offsets)
    tcs = b.event_times(offsets)
    keys = [ingest if t == NO_TS else t for t in tcs]
    sizes = b.lengths()
    indexes = range(base, base + n)
    whole = lo <= base and (hi is None or base + n <= hi)
    if whole and (dup is _never or not any(map(dup, indexes))):
        return buf.add_batch(indexes, keys, ingest, repeat(ref, n), sizes)
    out: list[Emitted[BatchRef]] = []
    for k, i in enumerate(indexes):
        if dup(i):
            continue
        tc: int | None = None if tcs[k] == NO_TS else tcs[k]
        if lo <= i and (hi is None or i < hi):
            buf.add_record(i, tc, ingest, ref, sizes[k], out)
        elif not buf.is_absurd(tc, ingest):
            out += buf.add_tick(ingest)
    return out


def watermark_time(
    buf: ReorderBuffer[BatchRef], e: Entry, *, dup: IsDup = _never, below: int | None = None
) -> int | None:
    """The time this entry (only its records before ``below``) advances the stream's watermark
    to, or None if it does not."""
    b = parse_batch(e.data)
    if b is None:
        return entry_tick_ts(e.data)  # a leader tick, or None for a no-op
    for r in b.records(e.term):
        if below is not None and r.index >= below:
            break
        # An absurd record is emitted at once, flagged; it must not drag the watermark along.
        if not dup(r.index) and not buf.is_absurd(r.ts_corrected, b.ingest_ts):
            return b.ingest_ts
    return None


class EventStream:
    def __init__(self, *, reorder_window_ms: int, max_records: int, max_bytes: int) -> None:
        self.buffer: ReorderBuffer[BatchRef] = ReorderBuffer(
            reorder_window_ms=reorder_window_ms, max_records=max_records, max_bytes=max_bytes
        )
        self.hub: TailHub[Emitted[BatchRef]] = TailHub()

    def feed(self, items: Sequence[tuple[Entry, Applied | None]]) -> None:
        self.buffer.discard_output = not self.hub.subs
        out: list[Emitted[BatchRef]] = []
        for e, a in items:
            if a is not None and a.dups:
                dups = {a.batch.base + k for k in a.dups}
                out += feed_entry(self.buffer, e, dup=dups.__contains__)
            else:
                out += feed_entry(self.buffer, e)
        if out:
            self.hub.publish(
                out, sum(len(em.payload.batch.data) // em.payload.batch.n for em in out)
            )

    def wants_time_tick(self) -> bool:
        """Records are waiting for the watermark: the leader should commit its time."""
        return self.buffer.depth > 0

    def statistics(self, now_ns: int) -> dict[str, Any]:
        st = self.buffer.statistics(now_ns)
        st["subscribers"] = len(self.hub.subs)
        return st


def emitted_record(em: Emitted[BatchRef]) -> StoredRecord:
    return em.payload.rec(em.index).decode()


def emitted_json(em: Emitted[BatchRef], r: StoredRecord) -> dict[str, Any]:
    d = r.to_json()
    d["late"] = em.late or em.early or em.absurd
    d["early"] = em.early
    d["absurd"] = em.absurd
    return d
