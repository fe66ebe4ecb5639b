"""What the role functions (``leader.py``, ``follower.py``) see of a Raft node.

``RaftNode`` is the one implementation; the roles take this protocol so that they depend on the
state they read and the four transitions they may call, never on ``node.py`` itself (which
imports them to select its step function, like etcd's ``step`` pointer). Everything here is
plain state of one node: a role function mutates it and queues messages with ``send``; the node
turns that into its next ``Ready``.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from p2plog.raft.config import RaftConfig
from p2plog.raft.log import RaftLog
from p2plog.raft.messages import Message
from p2plog.raft.progress import Progress
from p2plog.raft.types import ConfState, Index, NodeId, Role, Term


class Participant(Protocol):
    config: RaftConfig
    id: NodeId
    conf: ConfState  # the configuration in force (the newest in the log)
    voters: tuple[NodeId, ...]
    peers: tuple[NodeId, ...]  # every other member, voter or learner: the leader feeds them
    quorum: int
    log: RaftLog
    term: Term
    vote: NodeId | None
    role: Role
    leader: NodeId | None
    election_elapsed: int
    heartbeat_elapsed: int
    leader_ticks: int  # ticks as leader; the clock of ``Progress.last_active`` (CheckQuorum)
    progress: dict[NodeId, Progress]
    lead_transferee: NodeId | None
    uncommitted: deque[tuple[Index, int]]  # (index, bytes) of entries not yet committed
    uncommitted_bytes: int
    bcast_pending: bool  # appends are waiting for the next ``ready()``

    def send(self, m: Message) -> None:
        """Queue ``m``: at once, or after the next persist (``RaftNode.send`` decides)."""
        ...

    def become_follower(self, term: Term, leader_id: NodeId | None) -> None: ...

    def campaign(self, *, pre_vote: bool, transfer: bool) -> None: ...

    def record_vote(self, voter: NodeId, granted: bool) -> None: ...
