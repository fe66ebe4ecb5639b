"""Raft messages as frozen dataclasses (the wire codec maps them to CBOR elsewhere).

Every message carries ``src``, ``dst`` and the sender's ``term``; the node handles terms centrally
(Raft §5.1) before any role sees a message. Meanings of the index fields:

- ``AppendEntries.prev_index/prev_term`` locate the entry before ``entries`` (§5.3 log matching).
- ``AppendEntriesResponse.index``: on success the highest index known to match the leader; on
  rejection the ``prev_index`` that was rejected. ``hint_index/hint_term`` is the follower's
  largest entry with term <= the rejected ``prev_term`` (etcd's findConflictByTerm), so the leader
  skips a whole divergent term per round trip instead of one index.
- ``RequestVote.pre_vote`` asks "would you vote for me at ``term``?" without changing anybody's
  term (Raft thesis §9.6); ``transfer`` marks a vote caused by TimeoutNow, which overrides the
  leader lease (thesis §3.10).
- ``InstallSnapshot`` replaces AppendEntries for a follower whose next index the leader has
  compacted away (Raft §7, etcd's MsgSnap); the follower answers with an
  ``AppendEntriesResponse`` whose ``index`` is its commit index after taking it.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2plog.raft.types import Entry, Index, NodeId, Snapshot, Term


@dataclass(frozen=True, slots=True)
class RequestVote:
    src: NodeId
    dst: NodeId
    term: Term
    last_index: Index
    last_term: Term
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    src: NodeId
    dst: NodeId
    term: Term
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    src: NodeId
    dst: NodeId
    term: Term
    prev_index: Index
    prev_term: Term
    entries: tuple[Entry, ...]
    commit: Index


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    src: NodeId
    dst: NodeId
    term: Term
    success: bool
    index: Index
    hint_index: Index = Index(0)
    hint_term: Term = Term(0)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness plus a safe commit index: ``min(match of dst, leader commit)``."""

    src: NodeId
    dst: NodeId
    term: Term
    commit: Index


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    src: NodeId
    dst: NodeId
    term: Term


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the receiver campaigns at once, skipping PreVote (thesis §3.10)."""

    src: NodeId
    dst: NodeId
    term: Term


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    src: NodeId
    dst: NodeId
    term: Term
    snapshot: Snapshot


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | TimeoutNow
    | InstallSnapshot
)
