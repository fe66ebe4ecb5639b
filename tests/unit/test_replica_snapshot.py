"""The replica's snapshot (``replica.snapshot``): a node restored from it goes on exactly as one
that applied every entry (same duplicates, same acks' terms, same seeks, same event-time
stream), and bytes that are not a snapshot are refused with ``SnapshotError``."""

from __future__ import annotations

import random

import cbor2
import pytest

from p2plog.order.reorder import ReorderBuffer
from p2plog.raft.types import Entry, Index, Term
from p2plog.record import TS_PREFIX
from p2plog.replica import snapshot
from p2plog.state.applier import Applier
from p2plog.state.entry import BatchRef, batch_data_of, tick_data
from p2plog.state.event_feed import feed_applied

S = 1_000_000_000


def _log(rng: random.Random, n: int) -> list[Entry]:
    """Batches with retried ids (duplicates), out-of-order event times, a few far-future
    records, and leader ticks."""
    out: list[Entry] = []
    seen: list[bytes] = []
    base, ts = 1, 10 * S
    for i in range(1, n + 1):
        ts += rng.randint(1, 50) * 1_000_000
        if rng.random() < 0.1:
            out.append(Entry(Term(1 + i // 40), Index(i), tick_data(ts)))
            continue
        k = rng.randint(1, 6)
        ids = [
            rng.choice(seen) if seen and rng.random() < 0.2 else rng.randbytes(16) for _ in range(k)
        ]
        seen += ids
        bodies = []
        for _ in range(k):
            ev = ts - rng.randint(0, 3 * S) if rng.random() > 0.05 else ts + 5 * S
            bodies.append(TS_PREFIX.pack(ev) + cbor2.dumps({"m": "x" * rng.randint(0, 30)}))
        out.append(Entry(Term(1 + i // 40), Index(i), batch_data_of(ts, base, ids, bodies)))
        base += k
    return out


def _fresh() -> tuple[Applier, ReorderBuffer[BatchRef]]:
    return Applier(10_000, 3600 * S), ReorderBuffer(reorder_window_ms=500, max_records=40)


def _run(a: Applier, ev: ReorderBuffer[BatchRef], entries: list[Entry]) -> list[object]:
    trace: list[object] = []
    for e in entries:
        got = a.apply(e)
        trace.append(None if got is None else sorted(got.dups.items()))
        trace += [
            (m.index, m.late, m.early, m.absurd, m.payload.rec(m.index).id)
            for m in feed_applied(ev, e, got)
        ]
    return trace


@pytest.mark.parametrize("seed", range(6))
def test_restored_replica_goes_on_identically(seed: int) -> None:
    rng = random.Random(seed)
    entries = _log(rng, 300)
    cut = rng.randint(50, 250)
    a, ev = _fresh()
    _run(a, ev, entries[:cut])
    data = snapshot.encode(a, ev, hlc_ns=123)
    b, ev2 = _fresh()
    state = snapshot.decode(data)
    snapshot.restore(state, b, ev2)
    assert state.hlc_ns == 123
    assert (b.applied_index, b.record_index, b.records) == (
        a.applied_index,
        a.record_index,
        a.records,
    )
    assert _run(b, ev2, entries[cut:]) == _run(a, ev, entries[cut:])
    assert b.dup_indexes == a.dup_indexes
    for r in range(1, a.record_index + 1, 7):
        assert b.term_of(r) == a.term_of(r)
        assert b.locate(r) == a.locate(r)
    for t in range(9 * S, 30 * S, S // 3):
        assert b.times.seek(t) == a.times.seek(t)
    assert ev2.statistics() == ev.statistics()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff" * 10,
        cbor2.dumps({"v": 1}),
        cbor2.dumps({"v": 2, "applier": {}, "events": {}, "held": [], "hlc": 0}),
        cbor2.dumps([1, 2, 3]),
    ],
)
def test_bytes_that_are_not_a_snapshot_are_refused(data: bytes) -> None:
    with pytest.raises(snapshot.SnapshotError):
        snapshot.decode(data)


def test_a_snapshot_with_a_bad_field_is_refused() -> None:
    a, ev = _fresh()
    _run(a, ev, _log(random.Random(1), 50))
    d = cbor2.loads(snapshot.encode(a, ev, 0))
    d["applier"]["window"][0][0] = b"short"
    with pytest.raises(snapshot.SnapshotError, match="16-byte"):
        snapshot.decode(cbor2.dumps(d))
    d = cbor2.loads(snapshot.encode(a, ev, 0))
    d["held"][1] += b"x" * 16  # one more id than there are records
    with pytest.raises(snapshot.SnapshotError, match="disagree"):
        snapshot.decode(cbor2.dumps(d))
    d = cbor2.loads(snapshot.encode(a, ev, 0))
    d["held"][3] += b"y"  # a body byte no length accounts for
    with pytest.raises(snapshot.SnapshotError, match="add up"):
        snapshot.decode(cbor2.dumps(d))
