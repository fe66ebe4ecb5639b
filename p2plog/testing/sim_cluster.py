"""Simulated nodes and the event loop that drives them; no trio, no wall clock.

Each node is a ``RaftNode`` plus a ``MemoryStore``, driven exactly as the runtime will drive it:
on ``ready()`` the node sends ``messages`` at once, writes entries and hard state, and only after
a simulated fsync latency (during which it takes no input) syncs, sends
``messages_after_persist``, applies committed entries and calls ``advance``. Ticks and messages
that arrive while it is busy queue up and are handled together afterwards, as a real loop that
batches its inbox would. A crash keeps only what the store synced (``MemoryStore.crash``).

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

from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import Message
from p2plog.raft.node import RaftNode, Ready
from p2plog.raft.types import Entry, NodeId, Role
from p2plog.storage.memory import MemoryStore
from p2plog.testing.checker import Checker
from p2plog.testing.sim_network import SimNetwork

TICK, DELIVER, PERSISTED, RESTART, CHAOS, CLIENT = range(6)
EVENT_NAMES = ("tick", "deliver", "persisted", "restart", "chaos", "client")


class SimNode:
    __slots__ = ("busy", "id", "inbox", "incarnation", "pending_ticks", "raft", "store")

    def __init__(self, node_id: NodeId, store: MemoryStore) -> None:
        self.id = node_id
        self.store = store
        self.raft: RaftNode | None = None
        self.incarnation = 0
        self.busy: Ready | None = None
        self.inbox: deque[Message] = deque()
        self.pending_ticks = 0


@dataclass
class WorldStats:
    steps: int = 0
    messages_sent: int = 0
    crashes: int = 0
    partitions: int = 0
    transfers: int = 0
    proposals: int = 0


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
        trace_len: int = 60,
    ) -> None:
        self.ids = list(node_ids)
        self.config = config
        self.rng = rng
        self.net = network
        self.checker = checker
        self.tick_interval = tick_interval
        self.persist_latency = persist_latency
        self.nodes = {nid: SimNode(nid, store_factory()) for nid in self.ids}
        self.now = 0
        self.stats = WorldStats()
        self.trace: deque[tuple[int, int, object]] = deque(maxlen=trace_len)
        self._heap: list[tuple[int, int, int, object]] = []
        self._seq = 0
        self.on_chaos: Callable[[], None] = lambda: None
        self.on_client: Callable[[], None] = lambda: None
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
        n.raft.step(m)
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
        n.raft.tick()
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
        while n.raft is not None and n.busy is None and n.raft.has_ready():
            rd = n.raft.ready()
            for m in rd.messages:
                self.send(n, m)
            n.store.append_batch(rd.entries, rd.hard_state, sync=False)
            if rd.entries:
                self.checker.on_write(n.id, n.store, rd.entries)
            if rd.must_sync:
                n.busy = rd
                lo, hi = self.persist_latency
                self.schedule(self.rng.randint(lo, hi), PERSISTED, (n.id, n.incarnation))
                return
            self.finish(n, rd)

    def finish(self, n: SimNode, rd: Ready) -> None:
        """The fsync of ``rd`` completed: send what depended on it, apply, advance."""
        assert n.raft is not None
        if rd.must_sync:
            n.store.sync()
            self.checker.on_sync(n.id, n.store)
        for m in rd.messages_after_persist:
            self.send(n, m)
        self.checker.on_apply(n.id, rd.committed_entries)
        self.on_apply(n, rd.committed_entries)
        n.busy = None
        n.raft.advance(rd)
        for _ in range(n.pending_ticks):
            n.raft.tick()
        n.pending_ticks = 0
        while n.inbox:
            n.raft.step(n.inbox.popleft())
        self.drive(n)

    def on_apply(self, n: SimNode, entries: Sequence[Entry]) -> None:
        """Hook for the liveness phase; the checker already saw the entries."""

    def send(self, n: SimNode, m: Message) -> None:
        self.checker.on_send(n, m)
        self.stats.messages_sent += 1
        for delay in self.net.transit(m.src, m.dst, self.now):
            self.schedule(delay, DELIVER, m)

    # ------------------------------------------------------------ node faults

    def boot(self, n: SimNode) -> None:
        n.incarnation += 1
        n.raft = RaftNode(
            self.config,
            n.id,
            self.ids,
            n.store.hard_state(),
            n.store,
            Random(self.rng.getrandbits(64)),
        )
        self.checker.on_restart(n.id)
        self.schedule(self.rng.randint(1, self.tick_interval), TICK, (n.id, n.incarnation))
        self.drive(n)

    def crash(self, n: SimNode) -> None:
        """Power loss on ``n``: process state gone, disk keeps what it synced."""
        n.raft = None
        n.busy = None
        n.inbox.clear()
        n.pending_ticks = 0
        n.incarnation += 1
        n.store.crash(self.rng)
        self.stats.crashes += 1

    # ---------------------------------------------------------------- queries

    def up(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def leaders(self) -> list[SimNode]:
        return [n for n in self.up() if n.raft is not None and n.raft.role is Role.LEADER]
