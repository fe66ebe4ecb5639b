"""MemoryStore: append/truncate semantics of the current view, sync, and property tests of its
crash model against a reference model of what a disk may keep.

The model: ``synced`` is the image at the last sync; ``cut`` is the lowest point at which an
unsynced write since then truncated the log (``len(synced)`` if none did). A crash leaves either
exactly ``synced`` (the unsynced writes vanished) or a prefix of the pre-crash view that is at
least ``cut`` long (the unsynced truncation stuck and the appends after it tore). Either way every
synced entry below ``cut`` survives, and the hard state is the last synced or the last written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2plog.raft.types import Entry, HardState, Index, NodeId, Term
from p2plog.storage.memory import MemoryStore


def ents(first: int, terms: Sequence[int], tag: str = "") -> list[Entry]:
    return [
        Entry(Term(t), Index(first + i), f"{tag}{first + i}".encode()) for i, t in enumerate(terms)
    ]


def view(s: MemoryStore) -> list[Entry]:
    last = s.last_index()
    return s.entries(Index(1), Index(last + 1), 1 << 30) if last else []


def synced_terms(s: MemoryStore) -> list[int]:
    return [s.synced_term(Index(i)) for i in range(1, s.synced_last_index() + 1)]


# --------------------------------------------------------------------------- plain semantics


def test_empty_store() -> None:
    s = MemoryStore()
    assert s.last_index() == 0
    assert s.hard_state() == HardState()
    assert s.synced_last_index() == 0
    assert s.synced_term(Index(1)) == 0


def test_append_and_read_back() -> None:
    s = MemoryStore()
    s.append_batch(ents(1, [1, 1, 2]), HardState(Term(2), NodeId("n1")), sync=False)
    assert s.last_index() == 3
    assert [s.term(Index(i)) for i in (1, 2, 3)] == [1, 1, 2]
    assert view(s) == ents(1, [1, 1, 2])
    assert s.hard_state() == HardState(Term(2), NodeId("n1"))
    s.append_batch(ents(4, [2]), None, sync=False)  # no hard state: keep the old one
    assert s.last_index() == 4
    assert s.hard_state() == HardState(Term(2), NodeId("n1"))


def test_entries_byte_cap_returns_at_least_one() -> None:
    s = MemoryStore()
    s.append_batch([Entry(Term(1), Index(i), bytes(10)) for i in range(1, 6)], None, sync=True)
    assert len(s.entries(Index(1), Index(6), 25)) == 2
    assert len(s.entries(Index(1), Index(6), 30)) == 3
    assert len(s.entries(Index(2), Index(6), 1)) == 1
    assert s.entries(Index(3), Index(3), 100) == []


def test_append_at_or_below_last_truncates_first() -> None:
    s = MemoryStore()
    s.append_batch(ents(1, [1, 1, 1, 1]), None, sync=True)
    s.append_batch(ents(3, [2], tag="new"), None, sync=False)
    assert [(e.term, e.data) for e in view(s)] == [(1, b"1"), (1, b"2"), (2, b"new3")]
    s.append_batch(ents(1, [3], tag="x"), None, sync=False)  # truncate everything
    assert [e.term for e in view(s)] == [3]


def test_append_leaving_a_gap_is_a_programmer_error() -> None:
    s = MemoryStore()
    s.append_batch(ents(1, [1]), None, sync=False)
    with pytest.raises(AssertionError, match="gap"):
        s.append_batch(ents(3, [1]), None, sync=False)


def test_read_outside_the_log_is_a_programmer_error() -> None:
    s = MemoryStore()
    s.append_batch(ents(1, [1, 1]), None, sync=False)
    with pytest.raises(AssertionError):
        s.term(Index(3))
    with pytest.raises(AssertionError):
        s.entries(Index(2), Index(4), 100)


def test_sync_makes_current_view_durable() -> None:
    s = MemoryStore()
    s.append_batch(ents(1, [1, 1]), HardState(Term(1), None), sync=False)
    assert (s.synced_last_index(), s.synced_hard_state(), s.syncs) == (0, HardState(), 0)
    s.sync()
    assert (s.synced_last_index(), s.synced_hard_state(), s.syncs) == (2, HardState(Term(1)), 1)
    s.append_batch(ents(2, [2]), HardState(Term(2), NodeId("n2")), sync=True)
    assert synced_terms(s) == [1, 2]
    assert s.synced_hard_state() == HardState(Term(2), NodeId("n2"))
    assert s.syncs == 2


def test_crash_after_sync_loses_nothing() -> None:
    for seed in range(50):
        s = MemoryStore()
        s.append_batch(ents(1, [1, 2, 2]), HardState(Term(2), NodeId("n3")), sync=True)
        s.crash(Random(seed))
        assert view(s) == ents(1, [1, 2, 2])
        assert s.hard_state() == HardState(Term(2), NodeId("n3"))


def test_crash_can_lose_or_tear_unsynced_appends() -> None:
    outcomes = set()
    for seed in range(200):
        s = MemoryStore()
        s.append_batch(ents(1, [1]), None, sync=True)
        s.append_batch(ents(2, [1, 1, 1]), None, sync=False)
        s.crash(Random(seed))
        outcomes.add(s.last_index())
    assert outcomes == {1, 2, 3, 4}


def test_unsynced_truncation_may_survive_a_crash() -> None:
    """The model lets a crash keep an unsynced truncation, which drops synced entries above it.
    Raft only truncates uncommitted entries (on a newer leader's request), so this is safe."""
    kept_synced = lost_synced = 0
    for seed in range(200):
        s = MemoryStore()
        s.append_batch(ents(1, [1, 1, 1, 1]), None, sync=True)
        s.append_batch(ents(3, [2], tag="new"), None, sync=False)
        s.crash(Random(seed))
        got = view(s)
        assert got[:2] == ents(1, [1, 1])  # below the truncation point: always there
        if got == ents(1, [1, 1, 1, 1]):
            kept_synced += 1
        else:
            assert got in (ents(1, [1, 1]), ents(1, [1, 1]) + ents(3, [2], tag="new"))
            lost_synced += 1
    assert kept_synced > 0
    assert lost_synced > 0


# ------------------------------------------------------------------------- crash properties


@dataclass
class Model:
    current: list[Entry] = field(default_factory=list)
    synced: list[Entry] = field(default_factory=list)
    cut: int = 0  # lowest unsynced truncation point since the last sync
    hs: HardState = field(default_factory=HardState)
    synced_hs: HardState = field(default_factory=HardState)

    def write(self, entries: list[Entry], hs: HardState | None, sync: bool) -> None:
        if hs is not None:
            self.hs = hs
        if entries:
            p = entries[0].index - 1
            self.current = self.current[:p] + entries
            self.cut = min(self.cut, p)
        if sync:
            self.sync()

    def sync(self) -> None:
        self.synced = list(self.current)
        self.cut = len(self.synced)
        self.synced_hs = self.hs

    def check_crash(self, after: list[Entry], hs_after: HardState) -> None:
        """``after`` must be a legal post-crash log; adopt it as the new durable state."""
        if after != self.synced:
            assert self.cut <= len(after) <= len(self.current), (self.cut, after, self.current)
            assert after == self.current[: len(after)]
        assert after[: self.cut] == self.synced[: self.cut]  # synced and never cut: still there
        assert hs_after in (self.synced_hs, self.hs)
        self.current = list(after)
        self.synced = list(after)
        self.cut = len(after)
        self.hs = self.synced_hs = hs_after


# An op is ("write", truncate_back, n_entries, term, set_hs, sync), ("sync",) or ("crash", seed).
write_op = st.tuples(
    st.just("write"),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(1, 9),
    st.booleans(),
    st.booleans(),
)
ops_strategy = st.lists(
    st.one_of(write_op, st.tuples(st.just("sync")), st.tuples(st.just("crash"), st.integers())),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(ops_strategy)
def test_crash_keeps_synced_prefix_and_a_legal_hard_state(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    s = MemoryStore()
    m = Model()
    for n, op in enumerate(ops):
        if op[0] == "write":
            _, back, count, term, set_hs, sync = op
            first = max(1, s.last_index() + 1 - back)
            entries = ents(first, [term] * count, tag=f"op{n}-") if count else []
            hs = HardState(Term(term), NodeId(f"n{n}")) if set_hs else None
            s.append_batch(entries, hs, sync=sync)
            m.write(entries, hs, sync)
        elif op[0] == "sync":
            s.sync()
            m.sync()
        else:
            s.crash(Random(op[1]))
            m.check_crash(view(s), s.hard_state())
            assert s.synced_hard_state() == s.hard_state()
        assert view(s) == m.current
        assert s.hard_state() == m.hs
        assert synced_terms(s) == [e.term for e in m.synced]
        assert s.synced_hard_state() == m.synced_hs


@settings(max_examples=200, deadline=None)
@given(ops_strategy, st.integers())
def test_crash_without_unsynced_truncation_is_a_superset_of_synced(
    ops: list[tuple],  # type: ignore[type-arg]
    seed: int,
) -> None:
    """When no unsynced write truncated below the synced end, a crash keeps every synced entry:
    the post-crash log is the synced log plus possibly a prefix of the unsynced appends."""
    s = MemoryStore()
    for n, op in enumerate(ops):
        if op[0] == "write":
            _, back, count, term, _set_hs, sync = op
            first = max(1, s.last_index() + 1 - back)
            if first <= s.synced_last_index() and not sync:
                first = s.synced_last_index() + 1  # append only above the synced image
            if count:
                s.append_batch(ents(first, [term] * count, tag=f"op{n}-"), None, sync=sync)
        elif op[0] == "sync":
            s.sync()
    synced = [s.synced_term(Index(i)) for i in range(1, s.synced_last_index() + 1)]
    before = view(s)
    s.crash(Random(seed))
    after = view(s)
    assert [e.term for e in after[: len(synced)]] == synced
    assert len(after) >= len(synced)
    assert after == before[: len(after)]
