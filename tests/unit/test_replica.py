"""The Replica by hand: three of them, a message queue and in-memory stores; no trio, no files.

The rig delivers messages only when a test says so, so a test can stop between a leader's own
fsync and its followers' acks and look at what has (not) been acked yet. Time is a number the
test moves (milliseconds of every node's wall clock).
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from random import Random

import pytest

from p2plog.order.reorder import ReorderBuffer
from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import Message
from p2plog.raft.types import Index, NodeId, Role
from p2plog.record import validate
from p2plog.replica.proposals import Proposal, RecordAck
from p2plog.replica.replica import Replica
from p2plog.state.applier import Applier
from p2plog.state.entry import entry_ingest_ts, entry_tick_ts
from p2plog.storage.memory import MemoryStore

IDS = (NodeId("n1"), NodeId("n2"), NodeId("n3"))
MS = 1_000_000
CFG = RaftConfig(election_ticks=10, heartbeat_ticks=2)


class Rig:
    def __init__(self, seed: int = 1) -> None:
        self.now_ms = 1_000_000
        self.skew_ms = dict.fromkeys(IDS, 0)
        self.stores = {nid: MemoryStore() for nid in IDS}
        self.wire: deque[Message] = deque()
        self.finished: list[Proposal] = []
        self.cut: set[NodeId] = set()  # nodes whose messages, both ways, are lost
        self.applied_entries: dict[NodeId, list[int]] = {nid: [] for nid in IDS}
        self.emitted: dict[NodeId, list[tuple[int, bool]]] = {nid: [] for nid in IDS}
        self.replicas = {nid: self._make(nid, seed) for nid in IDS}

    def _make(self, nid: NodeId, seed: int) -> Replica:
        return Replica(
            node_id=nid,
            voters=IDS,
            config=CFG,
            store=self.stores[nid],
            applier=Applier(1000, 3600 * 1000 * MS),
            events=ReorderBuffer(reorder_window_ms=100, max_records=1000, max_bytes=1 << 20),
            rng=Random(seed * 10 + IDS.index(nid)),
            wall_ns=lambda: (self.now_ms + self.skew_ms[nid]) * MS,
            time_tick_ns=50 * MS,
        )

    def drain(self, nid: NodeId) -> None:
        """Take every Ready of ``nid``: persist (synced) and queue its messages."""
        r = self.replicas[nid]
        while r.has_ready():
            rd = r.ready()
            on_disk = self.stores[nid].last_index()
            assert all(e.index <= on_disk for e, _ in rd.applied), "applied before persisted"
            self.applied_entries[nid] += [e.index for e, _ in rd.applied]
            self.wire.extend(rd.messages)
            self.finished += rd.finished
            self.emitted[nid] += [(em.index, em.late) for em in rd.emitted]
            self.stores[nid].append_batch(rd.entries, rd.hard_state, sync=True)
            self.wire.extend(rd.messages_after_persist)
            r.advance(rd)

    def settle(self, rounds: int = 100) -> None:
        """Deliver messages until none are left (bounded)."""
        for _ in range(rounds):
            for nid in IDS:
                self.drain(nid)
            if not self.wire:
                return
            while self.wire:
                m = self.wire.popleft()
                if m.src not in self.cut and m.dst not in self.cut:
                    self.replicas[m.dst].step(m)
        raise AssertionError("messages still flowing after the bound")

    def tick(self, n: int = 1, ms_each: int = 10) -> None:
        for _ in range(n):
            self.now_ms += ms_each
            for r in self.replicas.values():
                r.tick()
            self.settle()

    def elect(self, nid: NodeId = IDS[0]) -> Replica:
        r = self.replicas[nid]
        for _ in range(3 * CFG.election_ticks):
            r.raft.tick()  # only nid's timer runs, so nid campaigns first
            self.settle()
            if r.role is Role.LEADER:
                self.tick(2)  # the leader's no-op commits everywhere
                return r
        raise AssertionError(f"{nid} was not elected")

    def submit(self, nid: NodeId, p: Proposal) -> Proposal:
        self.replicas[nid].submit([p])
        self.settle()
        return p


def rec(n: int, msg: str = "m", ts_ms: int | None = None) -> tuple[bytes, bytes]:
    raw: dict[str, object] = {"id": uuid.UUID(int=n).bytes, "msg": f"{msg} {n}"}
    if ts_ms is not None:
        raw["ts"] = ts_ms * MS
    a = validate(raw, node="n1")
    return a.id, a.body


def only(p: Proposal) -> tuple[int, int, bool]:
    assert p.done
    assert p.error is None, p.error
    (out,) = p.result().outcomes()
    assert out is not None
    return out


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_a_quorum_ack_waits_for_the_followers(rig: Rig) -> None:
    lead = rig.elect()
    p = Proposal([rec(1)], "quorum")
    lead.submit([p])
    rig.drain(lead.id)  # on the leader's disk; the appends are still on the wire
    assert not p.done
    assert p not in rig.finished
    rig.settle()
    index, term, dup = only(p)
    assert (index, term, dup) == (1, lead.raft.term, False)
    assert rig.finished.count(p) == 1  # handed out once


def test_a_leader_ack_needs_only_the_leaders_disk(rig: Rig) -> None:
    lead = rig.elect()
    p = Proposal([rec(1)], "leader")
    lead.submit([p])
    rig.drain(lead.id)
    assert p.done
    assert p in rig.finished
    assert lead.raft.log.committed < lead.raft.log.last_index()  # not committed yet


def test_a_retried_id_is_acked_with_its_original_index(rig: Rig) -> None:
    lead = rig.elect()
    first = only(rig.submit(lead.id, Proposal([rec(7)], "quorum")))
    for mode in ("quorum", "leader"):
        again = only(rig.submit(lead.id, Proposal([rec(7, "retry")], mode)))
        assert again == (first[0], first[1], True)
    both = rig.submit(lead.id, Proposal([rec(7), rec(8)], "quorum")).result().outcomes()
    assert both == [(first[0], first[1], True), (first[0] + 1, first[1], False)]


def test_the_same_id_twice_in_flight_is_stored_once(rig: Rig) -> None:
    lead = rig.elect()
    p1, p2 = Proposal([rec(9)], "quorum"), Proposal([rec(9)], "quorum")
    lead.submit([p1])
    rig.drain(lead.id)
    lead.submit([p2])  # a retry while the first is still uncommitted joins it
    rig.settle()
    assert only(p1)[0] == only(p2)[0]
    assert only(p2)[2]  # the joiner is acked as a duplicate
    twice = rig.submit(lead.id, Proposal([rec(4), rec(4, "again")], "quorum"))
    a, b = twice.result().outcomes()
    assert a is not None
    assert b is not None
    assert a[0] == b[0]
    assert lead.applier.records == 2


def test_a_follower_refuses_and_names_the_leader(rig: Rig) -> None:
    lead = rig.elect()
    p = Proposal([rec(1)], "quorum")
    rig.replicas[IDS[1]].submit([p])
    assert p.error == ("not_leader", lead.id)


def test_leadership_lost_fails_what_waits_and_a_retry_dedups(rig: Rig) -> None:
    lead = rig.elect()
    p = Proposal([rec(5)], "quorum")
    lead.submit([p])
    rig.cut.add(lead.id)  # the appends are lost; the leader is cut off
    for _ in range(10 * CFG.election_ticks):
        rig.tick()
        if lead.role is not Role.LEADER and any(
            r.role is Role.LEADER for r in rig.replicas.values() if r is not lead
        ):
            break
    assert p.error is not None  # CheckQuorum: it stepped down
    assert p.error[0] == "unavailable"
    new = next(r for r in rig.replicas.values() if r.role is Role.LEADER)
    retry = only(rig.submit(new.id, Proposal([rec(5)], "quorum")))
    assert retry[2] is False  # the first copy never reached the new leader's log
    rig.cut.clear()
    rig.tick(5)
    assert all(r.applier.records == 1 for r in rig.replicas.values())  # stored once


def test_time_ticks_only_while_records_wait_for_the_watermark(rig: Rig) -> None:
    lead = rig.elect()
    rig.tick(20)
    assert not _ticks(rig, lead)  # nothing buffered: no ticks
    rig.submit(lead.id, Proposal([rec(1, ts_ms=rig.now_ms)], "quorum"))
    rig.tick(20)
    ticks = _ticks(rig, lead)
    assert len(ticks) >= 1
    assert all(b - a >= 50 * MS for a, b in itertools.pairwise(ticks))
    assert lead.events.depth == 0  # the ticks moved the watermark past the record
    assert all(rig.emitted[n] == [(rig.emitted[n][0][0], False)] for n in IDS)


def test_ingest_time_keeps_increasing_across_leaders_with_a_slow_clock(rig: Rig) -> None:
    lead = rig.elect()
    rig.submit(lead.id, Proposal([rec(1)], "quorum"))
    rig.skew_ms[IDS[1]] = -10_000  # the next leader's clock is ten seconds behind
    lead.transfer(IDS[1])
    rig.settle()
    new = rig.replicas[IDS[1]]
    assert new.role is Role.LEADER
    rig.submit(new.id, Proposal([rec(2)], "quorum"))
    store = rig.stores[new.id]
    entries = store.entries(Index(1), Index(store.last_index() + 1), 1 << 30)
    times = [t for e in entries if (t := entry_ingest_ts(e.data)) is not None]
    assert len(times) == 2
    assert times[1] > times[0]


def test_every_node_emits_the_same_event_time_stream(rig: Rig) -> None:
    lead = rig.elect()
    for k in range(1, 30):
        late = k % 7 == 0
        ts = rig.now_ms - (1000 if late else k % 5)
        rig.submit(lead.id, Proposal([rec(k, ts_ms=ts)], "quorum"))
        rig.tick(1, ms_each=7)
    rig.tick(30)
    streams = list(rig.emitted.values())
    assert len(streams[0]) == 29
    assert all(s == streams[0] for s in streams)
    assert sum(late for _, late in streams[0]) >= 4


def test_a_storage_failure_fails_what_waits(rig: Rig) -> None:
    lead = rig.elect()
    p = Proposal([rec(1)], "quorum")
    lead.submit([p])
    assert lead.stop("fsync failed") == [p]
    assert p.error == ("storage_failed", "fsync failed")
    q = Proposal([rec(2)], "quorum")
    lead.submit([q])
    assert q.error == ("storage_failed", "fsync failed")


def test_a_duplicate_ack_names_the_term_of_the_original(rig: Rig) -> None:
    lead = rig.elect()
    first = only(rig.submit(lead.id, Proposal([rec(3)], "quorum")))
    lead.transfer(IDS[1])
    rig.settle()
    new = rig.replicas[IDS[1]]
    again = rig.submit(new.id, Proposal([rec(3)], "quorum")).results[0]
    assert again == RecordAck(uuid.UUID(int=3).bytes, first[0], first[1], True)
    assert new.raft.term > first[1]


def _ticks(rig: Rig, lead: Replica) -> list[int]:
    store = rig.stores[lead.id]
    entries = store.entries(Index(1), Index(store.last_index() + 1), 1 << 30)
    return [t for e in entries if (t := entry_tick_ts(e.data)) is not None]


def test_a_follower_catching_up_applies_only_what_is_on_its_disk(rig: Rig) -> None:
    """The append that brings a lagging follower its entries brings the commit index too; the
    follower must persist them before it applies them (the rig asserts it on every Ready)."""
    lead = rig.elect()
    late = rig.replicas[IDS[2]]
    rig.cut.add(late.id)
    for k in range(1, 4):
        only(rig.submit(lead.id, Proposal([rec(k)], "quorum")))
    assert late.applier.records == 0
    rig.cut.clear()
    rig.tick(5)
    assert late.applier.records == 3
    assert rig.applied_entries[late.id] == sorted(set(rig.applied_entries[late.id]))
