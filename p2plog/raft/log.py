"""The node's view of its log: the persisted part (a ``LogReader``) plus an unstable tail.

Invariants (checked by ``invariants.check_node``):
- ``unstable`` holds consecutive entries starting at ``offset``; entries of the reader at or above
  ``offset`` are logically replaced by them (a conflicting suffix awaiting truncation on disk).
- ``applied <= committed <= last_index()``; ``committed`` never decreases.
- After ``stable_to``, the unstable tail is empty and ``offset == last_index() + 1``.
- The log starts after a snapshot (Raft §7): entries below ``first_index()`` are gone, and the
  snapshot's index and term stand in for the last of them. A snapshot from the leader
  (``restore``) waits in ``pending_snapshot`` until the driver persisted it; until then nothing
  is applied (the state machine is restored from it first).
"""

from __future__ import annotations

from collections.abc import Sequence

from p2plog.raft.membership import ConfLog
from p2plog.raft.types import ConfState, Entry, Index, LogReader, Snapshot, Term

NO_CONF = ConfState(())  # a log read on its own (tests, tools): no members


class Compacted(LookupError):
    """An index below the log's snapshot was asked for: the entry is gone."""


class RaftLog:
    __slots__ = (
        "applied",
        "bootstrap",
        "committed",
        "confs",
        "offset",
        "pending_snapshot",
        "reader",
        "unstable",
    )

    def __init__(self, reader: LogReader, bootstrap: ConfState = NO_CONF) -> None:
        self.reader = reader
        self.bootstrap = bootstrap
        # The configuration in force is the newest in the log, committed or not.
        self.confs = ConfLog(reader.snapshot().conf or bootstrap, reader.conf_entries())
        self.unstable: list[Entry] = []
        self.offset = Index(reader.last_index() + 1)
        self.pending_snapshot: Snapshot | None = None
        # What a snapshot holds was committed and applied when it was taken.
        self.committed = reader.snapshot().index
        self.applied = self.committed

    def first_index(self) -> Index:
        """The first index whose entry the log holds (one past its snapshot)."""
        if self.pending_snapshot is not None:
            return Index(self.pending_snapshot.index + 1)
        return self.reader.first_index()

    def snapshot(self) -> Snapshot:
        return self.pending_snapshot or self.reader.snapshot()

    def last_index(self) -> Index:
        return Index(self.offset - 1 + len(self.unstable))

    def stable_last_index(self) -> Index:
        """The last index that is persisted and not logically truncated."""
        return Index(self.offset - 1)

    def term(self, index: Index) -> Term:
        """Term at ``index`` (0 for index 0); ``index`` must be <= ``last_index()``. Raises
        ``Compacted`` below the snapshot's index."""
        if index >= self.offset:
            return self.unstable[index - self.offset].term
        if index <= 0:
            return Term(0)
        ps = self.pending_snapshot
        if ps is None:
            if index < self.reader.first_index() - 1:
                raise Compacted(f"index {index} is below the log's snapshot")
            return self.reader.term(index)
        if index == ps.index:
            return ps.term
        raise Compacted(f"index {index} is below the snapshot at {ps.index}")

    def last_term(self) -> Term:
        return self.term(self.last_index())

    def match_term(self, index: Index, term: Term) -> bool:
        """Raft §5.3 consistency check: do we hold an entry at ``index`` with ``term``? Below
        the snapshot the answer is no (callers only ask there about committed entries)."""
        if index > self.last_index():
            return False
        try:
            return self.term(index) == term
        except Compacted:
            return False

    def is_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up-to-date as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def entries(self, lo: Index, hi: Index, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)`` capped at ``max_bytes`` of payload (at least one if lo < hi)."""
        hi = Index(min(hi, self.last_index() + 1))
        if lo >= hi:
            return []
        out: list[Entry] = []
        size = 0
        if lo < self.offset:
            out = self.reader.entries(lo, Index(min(hi, self.offset)), max_bytes)
            size = sum(len(e.data) for e in out)
            if out[-1].index + 1 < min(hi, self.offset):
                return out  # the byte cap cut the persisted part short
            lo = Index(out[-1].index + 1)
        start = lo - self.offset
        for e in self.unstable[start : hi - self.offset]:
            if out and size + len(e.data) > max_bytes:
                break
            out.append(e)
            size += len(e.data)
        return out

    def find_conflict_by_term(self, index: Index, term: Term) -> Index:
        """Largest ``i <= index`` whose term is <= ``term`` (etcd's findConflictByTerm).

        Only the divergent region (entries with a higher term) is walked, which is short in
        practice: it is the uncommitted tail of some deposed leader.
        """
        i = Index(min(index, self.last_index()))
        floor = self.first_index() - 1  # the snapshot's entry is committed: it matches
        if i < floor:
            return i
        while i > floor and self.term(i) > term:
            i = Index(i - 1)
        return i

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that extend the log (the leader's own proposals)."""
        assert not entries or entries[0].index == self.last_index() + 1
        self.unstable.extend(entries)
        self.confs.appended(entries)

    def maybe_append(
        self, prev_index: Index, prev_term: Term, commit: Index, entries: Sequence[Entry]
    ) -> Index | None:
        """Follower side of AppendEntries (Raft §5.3); returns the last index now known to
        match the leader, or None when ``prev`` does not match."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = Index(prev_index + len(entries))
        for pos, e in enumerate(entries):
            if not self.match_term(e.index, e.term):
                # §5.3: an existing entry that conflicts is deleted with all that follow it.
                assert e.index > self.committed, (
                    f"conflict at committed index {e.index} (commit {self.committed})"
                )
                self._truncate_and_append(entries[pos:])
                break
        self.commit_to(Index(min(commit, last_new)))
        return last_new

    def _truncate_and_append(self, entries: Sequence[Entry]) -> None:
        self.confs.appended(entries)  # a truncated configuration entry no longer applies
        after = entries[0].index
        if after == self.offset + len(self.unstable):
            self.unstable.extend(entries)
        elif after <= self.offset:
            self.offset = after
            self.unstable = list(entries)
        else:
            del self.unstable[after - self.offset :]
            self.unstable.extend(entries)

    def commit_to(self, index: Index) -> bool:
        """Raise the commit index (never lowers it); returns whether it moved."""
        if index <= self.committed:
            return False
        assert index <= self.last_index(), f"commit {index} beyond last index {self.last_index()}"
        self.committed = index
        return True

    def stable_to(self, last: Index) -> None:
        """The runtime persisted every unstable entry up to ``last`` (the whole tail)."""
        assert self.unstable, "stable_to() with nothing unstable"
        assert self.unstable[-1].index == last, f"stable_to({last}) but tail ends elsewhere"
        self.offset = Index(last + 1)
        self.unstable = []

    def restore(self, s: Snapshot) -> None:
        """Replace the whole log by the leader's snapshot (Raft §7: the follower discards its
        log; what it held after ``s.index`` either is uncommitted or comes again). The driver
        persists it with the next ``Ready``; the state machine is restored from it then."""
        assert s.index > self.committed, f"snapshot at {s.index} behind commit {self.committed}"
        self.pending_snapshot = s
        self.confs.restored(s.conf or self.bootstrap)
        self.offset = Index(s.index + 1)
        self.unstable = []
        self.committed = s.index

    def stable_snapshot_to(self, s: Snapshot) -> None:
        """The driver persisted ``s`` and restored the state machine from it."""
        assert self.pending_snapshot is s, "stable_snapshot_to() with another snapshot"
        self.pending_snapshot = None
        self.applied = s.index

    def applicable(self) -> Index:
        """The last index that may be applied: committed and on this node's own disk. A
        follower can learn a commit index past what it has persisted (the append that brings
        the entries also brings the commit); applying those before they are on disk would let
        readers of the applied state run ahead of the storage (etcd-io/raft applies committed
        entries only once stable unless ``AsyncStorageWrites`` asks otherwise)."""
        if self.pending_snapshot is not None:
            return self.applied
        return Index(min(self.committed, self.stable_last_index()))

    def has_next_committed(self) -> bool:
        return self.applicable() > self.applied

    def next_committed(self, max_bytes: int) -> list[Entry]:
        return self.entries(Index(self.applied + 1), Index(self.applicable() + 1), max_bytes)
