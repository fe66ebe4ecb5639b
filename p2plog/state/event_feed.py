"""How committed entries feed the event-time ordered stream (one rule for every reader).

Every node feeds one ``ReorderBuffer`` with every applied record and every leader time tick
(which moves the watermark when no records come), in log order. The stream is therefore a
pure function of the committed log: every node emits the same records in the same order with
the same ``late``/``early``/``absurd`` flags. ``feed_entry`` is the one rule for how an entry
feeds a buffer: the replica's live stream (``replica.Replica``) and the query replay
(``state.scans.event_scan``) both use it, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from typing import Any

from p2plog.order.reorder import Emitted, ReorderBuffer
from p2plog.raft.types import Entry
from p2plog.record import NO_TS
from p2plog.state.applier import Applied
from p2plog.state.entry import Batch, BatchRef, entry_tick_ts, parse_batch
from p2plog.state.stored import StoredRecord

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
    offsets = b.offsets()
    return _feed_batch(buf, e.term, b, offsets, b.event_times(offsets), dup, lo, hi)


def feed_applied(
    buf: ReorderBuffer[BatchRef], e: Entry, a: Applied | None
) -> list[Emitted[BatchRef]]:
    """``feed_entry`` for an entry just applied (``a``: what the applier made of it): the
    batch as the applier parsed it, its duplicates skipped. The live stream's path."""
    if a is None:
        t = entry_tick_ts(e.data)
        return [] if t is None else buf.add_tick(t)
    dup: IsDup = _never
    if a.dups:
        dups = {a.batch.base + k for k in a.dups}
        dup = dups.__contains__
    return _feed_batch(buf, e.term, a.batch, a.offsets, a.event_times, dup, 0, None)


def _feed_batch(
    buf: ReorderBuffer[BatchRef],
    term: int,
    b: Batch,
    offsets: list[int],
    tcs: list[int],
    dup: IsDup,
    lo: int,
    hi: int | None,
) -> list[Emitted[BatchRef]]:
    ingest, base, n = b.ingest_ts, b.base, b.n
    ref = BatchRef(term, b, offsets)
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


def emitted_record(em: Emitted[BatchRef]) -> StoredRecord:
    return em.payload.rec(em.index).decode()


def emitted_json(em: Emitted[BatchRef], r: StoredRecord) -> dict[str, Any]:
    d = r.to_json()
    d["late"] = em.late or em.early or em.absurd
    d["early"] = em.early
    d["absurd"] = em.absurd
    return d
