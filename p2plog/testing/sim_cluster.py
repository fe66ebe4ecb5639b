"""Simulated nodes and the event loop that drives them; no trio, no wall clock.

Each node is a ``Replica`` (the whole replicated state machine: Raft, intake, acks, dedup, the
event-time stream) plus a ``MemoryStore``, driven exactly as ``runtime.raft_loop`` drives it: on
``ready()`` the node sends ``messages`` and hands out finished submissions, applied entries and
emitted records at once, writes entries and hard state, and only after a simulated fsync
latency (during which it takes no input) syncs, sends ``messages_after_persist`` and calls
``advance``. Ticks, messages and submissions that arrive while it is busy queue up and are
handled together afterwards, as a real loop that batches its inbox would. A crash keeps only
what the store synced (``MemoryStore.crash``). Virtual time is in milliseconds: each node's
wall clock (for HLC ingest times) is the virtual time plus its own fixed skew.

Everything random comes from the one ``Random`` the world is given, and events with equal times
are ordered by a sequence number, so a seed replays the same run.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random
from typing import cast

from p2plog.order.reorder import ReorderBuffer
from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import Message
from p2plog.raft.node import RaftNode
from p2plog.raft.types import NodeId, Role
from p2plog.replica.proposals import Proposal
from p2plog.replica.replica import AppliedItems, Replica, ReplicaReady
from p2plog.state.applier import Applier
from p2plog.storage.memory import MemoryStore
from p2plog.testing.checker import Checker
from p2plog.testing.replica_checker import ReplicaChecker
from p2plog.testing.sim_network import SimNetwork

TICK, DELIVER, PERSISTED, RESTART, CHAOS, CLIENT = range(6)
EVENT_NAMES = ("tick", "deliver", "persisted", "restart", "chaos", "client")


NS_PER_UNIT = 1_000_000  # one unit of virtual time is a millisecond of wall clock
DEDUP_FOREVER = 1 << 40  # the simulated dedup window never evicts: the checker's model neither


@dataclass(frozen=True)
class ReplicaParams:
    """What every simulated replica is built with (drawn per seed)."""

    reorder_window_ms: int = 200
    reorder_max_records: int = 1000
    time_tick_ms: int = 50
    skew_ms: tuple[int, ...] = ()  # per node, in node order
    compact_every: int = 0  # a node compacts its log once this many entries are applied


ReplicaFactory = Callable[..., Replica]


class SimNode:
    __slots__ = (
        "busy",
        "id",
        "inbox",
        "incarnation",
        "pending_props",
        "pending_ticks",
        "replica",
        "skew",
        "store",
    )

    def __init__(self, node_id: NodeId, store: MemoryStore, skew: int) -> None:
        self.id = node_id
        self.store = store
        self.skew = skew
        self.replica: Replica | None = None
        self.incarnation = 0
        self.busy: ReplicaReady | None = None
        self.inbox: deque[Message] = deque()
        self.pending_props: list[Proposal] = []
        self.pending_ticks = 0

    @property
    def raft(self) -> RaftNode | None:
        return self.replica.raft if self.replica is not None else None


@dataclass
class WorldStats:
    steps: int = 0
    messages_sent: int = 0
    crashes: int = 0
    partitions: int = 0
    transfers: int = 0
    proposals: int = 0
    compactions: int = 0
    snapshots_installed: int = 0
    conf_changes: int = 0
    conf_refused: int = 0


class SimWorld:
    """The simulated cluster: nodes, network, clock and the event heap."""

    def __init__(
        self,
        *,
        node_ids: Sequence[NodeId],
        config: RaftConfig,
        rng: Random,
        network: SimNetwork,
        checker: Checker,
        store_factory: Callable[[], MemoryStore],
        tick_interval: int,
        persist_latency: tuple[int, int],
        replica_checker: ReplicaChecker,
        params: ReplicaParams = ReplicaParams(),
        replica_factory: ReplicaFactory = Replica,
        trace_len: int = 60,
    ) -> None:
        self.ids = list(node_ids)
        self.bootstrap = tuple(node_ids)  # peers.toml: every node starts from this config
        self.store_factory = store_factory
        self.config = config
        self.rng = rng
        self.net = network
        self.checker = checker
        self.tick_interval = tick_interval
        self.persist_latency = persist_latency
        self.rchecker = replica_checker
        self.params = params
        self.replica_factory = replica_factory
        skews = params.skew_ms or (0,) * len(self.ids)
        self.nodes = {
            nid: SimNode(nid, store_factory(), skew)
            for nid, skew in zip(self.ids, skews, strict=True)
        }
        self.now = 0
        self.stats = WorldStats()
        self.trace: deque[tuple[int, int, object]] = deque(maxlen=trace_len)
        self._heap: list[tuple[int, int, int, object]] = []
        self._seq = 0
        self.on_chaos: Callable[[], None] = lambda: None
        self.on_client: Callable[[], None] = lambda: None
        self.on_finished: Callable[[SimNode, list[Proposal]], None] = lambda n, ps: None
        self.on_snapshot: Callable[[SimNode], None] = lambda n: None
        for nid in self.ids:
            self.boot(self.nodes[nid])

    # ----------------------------------------------------------------- events

    def schedule(self, delay: int, kind: int, payload: object = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.now + delay, self._seq, kind, payload))

    def step(self) -> None:
        """Handle the next event, then run every check."""
        t, _, kind, payload = heapq.heappop(self._heap)
        self.now = t
        self.stats.steps += 1
        self.trace.append((t, kind, payload))
        touched: SimNode | None = None
        if kind == DELIVER:
            touched = self._deliver(cast(Message, payload))
        elif kind == TICK:
            nid, incarnation = cast(tuple[NodeId, int], payload)
            touched = self._tick(nid, incarnation)
        elif kind == PERSISTED:
            nid, incarnation = cast(tuple[NodeId, int], payload)
            touched = self._persisted(nid, incarnation)
        elif kind == RESTART:
            touched = self.nodes[cast(NodeId, payload)]
            if touched.raft is None:
                self.boot(touched)
        elif kind == CHAOS:
            self.on_chaos()
        elif kind == CLIENT:
            self.on_client()
        self.checker.after_step(touched, self.nodes)

    def _deliver(self, m: Message) -> SimNode | None:
        n = self.nodes[m.dst]
        if n.raft is None or not self.net.can_deliver(m.src, m.dst):
            return None
        if n.busy is not None:
            n.inbox.append(m)
            return n
        assert n.replica is not None
        n.replica.step(m)
        self.drive(n)
        return n

    def _tick(self, nid: NodeId, incarnation: int) -> SimNode | None:
        n = self.nodes[nid]
        if n.raft is None or n.incarnation != incarnation:
            return None  # a tick of a crashed incarnation
        self.schedule(self.tick_interval, TICK, (nid, incarnation))
        if n.busy is not None:
            n.pending_ticks += 1
            return n
        assert n.replica is not None
        n.replica.tick()
        self.drive(n)
        return n

    def _persisted(self, nid: NodeId, incarnation: int) -> SimNode | None:
        n = self.nodes[nid]
        if n.raft is None or n.incarnation != incarnation or n.busy is None:
            return None
        self.finish(n, n.busy)
        return n

    # ----------------------------------------------------------------- driver

    def drive(self, n: SimNode) -> None:
        """Take Ready batches until the node is idle or waits for a simulated fsync."""
        while n.replica is not None and n.busy is None and n.replica.has_ready():
            rd = n.replica.ready()
            for m in rd.messages:
                self.send(n, m)
            self.checker.on_apply(n.id, rd.raft.committed_entries)
            self.rchecker.on_ready(n, rd)
            self.on_apply(n, rd.applied)
            if rd.finished:
                self.on_finished(n, rd.finished)
            if rd.raft.snapshot is not None:
                n.store.install_snapshot(rd.raft.snapshot)
                self.checker.on_snapshot(n.id, rd.raft.snapshot)
                self.stats.snapshots_installed += 1
            n.store.append_batch(rd.entries, rd.hard_state, sync=False)
            if rd.entries:
                self.checker.on_write(n.id, n.store, rd.entries)
            if rd.must_sync:
                n.busy = rd
                lo, hi = self.persist_latency
                self.schedule(self.rng.randint(lo, hi), PERSISTED, (n.id, n.incarnation))
                return
            self.finish(n, rd)
        if n.replica is not None and n.busy is None:
            self.rchecker.on_idle(n.id)

    def finish(self, n: SimNode, rd: ReplicaReady) -> None:
        """The fsync of ``rd`` completed: send what depended on it, advance, take the input
        that queued meanwhile."""
        assert n.replica is not None
        if rd.must_sync:
            n.store.sync()
            self.checker.on_sync(n.id, n.store)
        for m in rd.messages_after_persist:
            self.send(n, m)
        n.busy = None
        n.replica.advance(rd)
        if rd.raft.snapshot is not None:
            self.rchecker.on_snapshot(n.id, n.replica.events.emitted)
            self.on_snapshot(n)
        self._maybe_compact(n)
        for _ in range(n.pending_ticks):
            n.replica.tick()
        n.pending_ticks = 0
        while n.inbox:
            n.replica.step(n.inbox.popleft())
        if n.pending_props:
            props, n.pending_props = n.pending_props, []
            n.replica.submit(props)
        self.drive(n)

    def _maybe_compact(self, n: SimNode) -> None:
        """Keep a snapshot in place of the applied prefix once it is ``compact_every`` long
        (between ``advance`` and the next ``ready``, as the runtime does): a follower behind
        it then needs ``InstallSnapshot``."""
        every = self.params.compact_every
        r = n.replica
        if not every or r is None:
            return
        applied = r.raft.log.applied
        if applied - n.store.first_index() + 1 >= every:
            n.store.compact(r.snapshot())
            self.stats.compactions += 1

    def submit(self, n: SimNode, p: Proposal) -> None:
        """A client's submission reaches ``n`` (queued while it waits for an fsync)."""
        if n.replica is None:
            return
        self.rchecker.on_submit(n.id, p)
        if n.busy is not None:
            n.pending_props.append(p)
            return
        n.replica.submit([p])
        self.drive(n)

    def on_apply(self, n: SimNode, items: AppliedItems) -> None:
        """Hook for the liveness phase; the checkers already saw the entries."""

    def send(self, n: SimNode, m: Message) -> None:
        self.checker.on_send(n, m)
        self.stats.messages_sent += 1
        for delay in self.net.transit(m.src, m.dst, self.now):
            self.schedule(delay, DELIVER, m)

    # ------------------------------------------------------------ node faults

    def boot(self, n: SimNode) -> None:
        n.incarnation += 1
        p = self.params
        skew_ns = n.skew * NS_PER_UNIT
        n.replica = self.replica_factory(
            node_id=n.id,
            voters=self.bootstrap,
            config=self.config,
            store=n.store,
            applier=Applier(DEDUP_FOREVER, DEDUP_FOREVER),
            events=ReorderBuffer(
                reorder_window_ms=p.reorder_window_ms,
                max_records=p.reorder_max_records,
                max_bytes=1 << 30,
            ),
            rng=Random(self.rng.getrandbits(64)),
            wall_ns=lambda: self.now * NS_PER_UNIT + skew_ns,
            time_tick_ns=p.time_tick_ms * NS_PER_UNIT,
        )
        self.checker.on_restart(n.id, n.store.snapshot())
        self.rchecker.on_restart(n.id, n.replica.events.emitted)
        self.schedule(self.rng.randint(1, self.tick_interval), TICK, (n.id, n.incarnation))
        self.drive(n)

    def add_node(self, nid: NodeId) -> SimNode:
        """A new host with an empty disk (it starts from the bootstrap configuration and
        waits to be added)."""
        assert nid not in self.nodes, nid
        n = self.nodes[nid] = SimNode(nid, self.store_factory(), 0)
        self.ids.append(nid)
        self.boot(n)
        return n

    def crash(self, n: SimNode) -> None:
        """Power loss on ``n``: process state gone, disk keeps what it synced."""
        n.replica = None
        n.busy = None
        n.inbox.clear()
        n.pending_props.clear()
        n.pending_ticks = 0
        n.incarnation += 1
        n.store.crash(self.rng)
        self.stats.crashes += 1

    # ---------------------------------------------------------------- queries

    def up(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def leaders(self) -> list[SimNode]:
        return [n for n in self.up() if n.raft is not None and n.raft.role is Role.LEADER]
