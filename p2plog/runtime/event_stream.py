"""The event-time ordered stream of committed records, and its live subscribers.

Every node feeds one ``ReorderBuffer`` with every applied entry from index 1 (records, and the
leader's time ticks that move the watermark when no records come). The stream is therefore a
pure function of the committed log: every node emits the same records in the same order with
the same ``late``/``early``/``absurd`` flags. ``feed_entry`` is the one rule for how an entry
feeds a buffer; the query replay (``reads.event_scan``) uses it too, so the two cannot drift
apart. Subscribers get what is emitted from the moment they subscribe, through a ``TailHub``
(bounded per-subscriber buffers; a reader that falls behind is cut off, not waited for).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from p2plog.order.reorder import Emitted, ReorderBuffer
from p2plog.raft.types import Entry
from p2plog.record import (
    StoredRecord,
    decode_entry,
    entry_id,
    entry_ingest_ts,
    entry_ts_corrected,
)
from p2plog.runtime.tail_hub import TailHub
from p2plog.state.applier import Applied


def feed_entry(
    buf: ReorderBuffer[Entry], e: Entry, *, dup: bool, as_record: bool = True
) -> list[Emitted[Entry]]:
    """Feed one committed entry: a record (``as_record``; keyed from the body's binary prefix,
    no CBOR decode), or only the watermark move it causes (a record outside a replayed range,
    or a leader tick). Duplicates and no-ops feed nothing; an absurd record moves nothing."""
    if as_record and not dup and entry_id(e.data) is not None:
        ingest = entry_ingest_ts(e.data)
        assert ingest is not None, f"record at {e.index} has no ingest time"
        return buf.add_record(e.index, entry_ts_corrected(e.data), ingest, e, len(e.data))
    t = watermark_time(buf, e, dup=dup)
    return [] if t is None else buf.add_tick(t)


def watermark_time(buf: ReorderBuffer[Entry], e: Entry, *, dup: bool) -> int | None:
    """The time this entry advances the stream's watermark to, or None if it does not."""
    if dup:
        return None
    ingest = entry_ingest_ts(e.data)
    if ingest is None or entry_id(e.data) is None:
        return ingest  # a leader tick, or None for a no-op
    # An absurd record is emitted at once, flagged; it must not drag the watermark along.
    return None if buf.is_absurd(entry_ts_corrected(e.data), ingest) else ingest


class EventStream:
    def __init__(self, *, reorder_window_ms: int, max_records: int, max_bytes: int) -> None:
        self.buffer: ReorderBuffer[Entry] = ReorderBuffer(
            reorder_window_ms=reorder_window_ms, max_records=max_records, max_bytes=max_bytes
        )
        self.hub: TailHub[Emitted[Entry]] = TailHub()

    def feed(self, items: Sequence[tuple[Entry, Applied | None]]) -> None:
        out: list[Emitted[Entry]] = []
        for e, a in items:
            out += feed_entry(self.buffer, e, dup=a is not None and a.dup)
        if out:
            self.hub.publish(out)

    def wants_time_tick(self) -> bool:
        """Records are waiting for the watermark: the leader should commit its time."""
        return self.buffer.depth > 0

    def statistics(self, now_ns: int) -> dict[str, Any]:
        st = self.buffer.statistics(now_ns)
        st["subscribers"] = len(self.hub.subs)
        return st


def emitted_record(em: Emitted[Entry]) -> StoredRecord:
    e = em.payload
    r = decode_entry(e.index, e.term, e.data)
    assert r is not None, f"emitted entry {e.index} is not a record"
    return r


def emitted_json(em: Emitted[Entry], r: StoredRecord) -> dict[str, Any]:
    d = r.to_json()
    d["late"] = em.late or em.early or em.absurd
    d["early"] = em.early
    d["absurd"] = em.absurd
    return d
