"""Apply committed entries: decide, identically on every node, which records are duplicates.

``apply(entry)`` -> ``Applied`` (or None for no-ops). The first committed copy of a record id
is the record; a later copy within the dedup window is a duplicate that readers skip, acked
with the original index. Duplicate indexes are remembered so queries can skip them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from p2plog.raft.types import Entry
from p2plog.record import HEAD_SIZE, KIND_RECORD
from p2plog.state.dedup import DedupWindow

_TS = struct.Struct("<q")


@dataclass(frozen=True, slots=True)
class Applied:
    index: int
    term: int
    id: bytes
    dup: bool
    orig_index: int


class Applier:
    def __init__(self, dedup_records: int, dedup_age_ns: int) -> None:
        self.window = DedupWindow(dedup_records, dedup_age_ns)
        self.dup_indexes: set[int] = set()
        self.applied_index = 0
        self.records = 0

    def apply(self, e: Entry) -> Applied | None:
        assert e.index == self.applied_index + 1, f"apply {e.index} after {self.applied_index}"
        self.applied_index = e.index
        data = e.data
        if len(data) < HEAD_SIZE or data[0] != KIND_RECORD:
            return None
        rid = data[9:25]
        orig = self.window.get(rid)
        if orig is not None:
            self.dup_indexes.add(e.index)
            return Applied(e.index, e.term, rid, True, orig)
        self.window.add(rid, e.index, _TS.unpack_from(data, 1)[0])
        self.records += 1
        return Applied(e.index, e.term, rid, False, e.index)
