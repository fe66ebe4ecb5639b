"""The leader's view of one follower (etcd's tracker.Progress).

A follower is probed one message at a time until an append succeeds (PROBE), then fed
optimistically by a pipeline of up to ``max_inflight`` AppendEntries (REPLICATE). A follower
that needs entries the leader compacted is sent the snapshot and waits for its answer
(SNAPSHOT: nothing else is sent; resent if no answer comes within an election timeout).
Invariants: ``match < next``; in REPLICATE, ``inflight`` holds increasing last-indexes of
unacknowledged messages, all ``< next``.
"""

from __future__ import annotations

import enum
from collections import deque

from p2plog.raft.types import Index


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "inflight",
        "last_active",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "sent_commit",
        "snapshot_sent_at",
        "state",
    )

    def __init__(self, next_index: Index) -> None:
        self.match = Index(0)
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight: deque[Index] = deque()
        self.last_active = 0  # the leader's tick count when this follower last answered
        self.sent_commit = Index(0)
        self.pending_snapshot = Index(0)  # in SNAPSHOT: the index of the snapshot sent
        self.snapshot_sent_at = 0  # ... and the leader's tick count when it was sent

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = Index(self.match + 1)
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = Index(self.match + 1)
        self.inflight.clear()

    def become_snapshot(self, index: Index, now: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_sent_at = now
        self.next = Index(max(self.match, index) + 1)
        self.inflight.clear()

    def is_paused(self, max_inflight: int) -> bool:
        if self.state is ProgressState.SNAPSHOT:
            return True
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        return len(self.inflight) >= max_inflight

    def sent_entries(self, last: Index | None) -> None:
        """Record an AppendEntries whose last entry is ``last`` (None: no entries)."""
        if self.state is ProgressState.REPLICATE:
            if last is not None:
                self.next = Index(last + 1)
                self.inflight.append(last)
        else:
            self.probe_sent = True

    def maybe_update(self, index: Index) -> bool:
        """An append up to ``index`` succeeded; returns whether ``match`` moved."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        if self.next <= index:
            self.next = Index(index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decr_to(self, rejected: Index, probe_hint: Index) -> bool:
        """An append at ``prev_index == rejected`` was refused; returns False when stale."""
        if self.state is ProgressState.SNAPSHOT:
            return False  # an answer to an append sent before the snapshot
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = Index(self.match + 1)
            return True
        if self.next - 1 != rejected:
            return False
        self.next = Index(max(min(rejected, probe_hint + 1), self.match + 1))
        self.probe_sent = False
        return True
