"""Apply committed entries: decide, identically on every node, which records are duplicates.

``apply(entry)`` -> ``Applied`` for a batch entry (None for ticks and no-ops). The first
committed copy of a record id is the record; a later copy within the dedup window (in a later
batch or the same one) is a duplicate that readers skip, acked with the original index.
Duplicate record indexes are remembered so reads can skip them.

The applier also maps record indexes back to the log: ``term_of`` (for acks of duplicates) and
``locate`` (the Raft index to start reading at for a record index), from small sparse tables,
and ``times`` (``state.time_index``: the record index to start reading at for a time).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2plog.raft.types import Entry
from p2plog.state.dedup import DedupWindow
from p2plog.state.entry import Batch, parse_batch
from p2plog.state.time_index import TimeIndex

LOCATE_EVERY_ENTRIES = 64
LOCATE_EVERY_RECORDS = 4096  # a read that seeks starts at most about this many records early


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one batch entry decided."""

    index: int  # the Raft index of the entry
    term: int
    batch: Batch
    dups: dict[int, int]  # position in the batch -> record index first stored with that id
    offsets: list[int]  # ``batch.offsets()`` and ``batch.event_times``, read once on apply:
    event_times: list[int]  # the time index and the live event feed both use them

    def record_index(self, pos: int) -> int:
        return self.batch.base + pos


class Applier:
    def __init__(self, dedup_records: int, dedup_age_ns: int) -> None:
        self.window = DedupWindow(dedup_records, dedup_age_ns)
        self._clear()

    def _clear(self) -> None:
        self.window = DedupWindow(self.window.max_records, self.window.max_age_ns)
        self.dup_indexes: set[int] = set()
        self.applied_index = 0  # Raft index
        self.record_index = 0  # the last applied record's index
        self.records = 0  # records stored (duplicates not counted)
        self.dedup_hits = 0  # retries of committed ids answered at intake (a counter, not state)
        self._term_at: list[int] = []  # first record index of each run of one term
        self._terms: list[int] = []
        self._loc_rec: list[int] = []  # sparse: a batch's base record index ...
        self._loc_entry: list[int] = []  # ... and its Raft index
        self._entries_since_loc = 0
        self.times = TimeIndex()

    def apply(self, e: Entry) -> Applied | None:
        assert e.index == self.applied_index + 1, f"apply {e.index} after {self.applied_index}"
        self.applied_index = e.index
        b = parse_batch(e.data)
        if b is None:
            return None
        if self.record_index and b.base != self.record_index + 1:
            raise AssertionError(
                f"entry {e.index} starts at record {b.base}, expected {self.record_index + 1}"
            )
        self.record_index = b.base + b.n - 1
        offs = b.offsets()
        tcs = b.event_times(offs)
        self._index_batch(e, b, tcs)
        ids = b.ids()
        base = b.base
        window = self.window
        dups: dict[int, int] = {}
        if window.isdisjoint(ids) and len(set(ids)) == b.n:  # the common case: all fresh
            window.add_many(ids, range(base, base + b.n), b.ingest_ts)
            self.records += b.n
            return Applied(e.index, e.term, b, dups, offs, tcs)
        get = window.get
        fresh: dict[bytes, int] = {}  # also catches the same id twice in one batch
        for k, rid in enumerate(ids):
            orig = get(rid)
            if orig is None:
                orig = fresh.get(rid)
                if orig is None:
                    fresh[rid] = base + k
                    continue
            dups[k] = orig
            self.dup_indexes.add(base + k)
        window.add_many(list(fresh), list(fresh.values()), b.ingest_ts)
        self.records += len(fresh)
        return Applied(e.index, e.term, b, dups, offs, tcs)

    def _index_batch(self, e: Entry, b: Batch, event_times: list[int]) -> None:
        if not self._terms or self._terms[-1] != e.term:
            self._term_at.append(b.base)
            self._terms.append(e.term)
        self._entries_since_loc += 1
        if (
            not self._loc_rec
            or self._entries_since_loc >= LOCATE_EVERY_ENTRIES
            or b.base - self._loc_rec[-1] >= LOCATE_EVERY_RECORDS
        ):
            self._loc_rec.append(b.base)
            self._loc_entry.append(e.index)
            self._entries_since_loc = 0
            self.times.sample(b)
        self.times.note(b, event_times)

    def export(self) -> dict[str, Any]:
        """Everything applying the log up to ``applied_index`` built, for a snapshot: a node
        restored from it decides, acks and seeks exactly as one that applied every entry.
        Shares nothing mutable with the applier (the caller may encode it in a thread)."""
        return {
            "applied_index": self.applied_index,
            "record_index": self.record_index,
            "records": self.records,
            "window": [_chunk(ids, ix, ts) for ids, ix, ts in self.window.export()],
            "dups": sorted(self.dup_indexes),
            "terms": [list(self._term_at), list(self._terms)],
            "locate": [list(self._loc_rec), list(self._loc_entry), self._entries_since_loc],
            "times": self.times.export(),
        }

    def restore(self, d: dict[str, Any]) -> None:
        """Replace this applier's state by the one ``export`` gave (a snapshot from the
        leader, built with the same dedup bounds: they are cluster settings)."""
        self._clear()
        self.applied_index, self.record_index = int(d["applied_index"]), int(d["record_index"])
        self.records = int(d["records"])
        chunks = []
        for ids, ix, ts in d["window"]:
            idl = [ids[o : o + 16] for o in range(0, len(ids), 16)]
            chunks.append((idl, range(ix, ix + len(idl)) if isinstance(ix, int) else ix, ts))
        self.window.restore(chunks)
        self.dup_indexes = set(d["dups"])
        self._term_at, self._terms = list(d["terms"][0]), list(d["terms"][1])
        self._loc_rec, self._loc_entry = list(d["locate"][0]), list(d["locate"][1])
        self._entries_since_loc = int(d["locate"][2])
        self.times = TimeIndex.restore(d["times"])

    def forget_before(self, record_index: int, entry_index: int) -> None:
        """Retention cut the log below Raft index ``entry_index`` (record ``record_index``):
        drop the duplicates and seek samples only the cut records needed."""
        self.dup_indexes = {i for i in self.dup_indexes if i >= record_index}
        k = max(0, bisect.bisect_right(self._loc_entry, entry_index) - 1)
        del self._loc_rec[:k], self._loc_entry[:k]
        self.times.forget_before(record_index)

    def term_of(self, record_index: int) -> int:
        """The term of the entry that holds an applied record."""
        k = bisect.bisect_right(self._term_at, record_index) - 1
        return self._terms[k] if k >= 0 else 0

    def locate(self, record_index: int) -> int:
        """A Raft index at or before the entry that holds ``record_index`` (at most a bounded
        number of entries before it): where a read of that record starts."""
        k = bisect.bisect_right(self._loc_rec, record_index) - 1
        return self._loc_entry[k] if k >= 0 else 1


def _chunk(ids: bytes, ix: Sequence[int], ts: int) -> list[Any]:
    """One dedup window entry for a snapshot; its indexes are nearly always one run of
    record indexes, kept as the run's start alone."""
    run = isinstance(ix, range) and ix.step == 1
    return [ids, ix.start if isinstance(ix, range) and run else list(ix), ts]
