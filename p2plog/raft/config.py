"""Tunables of the Raft core, in ticks and bytes (the runtime decides how long a tick is)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Raft parameters; ``__post_init__`` rejects values that would break safety or liveness.

    ``election_ticks`` is the base election timeout; each node draws its timeout uniformly from
    ``[election_ticks, 2 * election_ticks)`` (Raft §5.2) from its own seeded RNG.
    """

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight_msgs: int = 32
    max_msg_bytes: int = 1 << 20
    max_uncommitted_bytes: int = 64 << 20
    max_apply_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1:
            raise ValueError(f"heartbeat_ticks must be >= 1, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError(
                f"election_ticks ({self.election_ticks}) must exceed heartbeat_ticks "
                f"({self.heartbeat_ticks}), or followers time out between heartbeats"
            )
        for name in ("max_inflight_msgs", "max_msg_bytes", "max_uncommitted_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_apply_bytes < 1:
            raise ValueError(f"max_apply_bytes must be >= 1, got {self.max_apply_bytes}")
