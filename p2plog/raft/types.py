"""Basic Raft value types shared by the core, the storage and the simulator.

An ``Entry`` with empty ``data`` is the leader's no-op (Raft §5.4.2 / §8: a new leader commits an
entry of its own term to learn the commit index); every other payload is opaque bytes that the
core never looks into.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType, Protocol

NodeId = NewType("NodeId", str)
Term = NewType("Term", int)
Index = NewType("Index", int)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data == b""`` marks a leader no-op."""

    term: Term
    index: Index
    data: bytes


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before a vote or an append ack leaves (Raft Figure 2).

    The commit index is deliberately absent: recovery never trusts a persisted commit index over
    the log (PySyncObj PR #197); a restarted node relearns it from the leader.
    """

    term: Term = Term(0)
    vote: NodeId | None = None


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the runtime wants to hear about when it changes."""

    role: Role
    leader: NodeId | None


class LogReader(Protocol):
    """Read access to the persisted (fsync'd) log, indexes starting at 1.

    The runtime guarantees that after ``advance(ready)`` the reader reflects ``ready.entries``
    (including any suffix truncation they implied).
    """

    def last_index(self) -> Index:
        """Index of the last persisted entry (0 when empty)."""
        ...

    def term(self, index: Index) -> Term:
        """Term of the entry at ``index``; ``1 <= index <= last_index()``."""
        ...

    def entries(self, lo: Index, hi: Index, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)`` up to ``max_bytes`` of payload, but always at least one."""
        ...
