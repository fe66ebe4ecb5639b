"""Retention: every node keeps its own log within ``[retention]`` (by age and by bytes).

Every ``CHECK_S`` the node asks whether its oldest sealed segment is due (the log is over
``max_bytes``, or the segment's last write is older than ``max_age_s``). If so the Raft loop takes
a snapshot at its applied index (``RaftLoop.request_compact``) and, in the storage thread,
``cut`` writes it (``SegmentedLog.compact``: file, fsync, rename) and removes the whole sealed
segments wholly at or below its index that the bounds say go. The open segment always stays, and
so does anything not yet applied. A follower that needs a cut entry gets the snapshot instead
(``InstallSnapshot``), so nothing a live follower needs is lost: it is sent the state in place of
the entries (Raft §7).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from p2plog.config import RetentionConfig
from p2plog.errors import DiskFull
from p2plog.raft.types import Index, Snapshot
from p2plog.replica.snapshot import MAX_SNAPSHOT_BYTES
from p2plog.runtime.raft_loop import RaftLoop
from p2plog.state.entry import parse_batch
from p2plog.storage.segmented_log import SegmentedLog, segment_mtime

log = logging.getLogger("p2plog.retention")

CHECK_S = 5.0


class Retention:
    def __init__(self, cfg: RetentionConfig, storage: SegmentedLog, node: str) -> None:
        self.cfg = cfg
        self.storage = storage
        self.node = node
        self.passes = 0
        self.segments_cut = 0
        self.bytes_cut = 0
        self.last_cut_at: float | None = None

    def due(self, now: float | None = None) -> bool:
        """Would a pass cut anything (ignoring how far the snapshot reaches)?"""
        st, cfg = self.storage, self.cfg
        if not cfg.enabled:
            return False
        cut = st.retention_cut(
            below=Index(st.last_index() + 1),
            max_bytes=cfg.max_bytes or None,
            max_age_s=cfg.max_age_s or None,
            now=now,
        )
        return cut > 0

    async def run(self, loop: RaftLoop) -> None:
        """Ask for a pass whenever one is due; runs until cancelled."""
        while True:
            await trio.sleep(CHECK_S)
            if self.due():
                loop.request_compact()

    def cut(self, snap: Snapshot) -> tuple[int, int | None]:
        """Blocking (storage thread): keep ``snap``, remove the segments the bounds say go
        below it; returns the first Raft index and record index still held."""
        st = self.storage
        self.passes += 1
        if len(snap.data) > MAX_SNAPSHOT_BYTES:
            log.error(
                "%s: a snapshot of %d bytes is over the %d a peer link carries: a follower that "
                "needs it cannot be fed; lower [cluster] reorder_max_bytes or "
                "dedup_window_records",
                self.node,
                len(snap.data),
                MAX_SNAPSHOT_BYTES,
            )
        try:
            st.compact(snap)
        except DiskFull as e:
            # No room for the new snapshot: cut what the one on disk already stands for.
            log.warning("%s: retention could not write a snapshot (%s)", self.node, e)
        before = st.total_bytes
        n = st.apply_retention(
            below=Index(st.snapshot().index + 1),
            max_bytes=self.cfg.max_bytes or None,
            max_age_s=self.cfg.max_age_s or None,
        )
        if n:
            self.segments_cut += n
            self.bytes_cut += before - st.total_bytes
            self.last_cut_at = time.time()
        return st.first_index(), _first_record(st)

    def status(self) -> dict[str, Any]:
        st = self.storage
        now = time.time()
        oldest = segment_mtime(st.segments[0].path, now) if st.segments else None
        snap = st.snapshot()
        return {
            "max_age_s": self.cfg.max_age_s,
            "max_bytes": self.cfg.max_bytes,
            "kept": {
                "first_index": st.first_index(),
                "segments": len(st.segments),
                "bytes": st.total_bytes,
                "oldest_age_s": None if oldest is None else round(now - oldest, 1),
            },
            "cut": {
                "segments": self.segments_cut,
                "bytes": self.bytes_cut,
                "passes": self.passes,
                "last_at": self.last_cut_at,
            },
            "snapshot": {"index": snap.index, "term": snap.term, "bytes": len(snap.data)},
        }


def _first_record(st: SegmentedLog) -> int | None:
    """The first record index the log holds (the first batch entry's base), looking at a
    bounded number of entries from its start."""
    lo = st.first_index()
    hi = Index(min(st.last_index() + 1, lo + 256))
    if lo >= hi:
        return None
    for e in st.entries(lo, hi, 1 << 24):
        b = parse_batch(e.data)
        if b is not None:
            return b.base
    return None
