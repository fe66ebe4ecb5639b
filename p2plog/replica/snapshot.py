"""The replica's state at an applied index, as the bytes of a Raft snapshot (and back).

What applying the log builds, and what a node restored from a snapshot needs to go on exactly
as one that applied every entry (issue 15): the applier's counters, dedup window (ids, record
indexes, ingest times), duplicate indexes, term runs and seek tables; the ingest-time (HLC)
floor; and the event-time buffer (watermark, counters, the records it holds, each with its
id and body, since the entries they came from may be gone). CBOR, versioned; ``decode``
checks the shape and the ranges so a bad snapshot from a peer is refused before anything is
written (``SnapshotError``), never half-applied.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from typing import Any

import cbor2

from p2plog.order.reorder import ReorderBuffer
from p2plog.state.applier import Applier
from p2plog.state.entry import BatchRef, batch_data_of, parse_batch

VERSION = 2  # 2: buffered records packed (``_pack``)
# Also the most the peer link carries (``wire.peer.MAX_SNAPSHOT``): its dedup window and
# event-time buffer are bounded by cluster settings (``dedup_window_records``,
# ``reorder_max_bytes``); retention warns when a snapshot comes out larger.
MAX_SNAPSHOT_BYTES = 128 << 20

_Held = tuple[int, int, int, BatchRef, int]


class SnapshotError(ValueError):
    """Snapshot bytes that are not a replica state this version can restore."""


@dataclass(frozen=True, slots=True)
class ReplicaState:
    applier: dict[str, Any]
    events: dict[str, int | None]
    held: list[_Held]
    hlc_ns: int


def capture(applier: Applier, events: ReorderBuffer[BatchRef], hlc_ns: int) -> dict[str, Any]:
    """The state as plain values that share nothing mutable with the replica: the driver may
    encode them (``dumps``) in another thread while the replica goes on."""
    state, items = events.export()
    return {
        "v": VERSION,
        "applier": applier.export(),
        "events": state,
        "held": _pack(items),
        "hlc": hlc_ns,
    }


def _pack(items: list[tuple[int, int, int, BatchRef, int]]) -> list[bytes]:
    """The buffered records as four byte strings (numbers, ids, body lengths, bodies), not a
    list per record: tens of thousands of small objects made for one snapshot and freed after
    it leave the allocator's arenas fragmented, so a process that snapshots every few seconds
    keeps a larger RSS than one that never does."""
    nums, lens = array("q"), array("q")
    ids, bodies = bytearray(), bytearray()
    for key, index, ingest, ref, size in items:
        r = ref.rec(index)
        nums.extend((key, index, ingest, size, ref.term))
        ids += r.id
        lens.append(len(r.body))
        bodies += r.body
    if sys.byteorder != "little":
        nums.byteswap()
        lens.byteswap()
    return [nums.tobytes(), bytes(ids), lens.tobytes(), bytes(bodies)]


def _unpack(held: Any) -> list[_Held]:
    nums_b, ids, lens_b, bodies = held
    if not all(isinstance(x, bytes) for x in held) or len(held) != 4:
        raise SnapshotError("a malformed event-time buffer")
    n = len(ids) // 16
    if len(ids) % 16 or len(nums_b) != 40 * n or len(lens_b) != 8 * n:
        raise SnapshotError("a malformed event-time buffer: its tables disagree on its length")
    nums, lens = array("q", nums_b), array("q", lens_b)
    if sys.byteorder != "little":
        nums.byteswap()
        lens.byteswap()
    if min(lens, default=0) < 0 or sum(lens) != len(bodies):
        raise SnapshotError("a malformed event-time buffer: its body lengths do not add up")
    out, o = [], 0
    for k in range(n):
        key, index, ingest, size, term = nums[5 * k : 5 * k + 5]
        body = bodies[o : o + lens[k]]
        o += lens[k]
        if index < 1 or term < 0 or size < 0 or ingest < 0:
            raise SnapshotError("a malformed buffered record")
        # The record's entry may be gone (compacted): it travels as a batch of one.
        b = parse_batch(batch_data_of(ingest, index, [ids[16 * k : 16 * k + 16]], [body]))
        assert b is not None
        out.append((key, index, ingest, BatchRef(term, b), size))
    return out


def dumps(captured: dict[str, Any]) -> bytes:
    return cbor2.dumps(captured)


def encode(applier: Applier, events: ReorderBuffer[BatchRef], hlc_ns: int) -> bytes:
    return dumps(capture(applier, events, hlc_ns))


def decode(data: bytes) -> ReplicaState:
    """Parse and check snapshot bytes; ``SnapshotError`` names what is wrong."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"a snapshot of {len(data)} bytes (at most {MAX_SNAPSHOT_BYTES})")
    try:
        d = cbor2.loads(data)
        if not isinstance(d, dict) or d.get("v") != VERSION:
            raise SnapshotError(f"not a version {VERSION} replica snapshot")
        a, ev, hlc = d["applier"], d["events"], _int(d["hlc"])
        _check_applier(a)
        events = {k: (None if ev[k] is None else _int(ev[k])) for k in _EVENT_KEYS}
        held = _unpack(d["held"])
        if len({h[1] for h in held}) != len(held):
            raise SnapshotError("a buffered record twice")
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, cbor2.CBORDecodeError) as e:
        raise SnapshotError(f"a malformed replica snapshot: {e!r}") from e
    return ReplicaState(a, events, held, hlc)


_EVENT_KEYS = ("max_ingest", "last_index", "emitted", "late", "early", "absurd")


def _int(x: object) -> int:
    if type(x) is not int or not -(1 << 63) <= x < (1 << 64):
        raise SnapshotError(f"expected a 64-bit integer, got {type(x).__name__}")
    return x


def _ints(xs: object) -> list[int]:
    if not isinstance(xs, list):
        raise SnapshotError(f"expected a list of integers, got {type(xs).__name__}")
    return [_int(x) for x in xs]


def _check_applier(a: Any) -> None:
    for k in ("applied_index", "record_index", "records"):
        if _int(a[k]) < 0:
            raise SnapshotError(f"negative {k}")
    for ids, ix, ts in a["window"]:
        if not isinstance(ids, bytes) or len(ids) % 16:
            raise SnapshotError("dedup window ids that are not 16-byte ids")
        _int(ts)
        if isinstance(ix, list) and len(_ints(ix)) != len(ids) // 16:
            raise SnapshotError("dedup window indexes that do not match its ids")
        if not isinstance(ix, list):
            _int(ix)
    _ints(a["dups"])
    runs, terms = _ints(a["terms"][0]), _ints(a["terms"][1])
    loc_rec, loc_entry = _ints(a["locate"][0]), _ints(a["locate"][1])
    if len(runs) != len(terms) or len(loc_rec) != len(loc_entry):
        raise SnapshotError("index tables of unequal lengths")
    _int(a["locate"][2])
    t = a["times"]
    if len(_ints(t["ts"])) != len(_ints(t["rec"])) or not isinstance(t["overflow"], bool):
        raise SnapshotError("a malformed time index")
    for f in t["future"]:
        if len(_ints(f)) != 2:
            raise SnapshotError("a malformed time index")


def restore(state: ReplicaState, applier: Applier, events: ReorderBuffer[BatchRef]) -> None:
    """Put ``state`` into ``applier`` and ``events`` (the ones the replica already holds, so
    whoever reads them sees the restored state)."""
    applier.restore(state.applier)
    events.restore(state.events, state.held)
