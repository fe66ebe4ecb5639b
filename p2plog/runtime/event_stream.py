"""The event-time ordered stream of committed records, and its live subscribers.

Every node feeds one ``ReorderBuffer`` with every applied entry from index 1 (records, and the
leader's time ticks that move the watermark when no records come). The stream is therefore a
pure function of the committed log: every node emits the same records in the same order with
the same ``late``/``early``/``absurd`` flags. Subscribers get what is emitted from the moment
they subscribe; each has a bounded buffer and is cut off, not waited for, when it falls behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from p2plog.order.reorder import Emitted, ReorderBuffer
from p2plog.raft.types import Entry
from p2plog.record import (
    StoredRecord,
    decode_entry,
    entry_ingest_ts,
    entry_tick_ts,
    entry_ts_corrected,
)
from p2plog.state.applier import Applied

SUBSCRIBER_BUFFER = 20_000


@dataclass(eq=False)
class EventSubscriber:
    buf: deque[Emitted[Entry]] = field(default_factory=deque)
    wakeup: trio.Event = field(default_factory=trio.Event)
    behind: bool = False
    limit: int = SUBSCRIBER_BUFFER


class EventStream:
    def __init__(self, *, reorder_window_ms: int, max_records: int, max_bytes: int) -> None:
        self.buffer: ReorderBuffer[Entry] = ReorderBuffer(
            reorder_window_ms=reorder_window_ms, max_records=max_records, max_bytes=max_bytes
        )
        self.subs: set[EventSubscriber] = set()

    def feed(self, items: Sequence[tuple[Entry, Applied | None]]) -> None:
        out: list[Emitted[Entry]] = []
        for e, a in items:
            if a is not None:
                if a.dup:
                    continue  # the applier's duplicate copy: readers never see it
                # Keyed from the fixed binary prefix: no CBOR decode per record on this path.
                tc = entry_ts_corrected(e.data)
                ingest = entry_ingest_ts(e.data)
                assert ingest is not None, f"applied record at {e.index} has no ingest time"
                out += self.buffer.add_record(e.index, tc, ingest, e, len(e.data))
                continue
            ts = entry_tick_ts(e.data)
            if ts is not None:
                out += self.buffer.add_tick(ts)
        if out:
            self._publish(out)

    def wants_time_tick(self) -> bool:
        """Records are waiting for the watermark: the leader should commit its time."""
        return self.buffer.depth > 0

    def _publish(self, out: list[Emitted[Entry]]) -> None:
        for s in list(self.subs):
            if s.behind:
                continue
            if len(s.buf) + len(out) > s.limit:
                s.behind = True
                s.buf.clear()
            else:
                s.buf.extend(out)
            s.wakeup.set()

    def subscribe(self) -> EventSubscriber:
        s = EventSubscriber()
        self.subs.add(s)
        return s

    def unsubscribe(self, s: EventSubscriber) -> None:
        self.subs.discard(s)

    def statistics(self, now_ns: int) -> dict[str, Any]:
        st = self.buffer.statistics(now_ns)
        st["subscribers"] = len(self.subs)
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
