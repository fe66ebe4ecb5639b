"""Snapshots (Raft §7, etcd's MsgSnap): a log compacted behind a snapshot, a follower behind the
leader's first index fed the snapshot and then the log after it, the follower's three answers
(ignore, fast-forward, restore), a lost snapshot resent, and a restart from a compacted log.
"""

from __future__ import annotations

from random import Random

from p2plog.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Index,
    InstallSnapshot,
    NodeId,
    RaftNode,
    Role,
    Snapshot,
    Term,
)
from p2plog.raft.progress import ProgressState
from p2plog.testing.cluster import Cluster

from .helpers import pending_of


def _until_snapshot_sent(c: Cluster) -> None:
    """Tick the leader and deliver everything but snapshots until one is pending for n3."""
    for _ in range(20):
        c.tick("n1")
        for _ in range(3):
            c.deliver(lambda m: not isinstance(m, InstallSnapshot))
        if pending_of(c, InstallSnapshot, dst="n3"):
            return
    raise AssertionError("no snapshot sent")


def _cluster_with_log(n_entries: int, down: str = "n3") -> Cluster:
    c = Cluster(3, seed=7)
    c.elect("n1")
    c.crash(down)
    for k in range(n_entries):
        c.propose("n1", f"e{k}".encode())
        c.stabilize(drop=[down])
    c.tell_commit("n1", drop=[down])
    return c


def test_follower_behind_the_first_index_gets_the_snapshot_then_the_log() -> None:
    c = _cluster_with_log(10)
    snap = c.compact("n1", b"state@11")
    assert c.stores[NodeId("n1")].first_index() == snap.index + 1 == 12
    c.propose("n1", b"after")
    c.stabilize(drop=["n3"])
    c.restart("n3")
    c.tell_commit("n1")
    c.tell_commit("n1")
    assert c.restored[NodeId("n3")] == [snap]
    n3 = c["n3"]
    assert n3.log.first_index() == 12
    assert n3.log.committed == c["n1"].log.committed == 12
    assert n3.log.applied == 12
    assert c.data("n3") == [b"after"]  # nothing between its no-op and the snapshot
    assert c["n1"].progress[NodeId("n3")].state is ProgressState.REPLICATE


def test_snapshot_state_pauses_appends_until_answered() -> None:
    c = _cluster_with_log(5)
    c.compact("n1")
    c.restart("n3")
    _until_snapshot_sent(c)  # n3 answers a heartbeat; the leader finds it behind
    snaps = pending_of(c, InstallSnapshot, dst="n3")
    assert len(snaps) == 1
    pr = c["n1"].progress[NodeId("n3")]
    assert pr.state is ProgressState.SNAPSHOT
    c.propose("n1", b"more")
    assert not pending_of(c, AppendEntries, dst="n3")  # paused while the snapshot is out


def test_lost_snapshot_is_sent_again_after_an_election_timeout() -> None:
    c = _cluster_with_log(5)
    c.compact("n1")
    c.restart("n3")
    _until_snapshot_sent(c)
    c.take(lambda m: isinstance(m, InstallSnapshot))  # lost
    for _ in range(c.config.election_ticks + 1):
        c.tick("n1")
        c.deliver(lambda m: not isinstance(m, InstallSnapshot))
    assert pending_of(c, InstallSnapshot, dst="n3")
    c.stabilize()
    assert c["n3"].log.committed == c["n1"].log.committed


def _follower(log_terms: list[int], commit: int) -> RaftNode:
    """A follower n2 whose log holds entries with ``log_terms``, committed to ``commit``."""
    c = Cluster(3, seed=1)
    n2 = c["n2"]
    ents = [(Term(t), Index(i + 1)) for i, t in enumerate(log_terms)]
    from p2plog.raft import Entry

    top = Term(max(log_terms))
    n2.step(
        AppendEntries(
            NodeId("n1"),
            NodeId("n2"),
            top,
            Index(0),
            Term(0),
            tuple(Entry(t, i, b"x") for t, i in ents),
            Index(commit),
        )
    )
    c.process(NodeId("n2"))
    c.pending.clear()
    return n2


def test_snapshot_at_or_below_commit_is_ignored() -> None:
    n2 = _follower([1, 1, 1, 1], commit=3)
    n2.step(InstallSnapshot(NodeId("n1"), NodeId("n2"), Term(1), Snapshot(Index(2), Term(1), b"")))
    assert n2.log.pending_snapshot is None
    rd = n2.ready()
    (resp,) = rd.messages_after_persist
    assert isinstance(resp, AppendEntriesResponse)
    assert resp.success
    assert resp.index == 3


def test_snapshot_of_an_entry_we_hold_only_moves_the_commit() -> None:
    n2 = _follower([1, 1, 1, 1], commit=1)
    n2.step(InstallSnapshot(NodeId("n1"), NodeId("n2"), Term(1), Snapshot(Index(3), Term(1), b"")))
    assert n2.log.pending_snapshot is None
    assert n2.log.committed == 3
    assert n2.log.last_index() == 4  # the entry after it stays


def test_snapshot_replaces_a_divergent_log() -> None:
    n2 = _follower([1, 1, 1, 1], commit=1)
    snap = Snapshot(Index(3), Term(2), b"leader state")
    n2.step(InstallSnapshot(NodeId("n1"), NodeId("n2"), Term(2), snap))
    assert n2.log.first_index() == 4
    assert n2.log.last_index() == 3
    assert n2.log.term(Index(3)) == 2
    rd = n2.ready()
    assert rd.snapshot is snap
    assert rd.must_sync
    assert not rd.committed_entries
    (resp,) = rd.messages_after_persist  # the answer waits for the persist
    assert isinstance(resp, AppendEntriesResponse)
    assert resp.index == 3
    n2.advance(rd)
    assert n2.log.applied == 3


def test_restart_from_a_compacted_log_starts_at_the_snapshot() -> None:
    c = _cluster_with_log(6)
    snap = c.compact("n1")
    store = c.stores[NodeId("n1")]
    node = RaftNode(c.config, NodeId("n1"), c.ids, store.hard_state(), store, Random(1))
    assert node.log.committed == node.log.applied == snap.index
    assert node.log.first_index() == snap.index + 1
    assert node.role is Role.FOLLOWER
