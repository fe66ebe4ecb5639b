"""What ``RaftNode.status()`` reports: plain values, for the runtime's status and the tests."""

from __future__ import annotations

from dataclasses import dataclass

from p2plog.raft.leader import is_active
from p2plog.raft.participant import Participant
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


def status_of(node: Participant) -> Status:
    progress = {
        pid: ProgressStatus(p.match, p.next, p.state, len(p.inflight), is_active(node, pid))
        for pid, p in node.progress.items()
    }
    lg = node.log
    return Status(
        id=node.id,
        role=node.role,
        term=node.term,
        vote=node.vote,
        leader=node.leader,
        commit_index=lg.committed,
        applied_index=lg.applied,
        first_index=lg.first_index(),
        last_index=lg.last_index(),
        lead_transferee=node.lead_transferee,
        progress=progress,
        conf=node.conf,
    )
