"""The deterministic replica simulator (TigerBeetle VOPR style): seed -> options -> faults ->
every check after every step -> a seed in the failure message.

Each node is a whole ``Replica`` (Raft, intake, acks, dedup, the event-time stream), and
simulated clients (``sim_clients``) submit records in both ack modes, retry with the same ids
and fail over between nodes. A run has two phases. The safety phase runs ``steps`` events with
the drawn faults (loss, duplication, delay/reordering, partitions, crashes with torn unsynced
writes, leadership transfers, submissions) and checks ``checker.Checker`` (Raft) and
``replica_checker.ReplicaChecker`` (acks, dedup, event order) after each. The liveness
phase then heals everything and demands that a leader emerges and a new record is applied on
every node within a bound. A failure prints the seed, the options, the last events and the one
command that reproduces it::

    python -m p2plog.testing.sim --seed S --steps N
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time as wallclock  # only to report steps/s; the simulation never reads it
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random

from p2plog.raft.membership import ConfChange, ConfChangeRefused, ConfOp
from p2plog.raft.messages import AppendEntries, Message
from p2plog.raft.types import Index, NodeId, Role
from p2plog.replica.proposals import Proposal
from p2plog.replica.replica import AppliedItems, Replica
from p2plog.storage.memory import MemoryStore
from p2plog.testing.broken_store import BROKEN_STORES
from p2plog.testing.checker import ALL_CHECKS, Checker, Violation
from p2plog.testing.planted import PLANTED
from p2plog.testing.replica_checker import REPLICA_CHECKS, ReplicaChecker
from p2plog.testing.sim_clients import SimClients
from p2plog.testing.sim_cluster import (
    CHAOS,
    CLIENT,
    EVENT_NAMES,
    RESTART,
    SimNode,
    SimWorld,
)
from p2plog.testing.sim_network import SimNetwork
from p2plog.testing.sim_options import SimOptions

EVERY_CHECK = ALL_CHECKS | REPLICA_CHECKS
MARKER = b"\xffmarker"


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
        planted: str | None = None,
        checks: frozenset[str] = EVERY_CHECK,
    ) -> None:
        self.seed = seed
        self.broken_store = broken_store
        self.planted = planted
        self.rng = Random(seed)
        # Membership draws from its own source, so a seed that makes no membership change
        # runs exactly as it did before they existed (the planted bugs' seeds stay put).
        self.member_rng = Random(f"membership {seed}")
        self.opts = SimOptions.draw(self.rng, nodes, self.member_rng)
        o = self.opts
        self.ids = [NodeId(f"n{i + 1}") for i in range(o.nodes)]
        self.max_nodes = o.nodes + 3
        self.checker = Checker(self.ids, checks & ALL_CHECKS)
        rchecker = ReplicaChecker(
            lambda: self.checker.canonical, self.checker.fail, checks & REPLICA_CHECKS
        )
        self.rchecker = rchecker
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
            replica_checker=rchecker,
            params=o.replica_params(Random(self.rng.getrandbits(64))),
            replica_factory=PLANTED[planted] if planted else Replica,
        )
        self.clients = SimClients(self.world, Random(self.rng.getrandbits(64)), o.client_params())
        self.world.on_chaos = self._chaos
        self.world.on_client = self._client
        self.world.on_apply = self._on_apply  # type: ignore[method-assign]
        self.world.on_snapshot = self._on_snapshot
        self.markers = 0
        self.markers_applied: dict[NodeId, set[bytes]] = defaultdict(set)
        self.marker_terms: dict[tuple[NodeId, int], Proposal] = {}
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
            w.net.partition(w.ids, rng)
            w.stats.partitions += 1
        elif w.net.blocked and rng.random() < o.heal_p:
            w.net.heal()
        if rng.random() < o.transfer_p:
            for n in w.leaders():
                assert n.replica is not None
                if n.busy is None:
                    others = [i for i in n.replica.raft.voters if i != n.id]
                    if others:
                        n.replica.transfer(rng.choice(others))
                        w.stats.transfers += 1
                        w.drive(n)
        if self.member_rng.random() < o.member_p:
            self._change_membership()

    def _change_membership(self) -> None:
        """What an operator does: add a new host as a learner, promote a learner, remove a
        member (the leader too). Sometimes twice in a row: the second must be refused while
        the first is in flight. A removed node keeps running (it must not disrupt)."""
        w, rng = self.world, self.member_rng
        leaders = [n for n in w.leaders() if n.busy is None]
        if not leaders:
            return
        n = rng.choice(leaders)
        assert n.replica is not None
        for _ in range(rng.choice((1, 1, 2))):
            conf = n.replica.raft.conf
            ops = ["remove"]
            if len(w.nodes) < self.max_nodes:
                ops.append("add")
            if conf.learners:
                ops += ["promote", "promote"]
            op = rng.choice(ops)
            if op == "add":
                nid = NodeId(f"n{len(w.nodes) + 1}")
                ch = ConfChange(ConfOp.ADD_LEARNER, nid, f"sim:{nid}")
            elif op == "promote":
                ch = ConfChange(ConfOp.PROMOTE, rng.choice(conf.learners))
            else:
                ch = ConfChange(ConfOp.REMOVE, rng.choice(conf.members()))
            try:
                n.replica.propose_conf_change(ch)
            except ConfChangeRefused:
                w.stats.conf_refused += 1
                continue
            w.stats.conf_changes += 1
            if op == "add":
                w.add_node(ch.node)
            if n.replica.raft.role is not Role.LEADER:
                break
        w.drive(n)

    def _client(self) -> None:
        w = self.world
        w.schedule(self.opts.propose_interval, CLIENT)
        if self.phase == "safety":
            self.clients.act()
            return
        # One marker per leader term: the liveness question is whether *a* new record commits
        # everywhere, not whether the cluster keeps up with a flood.
        leaders = [n for n in w.leaders() if n.busy is None]
        if not leaders:
            return
        n = max(leaders, key=lambda x: x.raft.term if x.raft else 0)
        assert n.raft is not None
        sent = self.marker_terms.get((n.id, n.raft.term))
        if sent is not None and sent.error is None:
            return  # in flight or done; a refused one (say, overloaded) is sent again
        self.markers += 1
        rid = MARKER + self.markers.to_bytes(16 - len(MARKER), "big")
        self.marker_terms[(n.id, n.raft.term)] = self.clients.marker(n, rid)
        w.stats.proposals += 1

    def _on_apply(self, n: SimNode, items: AppliedItems) -> None:
        if self.phase == "liveness":
            for _, a in items:
                if a is not None:
                    got = self.markers_applied[n.id]
                    got.update(rid for rid in a.batch.ids() if rid.startswith(MARKER))

    def _on_snapshot(self, n: SimNode) -> None:
        """A marker may reach a node inside a snapshot (its entry compacted on the leader):
        the restored dedup window holds its id (the simulated window never evicts)."""
        if self.phase == "liveness" and n.replica is not None:
            window = n.replica.applier.window
            width = 16 - len(MARKER)
            sent = (MARKER + k.to_bytes(width, "big") for k in range(1, self.markers + 1))
            self.markers_applied[n.id].update(r for r in sent if window.get(r) is not None)

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
        r, cs = self.rchecker.stats, self.clients.stats
        result.stats.update(
            records_committed=len(self.rchecker.model.first),
            **dataclasses.asdict(r),
            submissions=cs.submissions,
            resends=cs.resends,
            timeouts=cs.timeouts,
        )
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
        longest = max(w.nodes.values(), key=lambda n: n.store.last_index())
        backlog = longest.store.last_index()  # (a snapshot may stand in for a prefix)
        # Entries per append: the byte cap over the log's mean entry (records, not a constant).
        first = longest.store.first_index()
        entries = longest.store.entries(first, Index(backlog + 1), 1 << 62)
        mean_bytes = sum(len(e.data) + 32 for e in entries) // max(1, len(entries))
        per_msg = max(1, o.max_msg_bytes // max(1, mean_bytes))
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
            members = self._members()
            if members:
                common = set.intersection(*(self.markers_applied[m] for m in members))
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

    def _members(self) -> tuple[NodeId, ...]:
        """The members of the newest leader's configuration (a removed node gets nothing new;
        a member not up yet counts, so the check waits for it)."""
        leaders = self.world.leaders()
        if not leaders:
            return ()
        newest = max(leaders, key=lambda x: x.raft.term if x.raft else 0)
        return newest.raft.conf.members() if newest.raft is not None else ()

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
        if self.planted:
            cmd += f" --planted {self.planted}"
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
        "--planted",
        choices=sorted(PLANTED),
        help="use a replica with a planted bug, to see the checkers catch it",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(EVERY_CHECK),
        help="run only these checks (repeatable); default: all",
    )
    p.add_argument("--no-liveness", action="store_true", help="skip the healing phase")
    a = p.parse_args(argv)
    sim = Simulation(
        a.seed,
        nodes=a.nodes,
        broken_store=a.broken_store,
        planted=a.planted,
        checks=frozenset(a.only) if a.only else EVERY_CHECK,
    )
    result = sim.run(a.steps, liveness=not a.no_liveness)
    print(result.summary())
    if result.failure is not None:
        print(result.report, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
