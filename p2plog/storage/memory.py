"""MemoryStore: the storage API in memory, with a crash model for the simulator and tests.

The store separates what a real disk separates: the *current* view (what the running process
reads back, i.e. the page cache) and the *synced* image (what survives power loss). ``crash``
replaces the current view by a legal post-crash state: everything synced, plus possibly the
unsynced truncation and a prefix of the unsynced appends (a torn tail is truncated by recovery,
which leaves exactly such a prefix), and either the old or the new hard state (the meta files are
written alternately, so a torn meta write leaves the previous one).

Invariant: current view == ``synced[:base] + tail``.
"""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

from p2plog.raft.types import Entry, HardState, Index, Term


class MemoryStore:
    def __init__(self) -> None:
        self._synced: list[Entry] = []
        self._base = 0
        self._tail: list[Entry] = []
        self._hs = HardState()
        self._synced_hs = HardState()
        self.syncs = 0

    # -- LogReader (current view) --

    def last_index(self) -> Index:
        return Index(self._base + len(self._tail))

    def _at(self, index: int) -> Entry:
        p = index - 1
        return self._synced[p] if p < self._base else self._tail[p - self._base]

    def term(self, index: Index) -> Term:
        assert 1 <= index <= self.last_index(), f"term({index}) outside 1..{self.last_index()}"
        return self._at(index).term

    def entries(self, lo: Index, hi: Index, max_bytes: int) -> list[Entry]:
        assert 1 <= lo <= hi <= self.last_index() + 1, f"entries({lo}, {hi}) out of range"
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
            p = entries[0].index - 1
            last = self.last_index()
            assert p <= last, f"append at {p + 1} leaves a gap after {last}"
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
        return Index(len(self._synced))

    def synced_term(self, index: Index) -> Term:
        return self._synced[index - 1].term if 1 <= index <= len(self._synced) else Term(0)

    def synced_hard_state(self) -> HardState:
        return self._synced_hs
