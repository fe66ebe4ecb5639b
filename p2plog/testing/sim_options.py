"""What a simulator seed decides about a run: the options, drawn from the seed's ``Random``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from random import Random

from p2plog.raft.config import RaftConfig
from p2plog.testing.sim_clients import ClientParams
from p2plog.testing.sim_cluster import ReplicaParams


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
    clients: int
    leader_ack_p: float
    resend_p: float
    reorder_window_ms: int
    skew_max: int
    compact_every: int
    member_p: float  # per chaos round: a membership change (add, promote, remove)

    @classmethod
    def draw(
        cls, rng: Random, nodes: int | None = None, member_rng: Random | None = None
    ) -> SimOptions:
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
            clients=rng.choice((1, 3, 8)),
            leader_ack_p=rng.choice((0.0, 0.3, 1.0)),
            resend_p=rng.choice((0.0, 0.05, 0.2)),
            reorder_window_ms=rng.choice((20, 200, 1000)),
            skew_max=rng.choice((0, 5, 100)),
            compact_every=rng.choice((0, 4, 16, 64, 256)),
            member_p=member_rng.choice((0.0, 0.05, 0.2, 0.5)) if member_rng else 0.0,
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

    def replica_params(self, rng: Random) -> ReplicaParams:
        return ReplicaParams(
            reorder_window_ms=self.reorder_window_ms,
            reorder_max_records=rng.choice((16, 1000)),
            time_tick_ms=max(5, self.reorder_window_ms // 4),
            skew_ms=tuple(rng.randint(-self.skew_max, self.skew_max) for _ in range(self.nodes)),
            compact_every=self.compact_every,
        )

    def client_params(self) -> ClientParams:
        return ClientParams(
            clients=self.clients,
            batch_max=self.batch_max,
            leader_ack_p=self.leader_ack_p,
            resend_p=self.resend_p,
            lag_max=self.reorder_window_ms // 2,
        )

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))
