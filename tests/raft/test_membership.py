"""Membership changes in the core (``raft.membership``): learners, promote, remove (the leader
too), one change at a time, the own-term rule, configurations in force at append (and undone by
truncation), across snapshots and restarts.
"""

from __future__ import annotations

import pytest

from p2plog.raft import NodeId, Role
from p2plog.raft.config import RaftConfig
from p2plog.raft.membership import (
    ConfChange,
    ConfChangeRefused,
    ConfOp,
    decode_conf,
    encode_conf,
)
from p2plog.raft.messages import AppendEntries, RequestVote, TimeoutNow
from p2plog.raft.types import ConfState
from p2plog.testing.cluster import Cluster

N = NodeId


def _cluster(config: RaftConfig | None = None) -> Cluster:
    c = Cluster(3, config=config)
    c.elect("n1")
    c.propose("n1", b"a")
    c.stabilize()
    c.tell_commit("n1")
    return c


def _change(c: Cluster, op: ConfOp, nid: str, address: str = "") -> int:
    index = c["n1"].propose_conf_change(ConfChange(op, N(nid), address))
    c.process(N("n1"))
    return index


def _settle(c: Cluster, leader: str = "n1") -> None:
    c.stabilize()
    c.tell_commit(leader)


def test_a_learner_gets_the_log_but_no_vote_and_no_say_in_commits() -> None:
    c = _cluster()
    c.add_host("n4")
    _change(c, ConfOp.ADD_LEARNER, "n4", "127.0.0.1:9")
    _settle(c)
    assert c["n1"].conf.learners == ("n4",)
    assert c["n4"].conf.learners == ("n4",)  # it learned its own configuration from the log
    assert c.data("n4") == c.data("n1")
    # With both other voters cut off, the leader and the learner cannot commit anything.
    c.isolate("n2")
    c.isolate("n3")
    commit = c["n1"].log.committed
    c.propose("n1", b"b")
    _settle(c)
    assert c["n1"].log.committed == commit
    # A learner never campaigns, however long it hears nothing.
    c.heal()
    c.crash("n1")
    c.tick("n4", 100)
    assert c["n4"].role is Role.FOLLOWER
    assert not [m for m in c.pending if isinstance(m, RequestVote)]


def test_promote_waits_for_the_learner_to_catch_up_then_it_votes() -> None:
    c = _cluster()
    c.add_host("n4")
    c.isolate("n4")
    _change(c, ConfOp.ADD_LEARNER, "n4", "a:1")
    _settle(c)
    c.run_ticks(2 * c.config.election_ticks)  # n4 never answers: not active, not caught up
    with pytest.raises(ConfChangeRefused, match="not caught up"):
        c["n1"].propose_conf_change(ConfChange(ConfOp.PROMOTE, N("n4")))
    c.heal()
    c.run_ticks(3)
    _change(c, ConfOp.PROMOTE, "n4")
    _settle(c)
    assert c["n1"].voters == ("n1", "n2", "n3", "n4")
    assert c["n1"].quorum == 3
    # Now two of the old voters and the new one commit without the third.
    c.isolate("n3")
    commit = c["n1"].log.committed
    c.propose("n1", b"c")
    _settle(c)
    assert c["n1"].log.committed > commit


def test_one_change_at_a_time_and_not_before_the_leader_committed_its_own_term() -> None:
    c = _cluster()
    c.add_host("n4")
    c.add_host("n5")
    _change(c, ConfOp.ADD_LEARNER, "n4", "a:4")
    with pytest.raises(ConfChangeRefused, match="one change at a time"):
        c["n1"].propose_conf_change(ConfChange(ConfOp.ADD_LEARNER, N("n5"), "a:5"))
    _settle(c)
    _change(c, ConfOp.ADD_LEARNER, "n5", "a:5")  # the first committed: now it may
    _settle(c)
    # A new leader has not committed an entry of its term until its no-op commits.
    assert c["n1"].transfer_leadership(N("n2"))
    c.process(N("n1"))
    for _ in range(5):  # every message but the new leader's appends (its no-op stays out)
        c.deliver(lambda m: not (m.src == "n2" and isinstance(m, AppendEntries)))
    assert c["n2"].role is Role.LEADER
    with pytest.raises(ConfChangeRefused, match="of its term"):
        c["n2"].propose_conf_change(ConfChange(ConfOp.REMOVE, N("n5")))
    with pytest.raises(ConfChangeRefused, match="not the leader"):
        c["n3"].propose_conf_change(ConfChange(ConfOp.REMOVE, N("n5")))


def test_removing_the_leader_hands_leadership_over_once_the_change_commits() -> None:
    c = _cluster()
    _change(c, ConfOp.REMOVE, "n1")
    assert c["n1"].role is Role.LEADER
    assert c["n1"].voters == ("n2", "n3")
    for _ in range(5):  # the appends, their answers: the change commits
        if c["n1"].role is not Role.LEADER:
            break
        c.deliver()
    assert c["n1"].role is Role.FOLLOWER
    sent = [m for m in c.pending if isinstance(m, TimeoutNow)]
    assert len(sent) == 1
    assert sent[0].dst in ("n2", "n3")
    c.stabilize()
    new = c.leader()
    assert new in ("n2", "n3")
    assert c[new].voters == ("n2", "n3")
    # The removed node never gets a say: its campaign is ignored, the leader stays.
    term = c[new].term
    c.tick("n1", 200)
    c.stabilize()
    assert c.leader() == new
    assert c[new].term == term
    c.propose(new, b"after")
    _settle(c, new)
    other = "n3" if new == "n2" else "n2"
    assert c.data(other)[-1] == b"after"


def test_a_configuration_is_in_force_at_append_and_undone_by_truncation() -> None:
    c = _cluster(RaftConfig(pre_vote=False, check_quorum=False))  # no lease: elect n2 at once
    c.add_host("n4")
    c.isolate("n2")
    c.isolate("n3")
    _change(c, ConfOp.ADD_LEARNER, "n4", "a:4")
    c.stabilize()
    assert c["n1"].conf.learners == ("n4",)  # uncommitted, in force on the leader
    c.crash("n1")
    c.heal()
    c.elect("n2")
    c.propose("n2", b"x")
    _settle(c, "n2")
    c.restart("n1")
    assert c["n1"].conf.learners == ("n4",)  # restart: read back from its store
    c.run_ticks(3)
    assert c["n1"].conf.learners == ()  # truncated by the new leader: the old config is back
    assert c["n1"].peers == ("n2", "n3")


def test_the_configuration_travels_in_snapshots_and_restarts() -> None:
    c = _cluster()
    c.add_host("n4")
    _change(c, ConfOp.ADD_LEARNER, "n4", "a:4")
    _settle(c)
    _change(c, ConfOp.PROMOTE, "n4")
    _settle(c)
    for nid in ("n1", "n2", "n3", "n4"):
        snap = c.compact(nid)
        assert snap.conf is not None
        assert snap.conf.voters == ("n1", "n2", "n3", "n4")
    c.add_host("n5")
    _change(c, ConfOp.ADD_LEARNER, "n5", "a:5")
    c.run_ticks(5)
    assert c.restored[N("n5")], "n5 was fed a snapshot"
    assert c["n5"].conf.voters == ("n1", "n2", "n3", "n4")
    assert c["n5"].conf.learners == ("n5",)
    c.crash("n4")
    c.restart("n4")
    assert c["n4"].conf.learners == ("n5",)
    assert "n4" in c["n4"].voters


def test_refused_changes_say_what_to_do() -> None:
    c = _cluster()
    cases = [
        (ConfChange(ConfOp.ADD_LEARNER, N("n2"), "x:1"), "already a member"),
        (ConfChange(ConfOp.PROMOTE, N("n2")), "not a learner"),
        (ConfChange(ConfOp.REMOVE, N("n9")), "not a member"),
        (ConfChange(ConfOp.ADD_LEARNER, N(" bad"), "x:1"), "bad node id"),
    ]
    for ch, words in cases:
        with pytest.raises(ConfChangeRefused, match=words):
            c["n1"].propose_conf_change(ch)


def test_configuration_codec_round_trips_and_refuses_malformed_entries() -> None:
    conf = ConfState((N("a"), N("b")), (N("c"),), ((N("a"), "h:1"), (N("b"), "h:2"), (N("c"), "")))
    assert decode_conf(encode_conf(conf)) == conf
    bad = [
        b"\x04not json",
        b'\x04{"voters":[],"learners":[],"addresses":{}}',
        b'\x04{"voters":["a","a"],"learners":[],"addresses":{"a":""}}',
        b'\x04{"voters":["a"],"learners":[],"addresses":{}}',
        b'\x04{"voters":[1],"learners":[],"addresses":{"1":""}}',
        b"\x03",
    ]
    for data in bad:
        with pytest.raises(ValueError, match="configuration"):
            decode_conf(data)
