"""The sans-I/O Raft core: messages in, actions out; no clock, socket, disk or global randomness.

Drive it like etcd-io/raft's RawNode: feed time with ``tick()`` and input with ``step(msg)`` or
``propose(data)``; when ``has_ready()``, take ``ready()``, persist its hard state, snapshot (it
replaces the log) and entries (fsync when ``must_sync``), send ``messages`` (allowed before the
persist) and ``messages_after_persist`` (only after it), restore the state machine from the
snapshot, apply ``committed_entries``, then ``advance(ready)``.
No ``tick``/``step``/``propose`` may happen between ``ready()`` and ``advance()``.
"""

from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from p2plog.raft.node import RaftNode, Ready
from p2plog.raft.status import Status
from p2plog.raft.types import (
    NO_SNAPSHOT,
    Entry,
    HardState,
    Index,
    LogReader,
    NodeId,
    Role,
    Snapshot,
    SoftState,
    Term,
)

__all__ = [
    "NO_SNAPSHOT",
    "AppendEntries",
    "AppendEntriesResponse",
    "Entry",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "Index",
    "InstallSnapshot",
    "LogReader",
    "Message",
    "NodeId",
    "RaftConfig",
    "RaftNode",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "Snapshot",
    "SoftState",
    "Status",
    "Term",
    "TimeoutNow",
]
