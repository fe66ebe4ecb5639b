"""Deliberately broken stores, to prove that the simulator's checkers catch real bugs."""

from __future__ import annotations

from random import Random

from p2plog.raft.types import HardState
from p2plog.storage.memory import MemoryStore


class ForgetfulStore(MemoryStore):
    """Loses the vote on every crash, the classic Python-Raft bug (PySyncObj, raftos): a
    restarted node can then vote twice in one term and elect two leaders."""

    def crash(self, rng: Random) -> None:
        super().crash(rng)
        self.append_batch((), HardState(self.hard_state().term, None), sync=True)


BROKEN_STORES: dict[str, type[MemoryStore]] = {"forget-vote": ForgetfulStore}
