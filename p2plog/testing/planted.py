"""Replicas with a planted bug, to prove that the simulator's checkers catch the classic ones.

``python -m p2plog.testing.sim --seed S --planted NAME`` runs one; ``tests/testing`` demands
that each is caught within a bounded number of seeds.
"""

from __future__ import annotations

from typing import Any

from p2plog.order.reorder import ReorderBuffer
from p2plog.raft import leader, reconfig
from p2plog.raft.membership import ConfChange, ConfChangeRefused, apply_change, encode_conf
from p2plog.raft.types import Entry, Index, Role, Snapshot
from p2plog.replica.proposals import Proposal
from p2plog.replica.replica import Replica, ReplicaReady
from p2plog.state.applier import Applied, Applier
from p2plog.state.dedup import DedupWindow


class TwoConfChangesInFlight(Replica):
    """Proposes a membership change while the previous one has not committed (the leader
    skips rule 2 of ``raft.membership``): two single-server changes in flight can leave the
    old and the newest configuration with majorities that do not overlap."""

    def propose_conf_change(self, change: ConfChange) -> Index:
        r = self.raft
        if r.role is not Role.LEADER:
            raise ConfChangeRefused(f"{r.id} is not the leader")
        conf = apply_change(r.conf, change)
        index = Index(r.log.last_index() + 1)
        leader.append_entries(r, [Entry(r.term, index, encode_conf(conf))])
        reconfig.follow(r)
        return index


class AckOnLeaderDisk(Replica):
    """Acks ``ack=quorum`` records once they are on the leader's disk, before a majority has
    them (the ack a crash of the leader can take back)."""

    def advance(self, rd: ReplicaReady) -> None:
        if rd.entries and self.raft.role is Role.LEADER:
            for e in rd.entries:
                w = self.waiters.get(e.index)
                if w is None or w.term != e.term:
                    continue
                for p, pos0, k0, n in w.slots:
                    if p.resolve_run(pos0, n, w.base + k0, e.term):
                        self._finished.append(p)
        super().advance(rd)


class _ForgetfulApplier(Applier):
    """Applies, after a restart, what was in the log before it without remembering its ids."""

    def __init__(self, inner: Applier, replayed_to: int) -> None:
        super().__init__(inner.window.max_records, inner.window.max_age_ns)
        self.replayed_to = replayed_to

    def apply(self, e: Entry) -> Applied | None:
        if e.index > self.replayed_to:
            return super().apply(e)
        saved = self.window
        self.window = type(saved)(saved.max_records, saved.max_age_ns)  # a throwaway window
        try:
            return super().apply(e)
        finally:
            self.window = saved


class ForgetDedupOnRestart(Replica):
    """Does not rebuild the dedup window from the log on restart: a retry of a record
    committed before the crash is stored a second time."""

    def __init__(self, **kw: Any) -> None:
        store = kw["store"]
        kw["applier"] = _ForgetfulApplier(kw["applier"], int(store.last_index()))
        super().__init__(**kw)


class LocalReorderWindow(Replica):
    """Node n1 orders event time with its own (local) reorder window instead of the cluster's:
    its event-time stream releases records at other moments, with other ``late`` flags."""

    def __init__(self, **kw: Any) -> None:
        if kw["node_id"] == "n1":
            ev = kw["events"]
            kw["events"] = ReorderBuffer(
                reorder_window_ms=ev.window_ns // 1_000_000 * 3 + 7,
                max_records=ev.max_records,
                max_bytes=ev.max_bytes,
            )
        super().__init__(**kw)


class SnapshotDropsDedup(Replica):
    """Takes snapshots without the dedup window (the classic: the window is rebuilt from the
    log, so a snapshot that forgets it looks harmless): a node restored from one stores a
    retry of a record committed before the snapshot a second time."""

    def snapshot(self) -> Snapshot:
        saved = self.applier.window
        self.applier.window = DedupWindow(saved.max_records, saved.max_age_ns)
        try:
            return super().snapshot()
        finally:
            self.applier.window = saved


class DropRefusals(Replica):
    """Refuses a submission (say, not the leader) without handing the refusal out: its
    submitter waits for a timeout instead of trying the leader at once."""

    def _fail(self, p: Proposal, code: str, message: str) -> None:
        p.fail(code, message)


PLANTED: dict[str, type[Replica]] = {
    "ack-on-leader-disk": AckOnLeaderDisk,
    "forget-dedup-on-restart": ForgetDedupOnRestart,
    "local-reorder-window": LocalReorderWindow,
    "drop-refusals": DropRefusals,
    "snapshot-drops-dedup": SnapshotDropsDedup,
    "two-conf-changes": TwoConfChangesInFlight,
}
