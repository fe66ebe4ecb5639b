"""MemoryStore: the storage API in memory, with a crash model for the simulator and tests.

The store separates what a real disk separates: the *current* view (what the running process
reads back, i.e. the page cache) and the *synced* image (what survives power loss). ``crash``
replaces the current view by a legal post-crash state: everything synced, plus possibly the
unsynced truncation and a prefix of the unsynced appends (a torn tail is truncated by recovery,
which leaves exactly such a prefix), and either the old or the new hard state (the meta files are
written alternately, so a torn meta write leaves the previous one).

Snapshots (``compact``: the node's own, at its applied index; ``install_snapshot``: the leader's,
replacing the log) are written whole and synced at once, as ``SegmentedLog`` writes a snapshot
file (write, fsync, rename) before it drops a segment. The lists hold the entries from
``first`` on.

Invariant: current view == ``synced[:base] + tail``.
"""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

from p2plog.raft.membership import is_conf
from p2plog.raft.types import NO_SNAPSHOT, Entry, HardState, Index, Snapshot, Term


class MemoryStore:
    def __init__(self) -> None:
        self._snap = NO_SNAPSHOT
        self._first = Index(1)  # the index of ``_synced[0]`` (of ``_tail[0]`` when base is 0)
        self._synced: list[Entry] = []
        self._base = 0
        self._tail: list[Entry] = []
        self._hs = HardState()
        self._synced_hs = HardState()
        self.syncs = 0

    # -- LogReader (current view) --

    def first_index(self) -> Index:
        return self._first

    def snapshot(self) -> Snapshot:
        return self._snap

    def last_index(self) -> Index:
        return Index(self._first - 1 + self._base + len(self._tail))

    def _at(self, index: int) -> Entry:
        p = index - self._first
        return self._synced[p] if p < self._base else self._tail[p - self._base]

    def term(self, index: Index) -> Term:
        lo = self._first - 1
        assert lo <= index <= self.last_index(), f"term({index}) outside {lo}..{self.last_index()}"
        return self._snap.term if index == lo else self._at(index).term

    def conf_entries(self) -> list[Entry]:
        lo, last = self._first, self.last_index()
        return [e for e in (self._at(i) for i in range(lo, last + 1)) if is_conf(e.data)]

    def entries(self, lo: Index, hi: Index, max_bytes: int) -> list[Entry]:
        first = self._first
        assert first <= lo <= hi <= self.last_index() + 1, f"entries({lo}, {hi}) out of range"
        out: list[Entry] = []
        size = 0
        for i in range(lo, hi):
            e = self._at(i)
            if out and size + len(e.data) > max_bytes:
                break
            out.append(e)
            size += len(e.data)
        return out

    def hard_state(self) -> HardState:
        return self._hs

    # -- writes --

    def append_batch(
        self, entries: Sequence[Entry], hard_state: HardState | None, *, sync: bool
    ) -> None:
        """Write ``entries`` (truncating from ``entries[0].index`` first) and the hard state."""
        if hard_state is not None:
            self._hs = hard_state
        if entries:
            p = entries[0].index - self._first
            last = self.last_index()
            assert entries[0].index <= last + 1, (
                f"append at {entries[0].index} leaves a gap after {last}"
            )
            assert p >= 0, f"append at {entries[0].index} below the snapshot at {self._first - 1}"
            if p <= self._base:
                self._base = p
                self._tail = list(entries)
            else:
                del self._tail[p - self._base :]
                self._tail.extend(entries)
        if sync:
            self.sync()

    def sync(self) -> None:
        self._make_durable()
        self._synced_hs = self._hs
        self.syncs += 1

    def _make_durable(self) -> None:
        if self._tail or self._base < len(self._synced):
            del self._synced[self._base :]
            self._synced.extend(self._tail)
            self._base = len(self._synced)
            self._tail = []

    # -- snapshots --

    def compact(self, snap: Snapshot) -> None:
        """Keep ``snap`` in place of the entries up to ``snap.index`` (synced ones only)."""
        drop = snap.index - self._first + 1
        assert 0 <= drop <= self._base, f"compact to {snap.index}: not synced or below first"
        assert self.term(snap.index) == snap.term, f"snapshot term {snap.term} at {snap.index}"
        del self._synced[:drop]
        self._base -= drop
        self._first = Index(snap.index + 1)
        self._snap = snap

    def install_snapshot(self, snap: Snapshot) -> None:
        """The leader's snapshot replaces the whole log (durable at once)."""
        self._snap = snap
        self._first = Index(snap.index + 1)
        self._synced, self._base, self._tail = [], 0, []

    # -- crash model --

    def crash(self, rng: Random) -> None:
        """Power loss: the unsynced writes vanish, or survive in part (torn)."""
        if rng.random() < 0.5:
            self._base = len(self._synced)
            self._tail = []
        else:
            del self._tail[rng.randrange(len(self._tail) + 1) :]
            self._make_durable()
        if self._hs != self._synced_hs and rng.random() < 0.5:
            self._synced_hs = self._hs
        self._hs = self._synced_hs

    # -- the synced image, for checkers --

    def synced_last_index(self) -> Index:
        return Index(self._first - 1 + len(self._synced))

    def synced_term(self, index: Index) -> Term:
        """The synced term at ``index``; the snapshot's at its index, 0 below or past."""
        if index == self._first - 1:
            return self._snap.term
        p = index - self._first
        return self._synced[p].term if 0 <= p < len(self._synced) else Term(0)

    def synced_covers(self, index: Index, term: Term) -> bool:
        """Does the synced image hold entry ``(index, term)``, or a snapshot past it?"""
        return index < self._first or self.synced_term(index) == term

    def synced_hard_state(self) -> HardState:
        return self._synced_hs
