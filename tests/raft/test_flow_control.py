"""Flow control of the Raft core (etcd-io/raft's): fast catch-up with batched and pipelined
appends under a byte cap, the conflict hint that skips a divergent term per round trip, and the
limits on proposals (not leader, empty data, max_uncommitted_bytes).
"""

from __future__ import annotations

import pytest

from p2plog.raft import (
    AppendEntries,
    AppendEntriesResponse,
    NodeId,
    RaftConfig,
)
from p2plog.raft.progress import ProgressState
from p2plog.testing.cluster import Cluster

from .helpers import elect_other_leader, log_of, pending_of

N1, N3 = NodeId("n1"), NodeId("n3")


# ----------------------------------------------------------------------------- Fast catch-up


def test_fast_catch_up_after_isolation() -> None:
    """etcd-io/raft flow control: a follower that missed 500 entries catches up in a handful of
    round trips (batched, pipelined appends), not one per entry."""
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    for i in range(500):
        c.propose("n1", f"entry {i}".encode())
        c.stabilize()
    c.heal()
    c.tick("n1")
    appends = rounds = 0
    while c.pending:
        appends += len(pending_of(c, AppendEntries, dst="n3"))
        c.deliver()
        rounds += 1
    assert c["n3"].log.committed == 501
    assert len(c.data("n3")) == 500
    assert rounds <= 10
    assert appends <= 5


def _catch_up_cluster(cfg: RaftConfig, entries: list[bytes]) -> Cluster:
    c = Cluster(3, config=cfg)
    c.elect("n1")
    c.isolate("n3")
    for d in entries:
        c.propose("n1", d)
        c.stabilize()
    c.heal()
    c.tick("n1")
    return c


def test_append_entries_respect_byte_cap() -> None:
    """etcd-io/raft MaxSizePerMsg: an AppendEntries carries at most max_msg_bytes of payload,
    unless a single entry is larger on its own."""
    cap = 100
    datas = [bytes([65 + i % 26]) * (30 if i != 17 else 250) for i in range(60)]
    c = _catch_up_cluster(RaftConfig(max_msg_bytes=cap), datas)
    seen = 0
    while c.pending:
        for m in pending_of(c, AppendEntries):
            size = sum(len(e.data) for e in m.entries)
            assert size <= cap or len(m.entries) == 1, f"{size} bytes in {len(m.entries)} entries"
            seen += bool(m.entries)
        c.deliver()
    assert seen >= 59 * 30 // cap  # it really took many capped messages
    assert c.data("n3") == datas


def test_pipelining_fills_the_inflight_window_after_first_ack() -> None:
    """etcd-io/raft MaxInflightMsgs: once a probe succeeds, the leader streams up to
    max_inflight_msgs appends to the follower before any of them is acknowledged."""
    cfg = RaftConfig(max_msg_bytes=100, max_inflight_msgs=4)
    c = _catch_up_cluster(cfg, [bytes(30)] * 100)
    while True:  # one message at a time, in order, until n3's first successful ack
        m = c.pending.pop(0)
        c.step(m)
        if isinstance(m, AppendEntriesResponse) and m.src == "n3" and m.success:
            break
    window = pending_of(c, AppendEntries, src="n1", dst="n3")
    assert len(window) == cfg.max_inflight_msgs
    assert all(m.entries for m in window)
    assert c["n1"].progress[N3].state is ProgressState.REPLICATE
    c.stabilize()
    assert len(c.data("n3")) == 100


def test_conflict_hint_skips_a_divergent_term_per_round_trip() -> None:
    """etcd-io/raft findConflictByTerm: a follower with a long divergent tail from an old term
    is brought in line in a few rejections, not one per divergent index."""
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n1")
    for i in range(100):
        c.propose("n1", f"stale {i}".encode())  # term 1, on n1 only
    mid = elect_other_leader(c, "n1", ["n2", "n3"])
    for i in range(50):
        c.propose(mid, f"new {i}".encode())
    c.stabilize()
    # A leader elected with a long log starts probing n1 at its own last index (52), far
    # inside n1's divergent term-1 tail.
    new = "n3" if mid == "n2" else "n2"
    assert c[mid].transfer_leadership(NodeId(new))
    c.process(NodeId(mid))
    c.stabilize()
    assert c.leader() == new
    assert c[new].progress[N1].next == 53
    c.heal()
    c.tick(new)
    rejections = 0
    while c.pending:
        rejections += sum(
            not m.success for m in pending_of(c, AppendEntriesResponse, src="n1", dst=new)
        )
        c.deliver()
    assert log_of(c, "n1") == log_of(c, new)
    assert 1 <= rejections <= 3


# ---------------------------------------------------------------------------------- Proposals


def test_propose_on_follower_returns_none() -> None:
    """Raft §8: only the leader takes client requests; a follower refuses (None)."""
    c = Cluster(3)
    c.elect("n1")
    assert c.propose("n2", b"x") is None
    assert c["n2"].log.last_index() == 1


def test_empty_proposal_is_an_input_error() -> None:
    """Empty data is reserved for the leader's no-op (Raft §8), so proposing it is refused."""
    c = Cluster(3)
    c.elect("n1")
    with pytest.raises(ValueError, match="non-empty"):
        c["n1"].propose(b"")
    with pytest.raises(ValueError, match="non-empty"):
        c["n1"].propose_many([])
    with pytest.raises(ValueError, match="non-empty"):
        c["n1"].propose_many([b"a", b""])
    assert c["n1"].log.last_index() == 1


def test_max_uncommitted_bytes_bounds_a_leader_that_cannot_commit() -> None:
    """etcd-io/raft MaxUncommittedEntriesSize: an isolated leader refuses proposals once its
    uncommitted payload would exceed the limit, and takes them again once entries commit."""
    c = Cluster(3, config=RaftConfig(max_uncommitted_bytes=100, check_quorum=False))
    c.elect("n1")
    c.isolate("n1")
    accepted = [c.propose("n1", bytes(10)) for _ in range(10)]
    assert None not in accepted
    assert c.propose("n1", bytes(10)) is None
    assert c.propose("n1", bytes(1)) is None
    c.heal()
    c.run_ticks(2)
    assert c["n1"].log.committed == 11
    assert c.propose("n1", bytes(10)) == 12


def test_oversized_proposal_accepted_when_nothing_uncommitted() -> None:
    """A single proposal larger than max_uncommitted_bytes still goes in when nothing else is
    uncommitted (otherwise it could never be proposed at all)."""
    c = Cluster(3, config=RaftConfig(max_uncommitted_bytes=100))
    c.elect("n1")
    assert c.propose("n1", bytes(500)) == 2
    assert c.propose("n1", b"x") is None
    c.stabilize()
    c.tell_commit("n1")
    assert c.data("n2") == [bytes(500)]
