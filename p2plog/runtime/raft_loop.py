"""The Raft loop: the sole owner of the ``RaftNode``, its storage writes and the applier.

One task runs ``run()``: it waits for input (peer messages, proposals, transfers) or the next
tick, feeds all that arrived into the node, then drains Ready batches: send ``messages`` ->
persist (one ``append_batch`` = one fsync, in a worker thread, so the inbox keeps filling and the
next batch is a group commit; a small Ready on the loop itself when nothing else is in flight:
see ``_persist``) -> send ``messages_after_persist`` -> ack ``ack=leader`` records
-> apply -> ``advance``. Other tasks only talk to it through its bounded inbox.

Disk full: the append is retried with backoff; the loop stalls (to peers it looks down, so a
leader loses leadership) and resumes by itself when space returns. An I/O error from fsync is
fatal for writes (fsyncgate): the loop stops and the node serves reads and says why.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from random import Random

import trio

from p2plog.clock.hlc import HLC
from p2plog.entry import MAX_ENTRY_RECORDS, batch_data_of, entry_ingest_ts, parse_batch, tick_data
from p2plog.errors import DiskFull, StorageFailed
from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import Message
from p2plog.raft.node import RaftNode, Ready, Status
from p2plog.raft.progress import ProgressState
from p2plog.raft.types import Entry, Index, NodeId, Role, SoftState
from p2plog.record import PER_RECORD_OVERHEAD
from p2plog.runtime.proposals import Proposal, RecordAck, Waiter, position_of
from p2plog.state.applier import Applied, Applier
from p2plog.storage.segmented_log import SegmentedLog

log = logging.getLogger("p2plog.raft_loop")

INBOX_SIZE = 8192
MAX_EVENTS_PER_ROUND = 4096
MAX_ENTRY_BYTES = 1 << 20  # a round's submissions are split into entries of about this size
INLINE_PERSIST_BYTES = 64 << 10  # smaller Readies are written + fsync'd on the loop itself


@dataclass(slots=True)
class _Building:
    """A batch entry being assembled from one round's proposals."""

    ids: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    slots: list[tuple[Proposal, int, int, int]] = field(default_factory=list)
    joiners: list[tuple[Proposal, int, int]] = field(default_factory=list)
    size: int = 0
    base: int = 0
    positions: dict[bytes, int] = field(default_factory=dict)  # see position_of

    def position(self, rid: bytes) -> int:
        return position_of(self.ids, self.positions, rid)

    def add_one(self, p: Proposal, pos: int) -> None:
        k = len(self.ids)
        body = p.bodies[pos]
        self.ids.append(p.ids[pos])
        self.bodies.append(body)
        self.size += len(body) + PER_RECORD_OVERHEAD
        last = self.slots[-1] if self.slots else None
        if (
            last is not None
            and last[0] is p
            and last[1] + last[3] == pos
            and last[2] + last[3] == k
        ):
            self.slots[-1] = (p, last[1], last[2], last[3] + 1)
        else:
            self.slots.append((p, pos, k, 1))


@dataclass(slots=True)
class Transfer:
    to: NodeId | None  # None: the most up-to-date follower


Event = Message | Proposal | Transfer
AppliedHook = Callable[[Sequence[tuple[Entry, Applied | None]]], None]


class RaftLoop:
    def __init__(
        self,
        *,
        node_id: NodeId,
        voters: Sequence[NodeId],
        raft_config: RaftConfig,
        storage: SegmentedLog,
        applier: Applier,
        send: Callable[[Message], None],
        on_applied: AppliedHook,
        tick_s: float,
        limiter: trio.CapacityLimiter,
        wall_ns: Callable[[], int] = time.time_ns,
        wants_time_tick: Callable[[], bool] = lambda: False,
        time_tick_s: float = 0.25,
    ) -> None:
        self.id = node_id
        self.storage = storage
        self.applier = applier
        self.send = send
        self.on_applied = on_applied
        self.tick_s = tick_s
        self.limiter = limiter
        self.wall_ns = wall_ns
        self.wants_time_tick = wants_time_tick
        self.time_tick_s = time_tick_s
        self._last_leader_time = 0.0
        self.node = RaftNode(raft_config, node_id, voters, storage.hard_state(), storage, Random())
        self._jitter = Random()
        self._tx, self._rx = trio.open_memory_channel[Event](INBOX_SIZE)
        self.waiters: dict[int, Waiter] = {}  # Raft index -> the batch proposed there
        self.pending_ids: dict[bytes, int] = {}  # id -> Raft index of the entry carrying it
        self._next_record = 0
        self._next_record_term = -1
        self.failed: str | None = None
        self.disk_full = False
        self.stopped = trio.Event()
        self.role_changed = trio.Event()  # set (and replaced) whenever role or leader changes
        self.fsync_s: list[float] = []
        self.hlc = HLC()
        self._status = self.node.status()

    # ---------------------------------------------------------- other tasks

    def deliver_nowait(self, m: Message) -> None:
        """A peer message; dropped if the inbox is full (Raft tolerates loss)."""
        try:
            self._tx.send_nowait(m)
        except trio.WouldBlock:
            log.debug("%s: inbox full, dropped %s from %s", self.id, type(m).__name__, m.src)

    def submit_nowait(self, p: Proposal) -> bool:
        """Queue a proposal; False when the inbox is full (reply ``overloaded``)."""
        if self.failed is not None:
            p.fail("storage_failed", self.failed)
            return True
        try:
            self._tx.send_nowait(p)
        except trio.WouldBlock:
            return False
        return True

    def request_transfer(self, to: NodeId | None = None) -> None:
        try:
            self._tx.send_nowait(Transfer(to))
        except trio.WouldBlock:
            log.warning("%s: inbox full, leadership transfer request dropped", self.id)

    def status(self) -> Status:
        return self._status

    # ----------------------------------------------------------------- loop

    async def run(self) -> None:
        try:
            await self._run()
        except StorageFailed as e:
            self.failed = str(e)
            self._fail_all("storage_failed", self.failed)
            log.error("%s term=%d: raft loop stopped: %s", self.id, self.node.term, e)
            while True:  # proposals still queued would otherwise wait for their timeout
                try:
                    ev = self._rx.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(ev, Proposal):
                    ev.fail("storage_failed", self.failed)
        finally:
            self.stopped.set()

    def _tick_period(self) -> float:
        """One tick's length, jittered +-20% around ``tick_s`` (mean unchanged). Elections are
        counted in ticks, so two nodes whose tick clocks happen to run in phase would fire in
        the same instant whenever they draw the same number of ticks, and split the vote again
        and again (seen: three elections, 736 ms, after a leader kill); the jitter makes their
        phases drift apart within a few ticks."""
        return self.tick_s * (0.8 + 0.4 * self._jitter.random())

    async def _run(self) -> None:
        next_tick = trio.current_time() + self._tick_period()
        while True:
            events: list[Event] = []
            with trio.move_on_at(next_tick):
                events.append(await self._rx.receive())
            while len(events) < MAX_EVENTS_PER_ROUND:
                try:
                    events.append(self._rx.receive_nowait())
                except trio.WouldBlock:
                    break
            now = trio.current_time()
            if now >= next_tick:
                behind = int((now - next_tick) / self.tick_s) + 1
                for _ in range(min(behind, 3)):  # after a long stall, don't fire a burst
                    self.node.tick()
                next_tick = max(next_tick + (behind - 1) * self.tick_s + self._tick_period(), now)
            props: list[Proposal] = []
            for ev in events:
                if isinstance(ev, Proposal):
                    props.append(ev)
                else:
                    self._handle(ev)
            if props:
                self._propose_round(props)
            self._maybe_time_tick(now)
            await self._drain_ready()
            self._status = self.node.status()

    def _handle(self, ev: Message | Transfer) -> None:
        if isinstance(ev, Transfer):
            self._transfer(ev.to)
        else:
            self.node.step(ev)

    def _transfer(self, to: NodeId | None) -> None:
        st = self.node.status()
        if st.role is not Role.LEADER:
            return
        if to is None:
            followers = {k: v for k, v in st.progress.items() if k != self.id}
            if not followers:
                return
            to = max(followers, key=lambda k: (followers[k].match, k))
        log.info("%s term=%d: transferring leadership to %s", self.id, st.term, to)
        self.node.transfer_leadership(to)

    # ------------------------------------------------------------ proposals

    def _propose_round(self, props: list[Proposal]) -> None:
        """Gatekeep every record of this round's proposals, then propose the fresh ones as
        one batch entry (several when over ``MAX_ENTRY_BYTES``/``MAX_ENTRY_RECORDS``)."""
        code: tuple[str, str] | None = None
        if self.failed is not None:
            code = ("storage_failed", self.failed)
        elif self.node.role is not Role.LEADER:
            code = ("not_leader", self.node.leader or "")
        elif self.disk_full:
            code = ("disk_full", "the leader's disk is full; retry when space returns")
        if code is not None:
            for p in props:
                p.fail(*code)
            return
        window = self.applier.window
        pending = self.pending_ids
        batches: list[_Building] = [_Building()]
        here: dict[bytes, int] = {}  # id -> number of the batch (this round) that carries it
        for p in props:
            cur = batches[-1]
            if cur.ids and (
                cur.size + p.size > MAX_ENTRY_BYTES or len(cur.ids) + len(p.ids) > MAX_ENTRY_RECORDS
            ):
                cur = _Building()
                batches.append(cur)
            ids = p.ids
            if (
                window.isdisjoint(ids)
                and pending.keys().isdisjoint(ids)
                and here.keys().isdisjoint(ids)
                and len(set(ids)) == len(ids)
            ):  # all fresh, the usual case: the whole submission in a few C-level passes
                here.update(zip(ids, repeat(len(batches) - 1)))
                cur.slots.append((p, 0, len(cur.ids), len(ids)))
                cur.ids += ids
                cur.bodies += p.bodies
                cur.size += p.size
                continue
            for pos, rid in enumerate(ids):
                orig = window.get(rid)
                if orig is not None:
                    p.resolve(pos, RecordAck(rid, orig, self.applier.term_of(orig), True))
                    continue
                pend = pending.get(rid)
                if pend is not None:
                    w = self.waiters[pend]
                    w.joiners.append((p, pos, w.position(rid)))
                    continue
                same = here.get(rid)
                if same is not None:
                    b = batches[same]
                    b.joiners.append((p, pos, b.position(rid)))
                    continue
                here[rid] = len(batches) - 1
                cur.add_one(p, pos)
        batches = [b for b in batches if b.ids]
        if not batches:
            return
        self._last_leader_time = trio.current_time()
        nxt = self._next_record_index()
        datas = []
        ts = self._ingest_ts()
        for b in batches:
            b.base = nxt
            datas.append(batch_data_of(ts, nxt, b.ids, b.bodies))
            nxt += len(b.ids)
        first = self.node.propose_many(datas)
        if first is None:
            for p in props:
                p.fail("overloaded", "too many uncommitted records on the leader; retry shortly")
            return
        self._next_record = nxt
        term = self.node.term
        for k, b in enumerate(batches):
            index = first + k
            self.waiters[index] = Waiter(term, b.base, b.ids, b.slots, b.joiners, b.positions)
            pending.update(zip(b.ids, repeat(index)))

    def _next_record_index(self) -> int:
        """One past the last record in this leader's log: the base of its next batch. Found
        once per term by reading back from the end of the log to the applied index (past
        no-ops and ticks); the applier knows the applied part."""
        if self._next_record_term == self.node.term:
            return self._next_record
        nxt = self.applier.record_index + 1
        applied = self.applier.applied_index
        hi = self.node.log.last_index() + 1
        while hi > applied + 1:  # the applier knows the rest
            lo = max(applied + 1, hi - 64)
            tail = self.node.log.entries(Index(lo), Index(hi), 1 << 62)
            last = next((b for e in reversed(tail) if (b := parse_batch(e.data))), None)
            if last is not None:
                nxt = last.base + last.n
                break
            hi = lo
        self._next_record, self._next_record_term = nxt, self.node.term
        return nxt

    def _maybe_time_tick(self, now: float) -> None:
        """While the event-time buffer holds records and no new ones come, the leader commits
        its time now and then, so every node's watermark moves and the buffer drains."""
        if self.node.role is not Role.LEADER or now - self._last_leader_time < self.time_tick_s:
            return
        if self.wants_time_tick() and self.failed is None and not self.disk_full:
            self.node.propose(tick_data(self._ingest_ts()))
            self._last_leader_time = now

    def _ingest_ts(self) -> int:
        """Leader ingest time from the hybrid logical clock: unique, increasing across leaders
        (every appended entry's ingest time advanced the HLC), close to corrected time."""
        return self.hlc.now(self.wall_ns())

    def _fail_all(self, code: str, message: str) -> None:
        for w in self.waiters.values():
            for p, *_ in w.slots:
                p.fail(code, message)
            for p, _, _ in w.joiners:
                p.fail(code, message)
        self.waiters.clear()
        self.pending_ids.clear()

    # ---------------------------------------------------------------- ready

    async def _drain_ready(self) -> None:
        while self.node.has_ready():
            rd = self.node.ready()
            for m in rd.messages:
                self.send(m)
            if rd.entries or rd.hard_state is not None:
                await self._persist(rd)
                self._observe_ingest(rd.entries)
            for m in rd.messages_after_persist:
                self.send(m)
            if rd.entries and self.node.role is Role.LEADER:
                self._ack_persisted(rd.entries)
            if rd.committed_entries:
                self._apply(rd.committed_entries)
            if rd.soft_state is not None:
                self._soft_state_changed(rd.soft_state)
            self.node.advance(rd)
            # A replay after restart is a long run of Readies with nothing to persist: yield
            # between them so the listener and the peer links keep being served.
            await trio.lowlevel.checkpoint()

    async def _persist(self, rd: Ready) -> None:
        delay = 0.05
        write = partial(self.storage.append_batch, rd.entries, rd.hard_state, sync=rd.must_sync)
        inline = sum(len(e.data) for e in rd.entries) <= INLINE_PERSIST_BYTES and (
            not rd.messages or self._lone_write()
        )
        if inline and rd.messages:
            # A leader's appends must be on the wire before it fsyncs, so the followers'
            # fsyncs overlap its own; a link task only runs once this task yields. Two
            # checkpoints: trio may run this task ahead of the woken link tasks in a batch.
            # (Raw, 1 in flight: p50/p99 3.10/5.40 ms in the thread, 2.35-2.60/3.9-4.6 inline.)
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
        while True:
            t0 = time.perf_counter()
            try:
                if not (inline and self._try_inline(write)):
                    await trio.to_thread.run_sync(write, limiter=self.limiter)
            except DiskFull as e:
                if not self.disk_full:
                    log.warning("%s term=%d: %s; retrying", self.id, self.node.term, e)
                self.disk_full = True
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if self.disk_full:
                log.warning(
                    "%s term=%d: disk space is back; writes resume", self.id, self.node.term
                )
                self.disk_full = False
            self.fsync_s.append(time.perf_counter() - t0)
            if len(self.fsync_s) > 1024:
                del self.fsync_s[:512]
            return

    def _lone_write(self) -> bool:
        """Nothing else in flight on this leader: at most this round's entry awaits commit and
        the inbox is empty. Then an fsync on the loop costs less than the thread hop. With
        more in flight, a worker thread lets the next rounds' proposals pile up meanwhile
        (group commit): inline, 256 single-record frames in flight fell from 2.5k to 1.1k
        records/s, one fsync per two records."""
        return len(self.waiters) <= 1 and not self._rx.statistics().current_buffer_used

    def _try_inline(self, write: Callable[[], None]) -> bool:
        """Run a small write + fdatasync on the loop itself when the storage is free: at low
        load the worker-thread hop (~140 us of CPU, and the wake-ups) cost more than the
        fdatasync, and there is no group commit to form while waiting; large rounds still
        go to a worker thread so the next round's messages are taken in meanwhile."""
        try:
            self.limiter.acquire_nowait()
        except trio.WouldBlock:
            return False
        try:
            write()
        finally:
            self.limiter.release()
        return True

    def _observe_ingest(self, entries: Sequence[Entry]) -> None:
        for e in reversed(entries):
            ts = entry_ingest_ts(e.data)
            if ts is not None:
                self.hlc.update(ts, self.wall_ns())
                return

    def _ack_persisted(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            w = self.waiters.get(e.index)
            if w is None or w.term != e.term:
                continue
            for p, pos0, k0, n in w.slots:
                if p.ack == "leader":
                    p.resolve_run(pos0, n, w.base + k0, e.term)
            for p, pos, k in w.joiners:
                if p.ack == "leader":
                    p.resolve(pos, RecordAck(w.ids[k], w.base + k, e.term, True))

    def _apply(self, entries: Sequence[Entry]) -> None:
        out: list[tuple[Entry, Applied | None]] = []
        pending = self.pending_ids
        for e in entries:
            a = self.applier.apply(e)
            out.append((e, a))
            w = self.waiters.pop(e.index, None)
            if w is None:
                continue
            deque(map(pending.pop, w.ids, repeat(None)), maxlen=0)
            if a is None or e.term != w.term:
                for p, *_ in w.slots:
                    p.fail("unavailable", "the leader changed before the record committed")
                for p, _, _ in w.joiners:
                    p.fail("unavailable", "the leader changed before the record committed")
                continue
            self._resolve(w, a)
        self.on_applied(out)

    def _resolve(self, w: Waiter, a: Applied) -> None:
        ids, base, term, dups = w.ids, w.base, a.term, a.dups
        term_of = self.applier.term_of
        for p, pos0, k0, n in w.slots:
            if not dups:
                p.resolve_run(pos0, n, base + k0, term)
                continue
            for j in range(n):
                k = k0 + j
                orig = dups.get(k)
                if orig is None:
                    p.resolve(pos0 + j, RecordAck(ids[k], base + k, term, False))
                else:
                    p.resolve(pos0 + j, RecordAck(ids[k], orig, term_of(orig), True))
        for p, pos, k in w.joiners:
            # A joiner is a duplicate of the copy another position is storing: acked dup,
            # so the node compares the two (runtime.dup_check).
            orig = dups.get(k, base + k)
            p.resolve(pos, RecordAck(ids[k], orig, term_of(orig), True))

    def _soft_state_changed(self, ss: SoftState) -> None:
        self.role_changed.set()
        self.role_changed = trio.Event()
        log.info(
            "%s term=%d index=%d: role %s, leader %s",
            self.id,
            self.node.term,
            self.node.log.last_index(),
            ss.role.value,
            ss.leader,
        )
        if ss.role is not Role.LEADER and self.waiters:
            self._fail_all("unavailable", "leadership changed; retry (the same ids dedup)")

    def follower_lag(self) -> dict[NodeId, tuple[int, int, str]]:
        """Per follower: (match index, lag in entries, replication state)."""
        st = self._status
        last = st.last_index
        return {
            k: (v.match, last - v.match, v.state.value)
            for k, v in st.progress.items()
            if k != self.id and v.state in (ProgressState.PROBE, ProgressState.REPLICATE)
        }
