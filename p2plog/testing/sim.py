"""The deterministic Raft simulator (TigerBeetle VOPR style): seed -> options -> faults ->
every check after every step -> a seed in the failure message.

A run has two phases. The safety phase runs ``steps`` events with the drawn faults (loss,
duplication, delay/reordering, partitions, crashes with torn unsynced writes, leadership
transfers, proposals) and checks ``checker.Checker`` after each. The liveness phase then heals
everything and demands that a leader emerges and a new proposal is applied on every node within
a bound. A failure prints the seed, the options, the last events and the one command that
reproduces it::

    python -m p2plog.testing.sim --seed S --steps N
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time as wallclock  # only to report steps/s; the simulation never reads it
from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random

from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import AppendEntries, Message
from p2plog.raft.types import Entry, NodeId
from p2plog.storage.memory import MemoryStore
from p2plog.testing.broken_store import BROKEN_STORES
from p2plog.testing.checker import ALL_CHECKS, Checker, Violation
from p2plog.testing.sim_cluster import CHAOS, CLIENT, EVENT_NAMES, RESTART, SimNode, SimWorld
from p2plog.testing.sim_network import SimNetwork


@dataclass(frozen=True)
class SimOptions:
    """Everything a seed decides about a run (printed on failure)."""

    nodes: int
    election_ticks: int
    heartbeat_ticks: int
    pre_vote: bool
    check_quorum: bool
    max_inflight_msgs: int
    max_msg_bytes: int
    tick_interval: int
    delay_max: int
    fifo: bool
    drop_p: float
    dup_p: float
    persist_max: int
    chaos_interval: int
    crash_p: float
    restart_max: int
    partition_p: float
    heal_p: float
    transfer_p: float
    propose_interval: int
    batch_max: int

    @classmethod
    def draw(cls, rng: Random, nodes: int | None = None) -> SimOptions:
        election = rng.choice((5, 10, 20))
        return cls(
            nodes=nodes or rng.choice((3, 3, 4, 5, 5)),
            election_ticks=election,
            heartbeat_ticks=rng.choice((1, 1, 2)),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            max_inflight_msgs=rng.choice((1, 4, 32)),
            max_msg_bytes=rng.choice((16, 256, 1 << 20)),
            tick_interval=10,
            delay_max=rng.choice((2, 5, 10, 30)),
            fifo=rng.random() < 0.5,
            drop_p=rng.choice((0.0, 0.01, 0.05, 0.2)),
            dup_p=rng.choice((0.0, 0.01, 0.05)),
            persist_max=rng.choice((1, 5, 20)),
            chaos_interval=rng.choice((50, 200, 1000)),
            crash_p=rng.choice((0.0, 0.05, 0.2, 0.4)),
            restart_max=rng.choice((50, 500, 3000)),
            partition_p=rng.choice((0.0, 0.1, 0.3)),
            heal_p=rng.choice((0.1, 0.3, 0.6)),
            transfer_p=rng.choice((0.0, 0.05, 0.2)),
            propose_interval=rng.choice((3, 10, 50)),
            batch_max=rng.choice((1, 4, 16)),
        )

    def raft_config(self) -> RaftConfig:
        return RaftConfig(
            election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            max_inflight_msgs=self.max_inflight_msgs,
            max_msg_bytes=self.max_msg_bytes,
        )

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))


@dataclass
class SimResult:
    seed: int
    steps: int
    options: SimOptions
    failure: Violation | None = None
    report: str = ""
    liveness_steps: int = 0
    sim_time: int = 0
    wall_s: float = 0.0
    terms_with_leader: int = 0
    committed: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        total = self.stats.get("steps", 0)
        rate = total / self.wall_s if self.wall_s else 0.0
        head = "OK" if self.ok else f"FAILED ({self.failure.kind if self.failure else ''})"
        return (
            f"seed {self.seed}: {head}: {total} steps ({self.liveness_steps} liveness) in "
            f"{self.wall_s:.1f} s = {rate:,.0f} steps/s; {self.options.nodes} nodes, "
            f"{self.terms_with_leader} leader terms, {self.committed} entries committed, "
            + ", ".join(f"{k} {v}" for k, v in self.stats.items())
        )


class Simulation:
    def __init__(
        self,
        seed: int,
        *,
        nodes: int | None = None,
        broken_store: str | None = None,
        checks: frozenset[str] = ALL_CHECKS,
    ) -> None:
        self.seed = seed
        self.broken_store = broken_store
        self.rng = Random(seed)
        self.opts = SimOptions.draw(self.rng, nodes)
        o = self.opts
        self.ids = [NodeId(f"n{i + 1}") for i in range(o.nodes)]
        self.checker = Checker(self.ids, checks)
        store_cls = BROKEN_STORES[broken_store] if broken_store else MemoryStore
        net = SimNetwork(
            Random(self.rng.getrandbits(64)),
            delay_min=1,
            delay_max=o.delay_max,
            drop_p=o.drop_p,
            dup_p=o.dup_p,
            fifo=o.fifo,
        )
        self.world = SimWorld(
            node_ids=self.ids,
            config=o.raft_config(),
            rng=self.rng,
            network=net,
            checker=self.checker,
            store_factory=store_cls,
            tick_interval=o.tick_interval,
            persist_latency=(1, o.persist_max),
        )
        self.world.on_chaos = self._chaos
        self.world.on_client = self._client
        self.world.on_apply = self._on_apply  # type: ignore[method-assign]
        self.proposed = 0
        self.markers_applied: dict[NodeId, set[bytes]] = {i: set() for i in self.ids}
        self.marker_terms: set[tuple[NodeId, int]] = set()
        self.world.schedule(o.chaos_interval, CHAOS)
        self.world.schedule(o.propose_interval, CLIENT)
        self.phase = "safety"

    # ------------------------------------------------------------------ faults

    def _chaos(self) -> None:
        w, o, rng = self.world, self.opts, self.rng
        w.schedule(o.chaos_interval, CHAOS)
        if self.phase != "safety":
            return
        if rng.random() < o.crash_p:
            up = w.up()
            if up:
                victim = rng.choice(up)
                w.crash(victim)
                w.schedule(rng.randint(1, o.restart_max), RESTART, victim.id)
        if rng.random() < o.partition_p:
            w.net.partition(self.ids, rng)
            w.stats.partitions += 1
        elif w.net.blocked and rng.random() < o.heal_p:
            w.net.heal()
        if rng.random() < o.transfer_p:
            for n in w.leaders():
                assert n.raft is not None
                if n.busy is None:
                    n.raft.transfer_leadership(rng.choice([i for i in self.ids if i != n.id]))
                    w.stats.transfers += 1
                    w.drive(n)

    def _client(self) -> None:
        w, o, rng = self.world, self.opts, self.rng
        w.schedule(o.propose_interval, CLIENT)
        if self.phase == "safety":
            up = [n for n in w.up() if n.busy is None]
            if not up:
                return
            n = rng.choice(up)
            batch = [self._payload(b"p") for _ in range(rng.randint(1, o.batch_max))]
        else:
            # One marker per leader term: the liveness question is whether *a* new proposal
            # commits everywhere, not whether the cluster keeps up with a flood.
            leaders = [n for n in w.leaders() if n.busy is None]
            if not leaders:
                return
            n = max(leaders, key=lambda x: x.raft.term if x.raft else 0)
            assert n.raft is not None
            if (n.id, n.raft.term) in self.marker_terms:
                return
            batch = [self._payload(b"marker")]
        assert n.raft is not None
        if n.raft.propose_many(batch) is not None:
            if self.phase != "safety":
                self.marker_terms.add((n.id, n.raft.term))
            w.stats.proposals += len(batch)
            w.drive(n)

    def _payload(self, kind: bytes) -> bytes:
        self.proposed += 1
        return b"%s-%d-%d" % (kind, self.seed, self.proposed)

    def _on_apply(self, n: SimNode, entries: Sequence[Entry]) -> None:
        if self.phase == "liveness":
            for e in entries:
                if e.data.startswith(b"marker"):
                    self.markers_applied[n.id].add(e.data)

    # ------------------------------------------------------------------ phases

    def run(self, steps: int, *, liveness: bool = True) -> SimResult:
        result = SimResult(self.seed, steps, self.opts)
        t0 = wallclock.perf_counter()
        try:
            for _ in range(steps):
                self.world.step()
            if liveness:
                result.liveness_steps = self._liveness()
        except Violation as v:
            result.failure = v
            result.report = self.report(v, steps)
        result.wall_s = wallclock.perf_counter() - t0
        result.sim_time = self.world.now
        result.terms_with_leader = len(self.checker.leaders_by_term)
        result.committed = len(self.checker.canonical)
        result.stats = dataclasses.asdict(self.world.stats)
        return result

    def _liveness(self) -> int:
        """Heal every fault; a leader must emerge and a new entry reach every node in time."""
        w, o = self.world, self.opts
        self.phase = "liveness"
        w.net.heal()
        w.net.drop_p = w.net.dup_p = 0.0
        w.net.delay_max = min(w.net.delay_max, o.tick_interval)
        for n in w.nodes.values():
            if n.raft is None:
                w.boot(n)
        for s in self.markers_applied.values():
            s.clear()
        # Bound: many randomized election rounds (each < 2 * election_ticks) plus the time the
        # pipeline needs to ship the whole log to a follower that has none of it.
        backlog = max(n.store.last_index() for n in w.nodes.values())
        per_msg = max(1, o.max_msg_bytes // 32)
        round_trip = 2 * w.net.delay_max + o.persist_max
        # On a reordering network an append that overtakes its predecessor is refused and the
        # follower drops back to probing (as in etcd), so count one message per round trip.
        window = o.max_inflight_msgs if o.fifo else 1
        catch_up = backlog // (per_msg * window) * round_trip
        bound = 30 * o.election_ticks * o.tick_interval + catch_up
        deadline = w.now + bound
        start = w.stats.steps
        while w.now <= deadline:
            w.step()
            common = set.intersection(*self.markers_applied.values())
            if common:
                return w.stats.steps - start
        roles = ", ".join(
            f"{n.id}={n.raft.role.value}@{n.raft.term}" if n.raft else f"{n.id}=down"
            for n in w.nodes.values()
        )
        raise Violation(
            "liveness",
            f"no new entry committed on every node within {bound} time units of healing "
            f"(log of {backlog} entries; {roles})",
        )

    def report(self, v: Violation, steps: int) -> str:
        w = self.world
        lines = [
            f"SIMULATION FAILED: {v}",
            f"seed={self.seed} step={w.stats.steps} time={w.now} phase={self.phase} "
            f"partition={w.net.partition_desc}",
            f"options: {self.opts.describe()}",
            f"last {len(w.trace)} events:",
        ]
        lines += [f"  t={t} {describe_event(k, p)}" for t, k, p in w.trace]
        cmd = f"python -m p2plog.testing.sim --seed {self.seed} --steps {steps}"
        if self.broken_store:
            cmd += f" --broken-store {self.broken_store}"
        lines.append(f"reproduce: {cmd}")
        return "\n".join(lines)


def describe_event(kind: int, payload: object) -> str:
    name = EVENT_NAMES[kind]
    if isinstance(payload, AppendEntries):
        span = (
            f"{payload.entries[0].index}..{payload.entries[-1].index}" if payload.entries else "-"
        )
        return (
            f"{name} AppendEntries {payload.src}->{payload.dst} term={payload.term} "
            f"prev={payload.prev_index}/{payload.prev_term} entries={span} "
            f"commit={payload.commit}"
        )
    if kind == RESTART:
        return f"{name} {payload}"
    if isinstance(payload, tuple):
        return f"{name} {payload[0]}"
    if payload is None:
        return name
    m: Message = payload  # type: ignore[assignment]
    fields = ", ".join(
        f"{f.name}={getattr(m, f.name)}"
        for f in dataclasses.fields(m)
        if f.name not in ("src", "dst")
    )
    return f"{name} {type(m).__name__} {m.src}->{m.dst} {fields}"


def run(seed: int, steps: int, **kwargs: object) -> SimResult:
    """Run one seed; see ``Simulation`` for the keyword arguments."""
    return Simulation(seed, **kwargs).run(steps)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m p2plog.testing.sim",
        description="Run the deterministic Raft simulator for one seed.",
    )
    p.add_argument("--seed", type=int, required=True, help="the seed to run")
    p.add_argument("--steps", type=int, default=20_000, help="events in the safety phase")
    p.add_argument("--nodes", type=int, choices=(3, 4, 5), help="override the drawn node count")
    p.add_argument(
        "--broken-store",
        choices=sorted(BROKEN_STORES),
        help="use a deliberately broken store, to see the checkers catch it",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(ALL_CHECKS),
        help="run only these checks (repeatable); default: all",
    )
    p.add_argument("--no-liveness", action="store_true", help="skip the healing phase")
    a = p.parse_args(argv)
    sim = Simulation(
        a.seed,
        nodes=a.nodes,
        broken_store=a.broken_store,
        checks=frozenset(a.only) if a.only else ALL_CHECKS,
    )
    result = sim.run(a.steps, liveness=not a.no_liveness)
    print(result.summary())
    if result.failure is not None:
        print(result.report, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
