"""The Raft loop: the driver of this node's ``Replica``, its storage writes and its inbox.

One task runs ``run()``: it waits for input (peer messages, proposals, transfers) or the next
tick, feeds all that arrived into the replica, then drains Ready batches: send ``messages`` ->
persist (one ``append_batch`` = one fsync, in a worker thread, so the inbox keeps filling and the
next batch is a group commit; a small Ready on the loop itself when nothing else is in flight:
see ``_persist``) -> send ``messages_after_persist`` -> wake the finished submissions, hand the
applied entries and emitted records on -> ``advance``. What the replica decides (intake, acks,
dedup, time ticks, the event-time stream) is in ``p2plog.replica``; this module does the I/O.
Other tasks only talk to it through its bounded inbox.

Disk full: the append is retried with backoff; the loop stalls (to peers it looks down, so a
leader loses leadership) and resumes by itself when space returns. An I/O error from fsync is
fatal for writes (fsyncgate): the loop stops and the node serves reads and says why.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from random import Random

import trio

from p2plog.errors import DiskFull, StorageFailed
from p2plog.latency import Histogram
from p2plog.order.reorder import Emitted, ReorderBuffer
from p2plog.raft.config import RaftConfig
from p2plog.raft.membership import ConfChange, ConfChangeRefused
from p2plog.raft.messages import Message
from p2plog.raft.status import Status
from p2plog.raft.types import ConfState, Entry, NodeId, Role, Snapshot, SoftState
from p2plog.replica import snapshot
from p2plog.replica.proposals import Proposal
from p2plog.replica.replica import Replica, ReplicaReady
from p2plog.replica.snapshot import SnapshotError
from p2plog.state.applier import Applied, Applier
from p2plog.state.entry import BatchRef
from p2plog.storage.segmented_log import SegmentedLog

log = logging.getLogger("p2plog.raft_loop")

INBOX_SIZE = 8192
MAX_EVENTS_PER_ROUND = 4096
INLINE_PERSIST_BYTES = 64 << 10  # smaller Readies are written + fsync'd on the loop itself


@dataclass(slots=True)
class Transfer:
    to: NodeId | None  # None: the most up-to-date follower


@dataclass(slots=True)
class Compact:
    """Take a snapshot at the applied index and hand it to the compactor."""


@dataclass(slots=True)
class ConfRequest:
    """Propose a membership change; ``index`` (or ``refused``) is set, then ``done``."""

    change: ConfChange
    done: trio.Event = field(default_factory=trio.Event)
    index: int = 0
    refused: str | None = None


# Blocking, in the storage thread: keep the snapshot, cut the log behind it; returns the first
# Raft index and the first record index the log still holds (None: no record left).
Compactor = Callable[[Snapshot], tuple[int, int | None]]
Event = Message | Proposal | Transfer | Compact | ConfRequest
AppliedHook = Callable[[Sequence[tuple[Entry, Applied | None]], list[Emitted[BatchRef]]], None]


def _no_events() -> ReorderBuffer[BatchRef]:
    return ReorderBuffer(reorder_window_ms=1000, max_records=100_000, max_bytes=64 << 20)


class RaftLoop:
    def __init__(
        self,
        *,
        node_id: NodeId,
        voters: Sequence[NodeId] | ConfState,
        raft_config: RaftConfig,
        storage: SegmentedLog,
        applier: Applier,
        send: Callable[[Message], None],
        on_applied: AppliedHook,
        tick_s: float,
        limiter: trio.CapacityLimiter,
        wall_ns: Callable[[], int] = time.time_ns,
        events: ReorderBuffer[BatchRef] | None = None,
        wants_events: Callable[[], bool] = lambda: False,
        time_tick_s: float = 0.25,
        compactor: Compactor | None = None,
        on_conf: Callable[[ConfState, ConfState], None] = lambda conf, committed: None,
    ) -> None:
        self.id = node_id
        self.on_conf = on_conf
        self._conf: tuple[ConfState, ConfState] | None = None
        self.storage = storage
        self.send = send
        self.on_applied = on_applied
        self.tick_s = tick_s
        self.limiter = limiter
        self.replica = Replica(
            node_id=node_id,
            voters=voters,
            config=raft_config,
            store=storage,
            applier=applier,
            events=events if events is not None else _no_events(),
            rng=Random(),
            wall_ns=wall_ns,
            time_tick_ns=round(time_tick_s * 1e9),
        )
        self.wants_events = wants_events  # someone subscribes to the event-time stream
        self.compactor = compactor
        self._jitter = Random()
        self._tx, self._rx = trio.open_memory_channel[Event](INBOX_SIZE)
        self.stopped = trio.Event()
        self.role_changed = trio.Event()  # set (and replaced) whenever role or leader changes
        self.fsync_s = Histogram()  # each append's write + fdatasync
        self.commit_s = Histogram()  # as leader: an entry's append to its commit
        self._appended: deque[tuple[int, float]] = deque(maxlen=4096)
        self.leader_changes = 0  # how often this node saw a new leader (metrics)
        self._leader_seen: NodeId | None = None
        self._status = self.replica.status()

    @property
    def applier(self) -> Applier:
        return self.replica.applier

    @property
    def failed(self) -> str | None:
        return self.replica.failed

    @property
    def disk_full(self) -> bool:
        return self.replica.disk_full

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
            p.wake()
            return True
        try:
            self._tx.send_nowait(p)
        except trio.WouldBlock:
            return False
        return True

    def request_compact(self) -> None:
        with contextlib.suppress(trio.WouldBlock):  # busy: retention asks again later
            self._tx.send_nowait(Compact())

    def request_conf_change(self, req: ConfRequest) -> bool:
        """Queue a membership change; False when the inbox is full."""
        try:
            self._tx.send_nowait(req)
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
            for p in self.replica.stop(str(e)):
                p.wake()
            log.error("%s term=%d: raft loop stopped: %s", self.id, self.replica.raft.term, e)
            while True:  # proposals still queued would otherwise wait for their timeout
                try:
                    ev = self._rx.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(ev, Proposal) and ev.fail("storage_failed", str(e)):
                    ev.wake()
        finally:
            self.stopped.set()

    def _tick_period(self) -> float:
        """One tick's length, jittered +-20% around ``tick_s`` (mean unchanged). Elections are
        counted in ticks, so two nodes whose tick clocks happen to run in phase would fire in
        the same instant whenever they draw the same number of ticks, and split the vote again
        and again; the jitter makes their phases drift apart within a few ticks."""
        return self.tick_s * (0.8 + 0.4 * self._jitter.random())

    async def _run(self) -> None:
        replica = self.replica
        self._follow_conf()
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
                    replica.tick()
                next_tick = max(next_tick + (behind - 1) * self.tick_s + self._tick_period(), now)
            props: list[Proposal] = []
            compact = False
            for ev in events:
                if isinstance(ev, Proposal):
                    props.append(ev)
                elif isinstance(ev, Transfer):
                    replica.transfer(ev.to)
                elif isinstance(ev, Compact):
                    compact = True
                elif isinstance(ev, ConfRequest):
                    self._conf_change(ev)
                else:
                    self._step(ev)
            if props:
                replica.submit(props)
            await self._drain_ready()
            if compact and self.compactor is not None:
                await self._compact(self.compactor)
            self._status = replica.status()

    async def _compact(self, compactor: Compactor) -> None:
        """Snapshot at the applied index (captured here, between two Readies; encoded and
        written in the storage thread), then the compactor cuts the log behind it. The loop
        waits meanwhile: no read of the log races the segments going."""
        index, term, conf, captured = self.replica.capture()

        def work() -> tuple[int, int | None]:
            return compactor(Snapshot(index, term, snapshot.dumps(captured), conf))

        try:
            first_entry, first_record = await trio.to_thread.run_sync(work, limiter=self.limiter)
        except DiskFull as e:
            log.warning("%s: no room to write a snapshot: %s", self.id, e)
            return
        if first_record is not None:
            self.replica.applier.forget_before(first_record, first_entry)

    def _role_changed(self, soft: SoftState) -> None:
        if soft.leader != self._leader_seen:
            self._leader_seen = soft.leader
            if soft.leader is not None:
                self.leader_changes += 1
        if soft.role is not Role.LEADER:
            self._appended.clear()
        self.role_changed.set()
        self.role_changed = trio.Event()

    def _note_commits(self) -> None:
        """Commit latency, as leader: an appended entry's time to commit (a majority's fsync
        and the round trips), observed for the last entry of each appended Ready."""
        pending = self._appended
        if not pending:
            return
        commit, now = self.replica.raft.log.committed, time.perf_counter()
        while pending and pending[0][0] <= commit:
            self.commit_s.observe(now - pending.popleft()[1])

    def _conf_change(self, req: ConfRequest) -> None:
        try:
            req.index = self.replica.propose_conf_change(req.change)
        except ConfChangeRefused as e:
            req.refused = str(e)
        req.done.set()

    def _follow_conf(self) -> None:
        """Before any message of a Ready leaves: the runtime links to whom the configurations
        in force and last committed name (a new member's first append would otherwise find
        no link; a leader being removed still needs the answers that commit its removal)."""
        raft = self.replica.raft
        confs = (raft.conf, raft.conf_at(raft.log.committed))
        if self._conf is None or confs[0] is not self._conf[0] or confs[1] != self._conf[1]:
            self._conf = confs
            self.on_conf(*confs)

    def _step(self, m: Message) -> None:
        try:
            self.replica.step(m)
        except SnapshotError as e:
            # The wire layer checked the framing; the state inside is checked here, before
            # Raft sees the snapshot: refused, nothing changed (the leader will try again).
            log.error("%s: refused a snapshot from %s: %s", self.id, m.src, e)

    # ---------------------------------------------------------------- ready

    async def _drain_ready(self) -> None:
        replica = self.replica
        while replica.has_ready():
            # Asked before each Ready: a subscriber that joined gets all emitted after it did.
            replica.want_events = self.wants_events()
            rd = replica.ready()
            self._follow_conf()
            for m in rd.messages:
                self.send(m)
            for p in rd.finished:  # safe before this Ready's persist: see Replica
                p.wake()
            if rd.applied:
                self.on_applied(rd.applied, rd.emitted)
            if rd.entries or rd.hard_state is not None or rd.raft.snapshot is not None:
                await self._persist(rd)
            for m in rd.messages_after_persist:
                self.send(m)
            if rd.raft.soft_state is not None:
                self._role_changed(rd.raft.soft_state)
            if rd.entries and replica.role is Role.LEADER:
                self._appended.append((rd.entries[-1].index, time.perf_counter()))
            replica.advance(rd)
            self._note_commits()
            if rd.raft.snapshot is not None:
                self.on_applied([], [])  # the applied state jumped: wake who waits on it
            # A replay after restart is a long run of Readies with nothing to persist: yield
            # between them so the listener and the peer links keep being served.
            await trio.lowlevel.checkpoint()

    async def _persist(self, rd: ReplicaReady) -> None:
        delay = 0.05
        write = partial(self._write, rd)
        inline = rd.raft.snapshot is None and (
            sum(len(e.data) for e in rd.entries) <= INLINE_PERSIST_BYTES
            and (not rd.messages or self._lone_write())
        )
        if inline and rd.messages:
            # A leader's appends must be on the wire before it fsyncs, so the followers'
            # fsyncs overlap its own; a link task only runs once this task yields. Two
            # checkpoints: trio may run this task ahead of the woken link tasks in a batch.
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
        while True:
            t0 = time.perf_counter()
            try:
                if not (inline and self._try_inline(write)):
                    await trio.to_thread.run_sync(write, limiter=self.limiter)
            except DiskFull as e:
                self._disk_full(e)
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if self.replica.disk_full:
                log.warning("%s term=%d: disk space is back; writes resume", self.id, self._term)
                self.replica.disk_full = False
            self.fsync_s.observe(time.perf_counter() - t0)
            return

    def _write(self, rd: ReplicaReady) -> None:
        snap = rd.raft.snapshot
        if snap is not None and self.storage.snapshot() is not snap:  # (not after a retry)
            self.storage.install_snapshot(snap)
        self.storage.append_batch(rd.entries, rd.hard_state, sync=rd.must_sync)

    @property
    def _term(self) -> int:
        return self.replica.raft.term

    def _disk_full(self, e: DiskFull) -> None:
        if not self.replica.disk_full:
            log.warning("%s term=%d: %s; retrying", self.id, self._term, e)
        self.replica.disk_full = True

    def _lone_write(self) -> bool:
        """Nothing else in flight on this leader: at most this round's entry awaits commit and
        the inbox is empty. Then an fsync on the loop costs less than the thread hop. With
        more in flight, a worker thread lets the next rounds' proposals pile up meanwhile
        (group commit)."""
        return len(self.replica.waiters) <= 1 and not self._rx.statistics().current_buffer_used

    def _try_inline(self, write: Callable[[], None]) -> bool:
        """Run a small write + fdatasync on the loop itself when the storage is free: at low
        load the worker-thread hop (its CPU and wake-ups) costs more than the fdatasync, and
        there is no group commit to form while waiting; large rounds still go to a worker
        thread so the next round's messages are taken in meanwhile."""
        try:
            self.limiter.acquire_nowait()
        except trio.WouldBlock:
            return False
        try:
            write()
        finally:
            self.limiter.release()
        return True
