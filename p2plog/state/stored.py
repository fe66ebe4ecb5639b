"""A committed record as readers see it: the stored body decoded (``decode_body``), and its
level read from the bytes without a decode (``level_at_least``).

The body is what ``record.validate`` wrote on the node that took the record: ``ts_corrected``
as a little-endian i64 (``record.NO_TS``: none), then the CBOR map ``{ts, cu, lv, src, msg, f,
n}``. It never changes after that, so every node decodes the same record from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from p2plog.record import LEVELS, NO_TS, TS_PREFIX, uuid_text


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A committed record as readers see it."""

    index: int
    term: int
    id: bytes
    ingest_ts: int
    ts: int | None
    ts_corrected: int | None
    level: str
    source: str
    msg: str
    fields: dict[str, Any]
    node: str
    clock_uncertain: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": uuid_text(self.id),
            "index": self.index,
            "term": self.term,
            "ts": self.ts,
            "ts_corrected": self.ts_corrected,
            "ingest_ts": self.ingest_ts,
            "level": self.level,
            "source": self.source,
            "msg": self.msg,
            "fields": self.fields,
            "late": False,
            "node": self.node,
            "clock_uncertain": self.clock_uncertain,
        }


_LV_TAIL = {0x1B: 9, 0x1A: 5, 0x19: 3, 0x18: 2, 0x3B: 9, 0x3A: 5, 0x39: 3, 0x38: 2}


def level_at_least(body: bytes, level_no: int) -> bool:
    """Is the record's level >= ``level_no``, read from the body bytes without a decode?

    The body's CBOR map is written by ``validate`` as ``{ts, cu, lv, ...}``, so ``lv`` sits
    after an int-or-null ``ts`` and a bool ``cu``; every marker is checked, and a body of any
    other shape answers True (the caller then decodes and filters exactly)."""
    if body[8:12] != b"\xa7\x62ts":
        return True
    ib = body[12]
    n = 1 if ib < 0x18 or 0x20 <= ib < 0x38 or ib == 0xF6 else _LV_TAIL.get(ib, 0)
    if n == 0:
        return True
    p = 12 + n
    if body[p : p + 3] != b"\x62cu" or body[p + 3] not in (0xF4, 0xF5):
        return True
    if body[p + 4 : p + 7] != b"\x62lv":
        return True
    lv = body[p + 7]
    return lv >= level_no if lv < len(LEVELS) else True


def decode_body(index: int, term: int, ingest_ts: int, rid: bytes, body: bytes) -> StoredRecord:
    """Decode one record's body (the CBOR after the ``ts_corrected`` prefix)."""
    tc = TS_PREFIX.unpack_from(body)[0]
    b = cbor2.loads(body[TS_PREFIX.size :])
    return StoredRecord(
        index,
        term,
        rid,
        ingest_ts,
        b["ts"],
        None if tc == NO_TS else tc,
        LEVELS[b["lv"]],
        b["src"],
        b["msg"],
        b["f"],
        b["n"],
        b.get("cu", False),
    )
