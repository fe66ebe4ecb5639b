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


@dataclass(frozen=True, slots=True)
class ConfState:
    """A cluster configuration (``membership.py``): who votes, who only learns, and where the
    runtime reaches each member (opaque to the core). Sorted, so equal configurations compare
    equal."""

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    addresses: tuple[tuple[NodeId, str], ...] = ()

    def members(self) -> tuple[NodeId, ...]:
        return self.voters + self.learners

    def address_of(self, node: NodeId) -> str | None:
        return dict(self.addresses).get(node)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine at ``index`` (Raft §7): what a log compacted up to ``index`` keeps in
        place of its entries. ``data`` is opaque to the core (the replica's state); ``index`` and
        ``term`` stand in for the last compacted entry in the log-matching checks; ``conf`` for the
    configuration entries it covers."""

    index: Index
    term: Term
    data: bytes
    conf: ConfState | None = None  # the configuration at ``index`` (None: the bootstrap one)


NO_SNAPSHOT = Snapshot(Index(0), Term(0), b"")


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
    """Read access to the persisted (fsync'd) log: a snapshot at ``first_index() - 1`` (index 0
    when nothing was compacted) followed by the entries ``first_index() .. last_index()``.

    The runtime guarantees that after ``advance(ready)`` the reader reflects ``ready.snapshot``
    and ``ready.entries`` (including any suffix truncation they implied). It may also compact
    the log between two calls into the node (``compact``): only up to the applied index.
    """

    def first_index(self) -> Index:
        """Index of the first entry held: one past the snapshot's index."""
        ...

    def snapshot(self) -> Snapshot:
        """The snapshot the log starts after (``NO_SNAPSHOT`` when none)."""
        ...

    def last_index(self) -> Index:
        """Index of the last persisted entry (0 when empty)."""
        ...

    def term(self, index: Index) -> Term:
        """Term of the entry at ``index``; ``first_index() - 1 <= index <= last_index()`` (the
        snapshot's term at ``first_index() - 1``, 0 at index 0)."""
        ...

    def entries(self, lo: Index, hi: Index, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)`` up to ``max_bytes`` of payload, but always at least one;
        ``first_index() <= lo``."""
        ...

    def conf_entries(self) -> list[Entry]:
        """The configuration entries (``membership.is_conf``) past the snapshot, in order: the
        node's configuration is the newest of them, so the store keeps them at hand rather
        than the node scanning the log on every start."""
        ...
