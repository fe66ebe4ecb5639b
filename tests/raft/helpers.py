"""Small helpers shared by the Raft scenario tests (they only read the ``Cluster``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from p2plog.raft import Index, Message, RaftConfig, Role
from p2plog.testing.cluster import Cluster

# The paper's plain protocol: a higher-term RequestVote always reaches the role handler.
NO_LEASE = RaftConfig(pre_vote=False, check_quorum=False)

M = TypeVar("M", bound=Message)


def log_of(c: Cluster, nid: str) -> list[tuple[int, bytes]]:
    """(term, data) of every entry in the node's log, index 1 first."""
    lg = c[nid].log
    return [(e.term, e.data) for e in lg.entries(Index(1), Index(lg.last_index() + 1), 1 << 30)]


def pending_of(
    c: Cluster, kind: type[M], *, src: str | None = None, dst: str | None = None
) -> list[M]:
    """Pending messages of one kind, optionally from ``src`` and/or to ``dst``."""
    return [
        m
        for m in c.pending
        if isinstance(m, kind) and (src is None or m.src == src) and (dst is None or m.dst == dst)
    ]


def tick_until(c: Cluster, done: Callable[[], bool], nodes: list[str], limit: int = 200) -> int:
    """Tick only ``nodes`` (delivering after each round) until ``done()``; returns the ticks."""
    for t in range(1, limit + 1):
        for nid in nodes:
            c.tick(nid)
        c.stabilize()
        if done():
            return t
    raise AssertionError(f"condition not reached within {limit} ticks")


def elect_other_leader(c: Cluster, old: str, others: list[str]) -> str:
    """Isolate ``old`` (a leader that is not ticked meanwhile, so it stays leader of its term)
    and tick ``others`` until one of them is leader; returns the new leader."""
    c.isolate(old)
    tick_until(c, lambda: any(c[o].role is Role.LEADER for o in others), others)
    return next(o for o in others if c[o].role is Role.LEADER)
