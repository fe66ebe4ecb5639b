"""What ``RaftNode.status()`` reports: plain values, for the runtime's status and the tests."""

from __future__ import annotations

from dataclasses import dataclass

from p2plog.raft.progress import ProgressState
from p2plog.raft.types import ConfState, Index, NodeId, Role, Term


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: Index
    next: Index
    state: ProgressState
    inflight: int
    recent_active: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: Role
    term: Term
    vote: NodeId | None
    leader: NodeId | None
    commit_index: Index
    applied_index: Index
    first_index: Index  # one past the snapshot the log starts after
    last_index: Index
    lead_transferee: NodeId | None
    progress: dict[NodeId, ProgressStatus]
    conf: ConfState
