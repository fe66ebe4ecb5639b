"""RaftLoop, the replica's driver, under trio's MockClock: three loops in one trio process,
each with its own SegmentedLog on real files, wired by an in-memory network that can drop
messages. What the replica decides (acks, dedup, time ticks, ingest time) is tested without
trio or files in ``test_replica.py``; this file tests what the driver adds: the inbox, ticks,
group commit, fsync on the loop or in a thread, disk-full backoff and storage failure.

Time is virtual (``autojump_clock``): the clock jumps whenever every task is blocked, so an
election timeout costs no real time. ``append_batch`` runs in real worker threads, and a task
waiting for a thread counts as blocked: left alone, the clock would jump to the next timer during
every fsync, so each fsync would look like a disk stall of a tick or more and the followers
would keep timing out. ``frozen_threads`` keeps a task runnable while a worker thread works, so
virtual time stands still during real I/O (a fast disk); disk stalls are then modelled on
purpose (DiskFull backoff). Every wait sits under ``trio.fail_after`` in virtual time.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from random import Random
from typing import Any

import pytest
import trio
import trio.testing

from p2plog.errors import DiskFull, StorageFailed
from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import HeartbeatResponse, Message
from p2plog.raft.types import Entry, HardState, Index, NodeId, Role, Term
from p2plog.record import validate
from p2plog.replica.proposals import Proposal, RecordAck
from p2plog.runtime import raft_loop as raft_loop_mod
from p2plog.runtime.raft_loop import RaftLoop
from p2plog.state.applier import Applied, Applier
from p2plog.state.entry import Rec, parse_batch
from p2plog.storage.segmented_log import SegmentedLog

TICK_S = 0.02
CFG = RaftConfig(election_ticks=10, heartbeat_ticks=2)
ELECTION_S = CFG.election_ticks * TICK_S  # 0.2 s; randomized timeouts are in [0.2, 0.4)
IDS = (NodeId("n1"), NodeId("n2"), NodeId("n3"))
S = 1_000_000_000
WAIT_S = 30.0  # virtual seconds: the hard cap on any single wait (a hang fails, never blocks)


@dataclass(frozen=True, slots=True)
class Env:
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frozen_threads: None) -> Env:
    """What open_cluster needs. (The clock itself must be a test argument: pytest-trio only
    runs a test under a clock fixture that the test function takes.)"""
    return Env(tmp_path, monkeypatch)


@pytest.fixture
def frozen_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``trio.to_thread.run_sync`` spin on checkpoints while its thread runs (see the
    module docstring): the worker is a real thread, but no virtual time passes meanwhile."""
    real_run_sync = trio.to_thread.run_sync

    async def run_sync(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        done = trio.Event()
        box: dict[str, Any] = {}

        async def worker() -> None:
            try:
                box["value"] = await real_run_sync(fn, *args, **kw)
            except Exception as e:  # handed to the caller below, like run_sync would
                box["error"] = e
            finally:
                done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            while not done.is_set():
                await trio.lowlevel.checkpoint()  # runnable, so the mock clock cannot jump
        if "error" in box:
            raise box["error"]
        return box["value"]

    monkeypatch.setattr(trio.to_thread, "run_sync", run_sync)


class Prop(Proposal):
    """A proposal with the event the runtime would wait on (``wake`` sets it)."""

    __slots__ = ("woken",)

    def __init__(self, recs: list[tuple[bytes, bytes]], ack: str) -> None:
        self.woken = trio.Event()
        super().__init__(recs, ack, wake=self.woken.set)


class Cluster:
    """Three RaftLoops and the network between them."""

    def __init__(self, tmp_path: Path) -> None:
        self.loops: dict[NodeId, RaftLoop] = {}
        self.storages: dict[NodeId, SegmentedLog] = {}
        self.applied: dict[NodeId, list[tuple[Entry, Applied | None]]] = {}
        self.isolated: set[NodeId] = set()  # nodes whose messages (both ways) are dropped
        self.skew_ns: dict[NodeId, int] = dict.fromkeys(IDS, 0)  # each node's wall clock error
        for nid in IDS:
            storage = SegmentedLog(tmp_path / nid, node=nid)
            self.storages[nid] = storage
            self.applied[nid] = []
            self.loops[nid] = RaftLoop(
                node_id=nid,
                voters=IDS,
                raft_config=CFG,
                storage=storage,
                applier=Applier(1000, 3600 * S),
                send=self.send,
                on_applied=lambda items, _emitted, nid=nid: self.applied[nid].extend(items),
                tick_s=TICK_S,
                limiter=trio.CapacityLimiter(1),
                wall_ns=partial(self.wall_ns, nid),
            )

    def wall_ns(self, nid: NodeId) -> int:
        return round(trio.current_time() * S) + self.skew_ns[nid]

    def send(self, m: Message) -> None:
        if m.src in self.isolated or m.dst in self.isolated:
            return
        self.loops[m.dst].deliver_nowait(m)

    # ------------------------------------------------------------ waiting

    async def wait_until(self, pred: Callable[[], bool], within_s: float = WAIT_S) -> float:
        """Poll ``pred`` every tick of virtual time; returns the virtual time it took."""
        t0 = trio.current_time()
        with trio.fail_after(within_s):
            # The predicates span several loops' state, which has no single event to wait on;
            # polling costs nothing in virtual time.
            while not pred():  # noqa: ASYNC110
                await trio.sleep(TICK_S / 2)
        return trio.current_time() - t0

    def leaders(self, among: Sequence[NodeId] = IDS) -> list[RaftLoop]:
        return [self.loops[n] for n in among if self.loops[n].status().role is Role.LEADER]

    def stable_leader(self, among: Sequence[NodeId]) -> RaftLoop | None:
        """The one leader of ``among`` that every member of ``among`` follows, if any."""
        leaders = self.leaders(among)
        if len(leaders) != 1:
            return None
        lead = leaders[0]
        st = lead.status()
        for n in among:
            other = self.loops[n].status()
            if other.leader != lead.id or other.term != st.term:
                return None
        return lead

    async def wait_leader(
        self, among: Sequence[NodeId] = IDS, within_s: float = WAIT_S
    ) -> RaftLoop:
        await self.wait_until(lambda: self.stable_leader(among) is not None, within_s)
        lead = self.stable_leader(among)
        assert lead is not None
        return lead

    async def wait_new_leader(self, old: RaftLoop) -> RaftLoop:
        def moved() -> bool:
            s = self.stable_leader(IDS)
            return s is not None and s is not old

        await self.wait_until(moved)
        new = self.stable_leader(IDS)
        assert new is not None
        return new

    def followers(self, lead: RaftLoop) -> list[RaftLoop]:
        return [lp for lp in self.loops.values() if lp is not lead]

    async def submit(self, loop: RaftLoop, p: Proposal) -> Proposal:
        assert loop.submit_nowait(p)
        with trio.fail_after(WAIT_S):
            await p.woken.wait()
        return p

    def log_records(self, nid: NodeId) -> list[tuple[int, int, bytes]]:
        """(record index, term, record id) of every record in ``nid``'s persisted log."""
        return [(r.index, r.term, r.id) for r in self.log_recs(nid)]

    def log_recs(self, nid: NodeId) -> list[Rec]:
        s = self.storages[nid]
        out: list[Rec] = []
        for e in s.entries(s.first_index(), Index(s.last_index() + 1), 1 << 30):
            b = parse_batch(e.data)
            if b is not None:
                out += b.records(e.term)
        return out

    def applied_records(self, nid: NodeId) -> list[tuple[int, bytes, bool]]:
        """(record index, id, dup) of every record ``nid`` applied."""
        out = []
        for _, a in self.applied[nid]:
            if a is not None:
                for k, rid in enumerate(a.batch.ids()):
                    out.append((a.record_index(k), rid, k in a.dups))
        return out


@asynccontextmanager
async def open_cluster(env: Env, seed: int = 1) -> AsyncIterator[Cluster]:
    tmp_path, monkeypatch = env.tmp_path, env.monkeypatch
    # Seeded election timeouts: each loop builds its RaftNode with Random(); give it ours.
    seeds = itertools.count(seed * 100)
    monkeypatch.setattr(raft_loop_mod, "Random", lambda: Random(next(seeds)))
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock), "need autojump_clock"
    c = Cluster(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            for lp in c.loops.values():
                nursery.start_soon(lp.run)
            yield c
            nursery.cancel_scope.cancel()
    finally:
        for s in c.storages.values():
            s.close()


def record(n: int, msg: str = "m") -> tuple[bytes, bytes]:
    a = validate({"id": uuid.UUID(int=n).bytes, "msg": f"{msg} {n}"}, node="n1")
    return a.id, a.body


def acks_of(p: Proposal) -> list[RecordAck | None]:
    """One ack (or None) per position, from the proposal's outcome."""
    return [
        None if o is None else RecordAck(p.ids[k], *o) for k, o in enumerate(p.result().outcomes())
    ]


def only_ack(p: Proposal) -> RecordAck:
    assert p.error is None, p.error
    assert len(acks_of(p)) == 1
    ack = acks_of(p)[0]
    assert ack is not None
    return ack


# ------------------------------------------------------------------ election


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_leader_elected_within_bounded_virtual_time(
    autojump_clock: trio.testing.MockClock,
    env: Env,
    seed: int,
) -> None:
    async with open_cluster(env, seed) as c:
        took = await c.wait_until(lambda: c.stable_leader(IDS) is not None)
        # first timeout < 2 * ELECTION_S, then one PreVote and one vote round trip (no delay
        # on this network); the slack allows a split vote's second round.
        assert took < 4 * ELECTION_S
        lead = c.stable_leader(IDS)
        assert lead is not None
        st = lead.status()
        assert st.term >= 1
        assert st.vote == lead.id
        # the new leader's no-op (Raft §8) commits and is applied everywhere
        await c.wait_until(lambda: all(lp.status().applied_index >= 1 for lp in c.loops.values()))
        for nid in IDS:
            assert c.storages[nid].hard_state() == HardState(st.term, c.loops[nid].status().vote)
        # and the leadership is stable on a healthy network
        t0_term = st.term
        await trio.sleep(10 * ELECTION_S)
        assert c.stable_leader(IDS) is lead
        assert lead.status().term == t0_term


# ------------------------------------------------------------------ proposals


async def test_quorum_ack_after_commit(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        term = lead.status().term
        recs = [record(i) for i in range(1, 4)]
        p = await c.submit(lead, Prop(recs, "quorum"))
        assert p.error is None
        acks = [a for a in acks_of(p) if a is not None]
        assert len(acks) == 3
        assert [a.id for a in acks] == [r[0] for r in recs]
        assert [a.index for a in acks] == [acks[0].index + k for k in range(3)]
        assert all(a.term == term and not a.dup for a in acks)
        # acked means committed and applied on the leader. (status() is the snapshot taken at
        # the end of a loop round, and the ack wakes us mid-round: read the node itself.)
        assert lead.applier.record_index >= acks[-1].index
        assert lead.replica.waiters == {}
        assert lead.replica.pending_ids == {}
        # every node ends with the same records at the same indexes
        want = [(a.index, a.term, a.id) for a in acks]
        await c.wait_until(lambda: all(c.log_records(n) == want for n in IDS))
        await c.wait_until(
            lambda: all(c.applied_records(n) == [(a.index, a.id, False) for a in acks] for n in IDS)
        )
        # one batch entry holds the three records
        r = c.log_recs(c.followers(lead)[0].id)[0].decode()
        assert (r.index, r.msg, r.id) == (acks[0].index, "m 1", recs[0][0])
        assert len({e.index for e, a in c.applied[lead.id] if a is not None}) == 1


async def test_many_concurrent_proposals_all_commit_in_order(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        ps = [Prop([record(i)], "quorum") for i in range(1, 51)]
        batches_before = lead.fsync_s.count
        for p in ps:
            assert lead.submit_nowait(p)
        with trio.fail_after(WAIT_S):
            for p in ps:
                await p.woken.wait()
        indexes = [only_ack(p).index for p in ps]
        assert indexes == list(range(indexes[0], indexes[0] + 50))  # in submission order
        # group commit: the loop took all 50 from its inbox in one round, so one append_batch
        # (one fsync) carried them
        assert lead.fsync_s.count - batches_before == 1
        await c.wait_until(lambda: all(len(c.log_records(n)) == 50 for n in IDS))
        await trio.sleep(2 * TICK_S)  # status() is a per-round snapshot
        st = lead.status()
        last = lead.replica.raft.log.last_index()
        followers = {k: v for k, v in st.progress.items() if k != lead.id}
        assert set(followers) == {f.id for f in c.followers(lead)}
        for pr in followers.values():
            assert (pr.match, pr.state.value) == (last, "replicate")


async def test_leader_ack_after_persist_before_commit(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        # Cut the leader off, so nothing it appends can commit.
        c.isolated.add(lead.id)
        commit_before = lead.status().commit_index
        pl = Prop([record(1)], "leader")
        pq = Prop([record(2)], "quorum")
        assert lead.submit_nowait(pl)
        assert lead.submit_nowait(pq)
        with trio.fail_after(ELECTION_S):  # well before CheckQuorum could depose it
            await pl.woken.wait()
        ack = only_ack(pl)
        assert ack.term == lead.status().term
        assert not ack.dup
        assert c.log_records(lead.id)[-1][0] >= ack.index  # on the leader's disk
        assert lead.replica.raft.status().commit_index == commit_before  # not committed
        assert not pq.done  # a quorum ack must wait for the commit


async def test_empty_proposal_is_done_at_once(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        p = Prop([], "quorum")
        assert p.done
        assert lead.submit_nowait(p)
        await trio.sleep(5 * TICK_S)
        assert p.error is None
        assert not lead.stopped.is_set()
        assert lead.replica.waiters == {}


async def test_isolated_leader_steps_down_and_fails_pending(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        old_term = lead.status().term
        c.isolated.add(lead.id)
        t0 = trio.current_time()
        ps = [Prop([record(i)], "quorum") for i in (1, 2)]
        for p in ps:
            assert lead.submit_nowait(p)
        await c.wait_until(lambda: lead.status().role is not Role.LEADER)
        took = trio.current_time() - t0
        # CheckQuorum (thesis §6.2): within about one election timeout of the last answer
        assert took <= 2 * ELECTION_S + 4 * TICK_S
        assert lead.status().term == old_term  # stepping down does not bump the term
        for p in ps:
            assert p.done
            assert p.error is not None
            assert p.error[0] == "unavailable"
        assert lead.replica.waiters == {}
        assert lead.replica.pending_ids == {}
        # the majority side elects a new leader at a higher term
        rest = [n for n in IDS if n != lead.id]
        new = await c.wait_leader(rest)
        assert new.status().term > old_term
        # healing: the old leader rejoins as a follower of the new one
        c.isolated.clear()
        await c.wait_until(lambda: c.stable_leader(IDS) is new)
        # the retried ids are stored exactly once (whether or not the first try committed)
        for i in (1, 2):
            only_ack(await c.submit(new, Prop([record(i)], "quorum")))
        await c.wait_until(lambda: all(c.log_records(n) == c.log_records(new.id) for n in IDS))
        ids = [rid for _, _, rid in c.log_records(new.id)]
        assert len(set(ids)) == len(ids) == 2


async def test_follower_hears_of_a_new_leader_and_rejects_proposals(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        c.isolated.add(lead.id)
        await c.wait_until(lambda: lead.status().role is not Role.LEADER)
        p = await c.submit(lead, Prop([record(1)], "quorum"))
        assert p.error is not None
        assert p.error[0] == "not_leader"


async def test_role_changed_event_fires(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        ev = lead.role_changed
        assert not ev.is_set()
        c.isolated.add(lead.id)
        with trio.fail_after(WAIT_S):
            await ev.wait()
        assert lead.role_changed is not ev  # replaced for the next waiter


@pytest.mark.parametrize("named", [False, True], ids=["most-up-to-date", "named"])
async def test_request_transfer_moves_leadership(
    autojump_clock: trio.testing.MockClock,
    env: Env,
    named: bool,
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        only_ack(await c.submit(lead, Prop([record(1)], "quorum")))
        old_term = lead.status().term
        to = c.followers(lead)[-1].id if named else None
        t0 = trio.current_time()
        lead.request_transfer(to)
        new = await c.wait_new_leader(lead)
        # TimeoutNow skips PreVote and the election timeout: one round trip, not a timeout
        assert trio.current_time() - t0 < ELECTION_S
        if to is not None:
            assert new.id == to
        assert new.status().term == old_term + 1
        # the new leader takes writes
        a = only_ack(await c.submit(new, Prop([record(2)], "quorum")))
        assert a.term == old_term + 1


async def test_transfer_on_a_follower_is_ignored(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        term = lead.status().term
        c.followers(lead)[0].request_transfer()
        await trio.sleep(5 * ELECTION_S)
        assert c.stable_leader(IDS) is lead
        assert lead.status().term == term


async def test_full_inbox_refuses_proposals_and_drops_messages(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    env.monkeypatch.setattr(raft_loop_mod, "INBOX_SIZE", 2)
    c = Cluster(env.tmp_path)  # not running: nothing drains the inboxes
    try:
        lp = c.loops[IDS[0]]
        assert lp.submit_nowait(Prop([record(1)], "quorum"))
        assert lp.submit_nowait(Prop([record(2)], "quorum"))
        assert not lp.submit_nowait(Prop([record(3)], "quorum"))  # -> "overloaded"
        lp.deliver_nowait(HeartbeatResponse(IDS[1], IDS[0], Term(1)))  # dropped, no error
        lp.request_transfer()  # dropped with a warning, no error
    finally:
        for s in c.storages.values():
            s.close()


# ------------------------------------------------------------------ storage errors


class FlakyAppend:
    """Wraps a SegmentedLog's append_batch: raises ``error`` for the next ``times`` calls that
    carry entries, recording the virtual time of every call (on the loop or a worker thread)."""

    def __init__(
        self, storage: SegmentedLog, error: Exception, times: int, token: trio.lowlevel.TrioToken
    ) -> None:
        self.real = storage.append_batch
        self.error = error
        self.left = times
        self.calls: list[tuple[float, bool]] = []  # (virtual time, raised)
        self.token = token

    def __call__(self, entries: Sequence[Entry], hs: HardState | None, **kw: Any) -> None:
        try:
            now = trio.current_time()  # a small write runs on the loop itself
        except RuntimeError:  # a worker thread
            now = trio.from_thread.run_sync(trio.current_time, trio_token=self.token)
        if entries and self.left > 0:
            self.left -= 1
            self.calls.append((now, True))
            raise self.error
        self.calls.append((now, False))
        self.real(entries, hs, **kw)


async def watch_flag(get: Callable[[], bool], seen: list[bool]) -> None:
    while True:
        v = get()
        if not seen or seen[-1] != v:
            seen.append(v)
        await trio.sleep(0.005)


async def test_disk_full_on_a_follower_retries_with_backoff(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        f = c.followers(lead)[0]
        flaky = FlakyAppend(
            c.storages[f.id], DiskFull("no space (test)"), 4, trio.lowlevel.current_trio_token()
        )
        env.monkeypatch.setattr(c.storages[f.id], "append_batch", flaky)
        seen: list[bool] = []
        async with trio.open_nursery() as watch:
            watch.start_soon(watch_flag, lambda: f.disk_full, seen)
            await trio.sleep(0.01)  # the watcher sees the first value (a small write is inline)
            acks = [only_ack(await c.submit(lead, Prop([record(i)], "quorum"))) for i in (1, 2)]
            # the other follower carried the commit; the full one is still retrying
            await c.wait_until(lambda: flaky.left == 0 and not f.disk_full)
            await trio.sleep(0.05)  # let the watcher see the last value
            watch.cancel_scope.cancel()
        assert seen[:3] == [False, True, False]
        raised = [t for t, r in flaky.calls if r]
        retry = next(t for t, r in flaky.calls if not r and t > raised[-1])
        gaps = [b - a for a, b in itertools.pairwise([*raised, retry])]
        # backoff 0.05, 0.1, 0.2, 0.4 s (plus at most a little virtual time for the thread)
        for gap, delay in zip(gaps, (0.05, 0.1, 0.2, 0.4), strict=True):
            assert delay - 1e-9 <= gap < delay + 0.1, gaps
        # nothing lost: the follower catches up to exactly the leader's records
        want = [(a.index, a.term, a.id) for a in acks]
        await c.wait_until(lambda: c.log_records(f.id) == want)
        await c.wait_until(
            lambda: [r[:2] for r in c.applied_records(f.id)] == [(a.index, a.id) for a in acks]
        )
        assert c.stable_leader(IDS) is lead  # a stalled follower costs no leadership


async def test_disk_full_on_the_leader_then_success(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        flaky = FlakyAppend(
            c.storages[lead.id], DiskFull("no space (test)"), 1, trio.lowlevel.current_trio_token()
        )
        env.monkeypatch.setattr(c.storages[lead.id], "append_batch", flaky)
        seen: list[bool] = []
        async with trio.open_nursery() as watch:
            watch.start_soon(watch_flag, lambda: lead.disk_full, seen)
            await trio.sleep(0.01)  # the watcher sees the first value (a small write is inline)
            p = Prop([record(1)], "quorum")
            assert lead.submit_nowait(p)
            with trio.fail_after(WAIT_S):
                await p.woken.wait()
            await c.wait_until(lambda: not lead.disk_full)
            await trio.sleep(0.05)  # let the watcher see the last value
            watch.cancel_scope.cancel()
        assert seen == [False, True, False]
        assert flaky.left == 0
        # one 0.05 s backoff is well inside the followers' election timeout: still the leader
        ack = only_ack(p)
        assert c.stable_leader(IDS) is lead
        want = [(ack.index, ack.term, ack.id)]
        await c.wait_until(lambda: all(c.log_records(n) == want for n in IDS))


async def test_storage_failed_stops_the_loop(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        flaky = FlakyAppend(
            c.storages[lead.id],
            StorageFailed("fdatasync failed (test)"),
            1,
            trio.lowlevel.current_trio_token(),
        )
        env.monkeypatch.setattr(c.storages[lead.id], "append_batch", flaky)
        p = Prop([record(1), record(2)], "quorum")
        assert lead.submit_nowait(p)
        with trio.fail_after(WAIT_S):
            await lead.stopped.wait()
        assert lead.failed == "fdatasync failed (test)"
        assert p.done
        assert p.error == ("storage_failed", "fdatasync failed (test)")
        assert lead.replica.waiters == {}
        assert lead.replica.pending_ids == {}
        assert len(flaky.calls) == 1  # no retry after an I/O error (fsyncgate)
        # the others carry on without it
        rest = [n for n in IDS if n != lead.id]
        new = await c.wait_leader(rest)
        only_ack(await c.submit(new, Prop([record(3)], "quorum")))


async def test_storage_failed_also_fails_proposals_queued_in_the_inbox(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        storage = c.storages[lead.id]
        real = storage.append_batch
        in_fsync = threading.Event()
        release = threading.Event()

        def failing(entries: Sequence[Entry], hs: HardState | None, **kw: Any) -> None:
            if not entries:
                real(entries, hs, **kw)
                return
            in_fsync.set()
            release.wait(10)  # real seconds, bounded; released below
            raise StorageFailed("fdatasync failed (test)")

        env.monkeypatch.setattr(storage, "append_batch", failing)
        p1 = Prop([record(1)], "quorum")
        assert lead.submit_nowait(p1)
        assert await trio.to_thread.run_sync(in_fsync.wait, 10)  # real seconds, bounded
        p2 = Prop([record(2)], "quorum")  # arrives while the fsync is failing
        assert lead.submit_nowait(p2)
        release.set()
        with trio.fail_after(WAIT_S):
            await lead.stopped.wait()
        assert p1.error is not None
        assert p1.error[0] == "storage_failed"
        with trio.move_on_after(WAIT_S):
            await p2.woken.wait()
        assert p2.error is not None
        assert p2.error[0] == "storage_failed"


async def test_submit_after_storage_failed_fails_at_once(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        flaky = FlakyAppend(
            c.storages[lead.id], StorageFailed("EIO (test)"), 1, trio.lowlevel.current_trio_token()
        )
        env.monkeypatch.setattr(c.storages[lead.id], "append_batch", flaky)
        assert lead.submit_nowait(Prop([record(1)], "quorum"))
        with trio.fail_after(WAIT_S):
            await lead.stopped.wait()
        p = Prop([record(2)], "leader")
        lead.submit_nowait(p)
        assert p.done  # no loop is left to take it: answered on the spot
        assert p.error == ("storage_failed", "EIO (test)")


# ------------------------------------------------------------------ leader time


async def test_small_writes_run_on_the_loop_large_ones_in_a_worker_thread(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    """A small Ready is written and fsync'd on the loop (the thread hop cost more than the
    fdatasync at low load): a follower's, and a leader's lone write (nothing else in flight).
    Large Readies go to a worker thread, and so does a leader's write while an earlier entry
    still awaits commit (group commit forms meanwhile), and any write while a read holds the
    storage."""
    async with open_cluster(env) as c:
        lead = await c.wait_leader()
        f = next(c.loops[n] for n in IDS if n != lead.id)
        where: list[tuple[NodeId, int, bool]] = []  # (node, bytes of entries, on the loop)

        def spy(nid: NodeId, real: Callable[..., None]) -> Callable[..., None]:
            def append(entries: Sequence[Entry], hs: HardState | None, **kw: Any) -> None:
                on_loop = threading.current_thread() is threading.main_thread()
                where.append((nid, sum(len(e.data) for e in entries), on_loop))
                real(entries, hs, **kw)

            return append

        for nid in IDS:
            storage = c.storages[nid]
            env.monkeypatch.setattr(storage, "append_batch", spy(nid, storage.append_batch))

        def writes(nid: NodeId, since: int = 0) -> list[tuple[int, bool]]:
            return [(size, inline) for n, size, inline in where[since:] if n == nid and size]

        only_ack(await c.submit(lead, Prop([record(1)], "quorum")))
        await c.wait_until(lambda: len(writes(f.id)) == 1)
        assert [inline for _, inline in writes(lead.id)] == [True]
        assert [inline for _, inline in writes(f.id)] == [True]
        before = len(where)
        others = [c.loops[n] for n in IDS if n != lead.id]
        async with others[0].limiter, others[1].limiter:  # the first entry cannot commit
            p1 = Prop([record(10)], "quorum")
            assert lead.submit_nowait(p1)
            for _ in range(200):  # checkpoints, not wait_until: the clock is frozen meanwhile
                if len(writes(lead.id, before)) == 1:
                    break
                await trio.lowlevel.checkpoint()
            assert len(writes(lead.id, before)) == 1
            p2 = Prop([record(11)], "quorum")
            assert lead.submit_nowait(p2)
            for _ in range(50):  # not a sleep: threads freeze the mock clock (frozen_threads)
                await trio.lowlevel.checkpoint()
        await c.wait_until(lambda: len(writes(lead.id, before)) == 2)
        assert [inline for _, inline in writes(lead.id, before)] == [True, False]
        with trio.fail_after(WAIT_S):
            await p2.woken.wait()
        only_ack(p1)
        only_ack(p2)
        big = raft_loop_mod.INLINE_PERSIST_BYTES
        half = "x" * (big // 2 + 1000)
        before = len(where)
        p = await c.submit(lead, Prop([record(2, half), record(3, half)], "quorum"))
        assert p.error is None
        assert len(acks_of(p)) == 2
        await c.wait_until(lambda: any(size > big for size, _ in writes(f.id, before)))
        assert [inline for size, inline in writes(f.id, before) if size > big] == [False]
        before = len(where)
        async with f.limiter:  # a read holds the follower's storage: its write waits in a thread
            p = Prop([record(4)], "quorum")
            assert lead.submit_nowait(p)
            for _ in range(50):  # not a sleep: threads freeze the mock clock (frozen_threads)
                await trio.lowlevel.checkpoint()
        await c.wait_until(lambda: len(writes(f.id, before)) == 1)
        assert [inline for _, inline in writes(f.id, before)] == [False]
        with trio.fail_after(WAIT_S):
            await p.woken.wait()
        only_ack(p)
