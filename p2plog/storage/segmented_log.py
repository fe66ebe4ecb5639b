"""SegmentedLog: the durable Raft log and hard state of one node (blocking API).

The runtime calls it from a worker thread (``trio.to_thread.run_sync``). It implements the Raft
core's ``LogReader`` plus the writes the ``Ready`` contract needs:

- ``append_batch(entries, hard_state, sync=True)``: the hard state first (meta files, fsync'd),
  then one ``write`` of all frames and **one fdatasync per batch** (group commit), truncating a
  conflicting suffix first when ``entries[0].index <= last_index()``.
- Segments roll at ``segment_bytes``: the full one is sealed (fdatasync + sidecar index), a new
  one is created and the directory fsync'd.
- Disk budget: a batch that would take the log over ``budget_bytes``, or that meets ENOSPC,
  raises ``DiskFull`` and leaves nothing of itself on disk; the next append simply tries again.
- An I/O error from write or fsync raises ``StorageFailed`` and poisons the store: the kernel may
  already have dropped the dirty pages, so no later write is accepted (fsyncgate).

Invariants: segments are contiguous (each starts at the previous last index + 1); only the last
segment is open for writing; ``tail`` caches the newest entries so the leader feeds followers
from memory.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from p2plog.errors import Corruption, DiskFull, StorageFailed
from p2plog.raft.membership import is_conf
from p2plog.raft.types import Entry, HardState, Index, Snapshot, Term
from p2plog.storage import conffile, frame, snapfile
from p2plog.storage.meta import MetaStore, fsync_dir
from p2plog.storage.recovery import recover
from p2plog.storage.segment import HEADER_SIZE, Segment, encode_header, segment_name

log = logging.getLogger("p2plog.storage")

DEFAULT_SEGMENT_BYTES = 64 << 20
TAIL_CACHE_BYTES = 8 << 20


class SegmentedLog:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        budget_bytes: int | None = None,
        node: str = "-",
    ) -> None:
        self.dir = Path(data_dir)
        self.log_dir = self.dir / "log"
        self.segment_bytes = segment_bytes
        self.budget_bytes = budget_bytes
        self.node = node
        self.failed: str | None = None
        self.fsyncs = 0
        self.bytes_written = 0
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.meta = MetaStore(self.dir)
        self.segments: list[Segment] = recover(self.dir, self.log_dir, node)
        self._firsts = [s.first_index for s in self.segments]
        self.tail: list[Entry] = []
        self.tail_bytes = 0
        self.total_bytes = sum(s.size for s in self.segments)
        self.snap = snapfile.load(self.dir)
        self.snapshot_bytes = 0
        if not self.segments:
            self._create_segment(Index(self.snap.index + 1), self.snap.term)
        self._reconcile_snapshot()
        self.confs = self._open_confs()

    def _open_confs(self) -> list[Entry]:
        first, last = self.first_index(), self.last_index()
        listed = conffile.load(self.dir)
        if listed is None:
            log.info("%s: no configuration file: reading the log for it", self.node)
            listed = conffile.scan(
                lambda lo: self.entries(lo, Index(last + 1), 16 << 20), first, last
            )
            self._io("write configuration file", conffile.save, self.dir, listed, fatal=True)
        return conffile.reconcile(listed, first, last, self.term)

    def _reconcile_snapshot(self) -> None:
        """After a crash in ``install_snapshot`` (the new snapshot written, the old log not yet
        removed) the log does not continue the snapshot: it is dropped, as the install would
        have. A log that starts past the snapshot has lost entries: refused."""
        s = self.snap
        if self.first_index() - 1 > s.index:
            raise Corruption(
                f"{self.log_dir}: the log starts at index {self.first_index()} but the snapshot "
                f"ends at {s.index} (0: no snapshot file): entries in between are missing; "
                f"restore from a backup",
                path=str(self.log_dir),
                offset=0,
            )
        if s.index and (self.last_index() < s.index or self.term(s.index) != s.term):
            log.warning(
                "%s: the log does not continue the snapshot at %d: dropped", self.node, s.index
            )
            self._replace_log(s)

    # ------------------------------------------------------------ LogReader

    def snapshot(self) -> Snapshot:
        return self.snap

    def first_index(self) -> Index:
        return self.segments[0].first_index

    def last_index(self) -> Index:
        return self.segments[-1].last_index

    def term(self, index: Index) -> Term:
        if self.tail and index >= self.tail[0].index:
            return self.tail[index - self.tail[0].index].term
        return self._segment_for(index).term(index)

    def entries(self, lo: Index, hi: Index, max_bytes: int) -> list[Entry]:
        assert self.first_index() <= lo <= hi <= self.last_index() + 1, f"entries({lo}, {hi})"
        out: list[Entry] = []
        if self.tail and lo >= self.tail[0].index:
            size = 0
            for e in self.tail[lo - self.tail[0].index : hi - self.tail[0].index]:
                if out and size + len(e.data) > max_bytes:
                    break
                out.append(e)
                size += len(e.data)
            return out
        size = 0
        i = bisect.bisect_right(self._firsts, lo) - 1
        while lo < hi and i < len(self.segments):
            seg = self.segments[i]
            before = len(out)
            size = seg.read(lo, hi, max_bytes, out, size)
            if len(out) == before or out[-1].index < min(hi, seg.last_index + 1) - 1:
                break  # the byte cap stopped us
            lo = Index(out[-1].index + 1)
            i += 1
        return out

    def conf_entries(self) -> list[Entry]:
        return [e for e in self.confs if e.index > self.snap.index]

    def hard_state(self) -> HardState:
        return self.meta.state

    # --------------------------------------------------------------- writes

    def append_batch(
        self, entries: Sequence[Entry], hard_state: HardState | None, *, sync: bool = True
    ) -> None:
        """Persist a Ready's hard state and entries; durable on return when ``sync``."""
        if self.failed is not None:
            raise StorageFailed(self.failed)
        if hard_state is not None and hard_state != self.meta.state:
            self._io("write hard state", self.meta.save, hard_state)
            self.fsyncs += 1
        if entries:
            first = entries[0].index
            if first <= self.last_index():
                self.truncate_suffix(first)
            assert first == self.last_index() + 1, f"append at {first} after {self.last_index()}"
            self._write(entries)
        if sync and entries:
            self.sync()

    def sync(self) -> None:
        """fdatasync the open segment. Any failure here is fatal, ENOSPC included: the kernel
        may have dropped pages it could not write, so a retry could 'succeed' over lost data."""
        if self.failed is not None:
            raise StorageFailed(self.failed)
        self._io("fdatasync", os.fdatasync, self.segments[-1].fd, fatal=True)
        self.fsyncs += 1

    def _write(self, entries: Sequence[Entry]) -> None:
        buf = frame.encode_batch(entries)
        seg = self.segments[-1]
        roll = seg.size + len(buf) > self.segment_bytes and seg.last_index >= seg.first_index
        need = len(buf) + (HEADER_SIZE if roll else 0)
        if self.budget_bytes is not None and self.total_bytes + need > self.budget_bytes:
            raise DiskFull(
                f"{self.dir}: disk budget of {self.budget_bytes} bytes reached "
                f"({self.total_bytes} used); raise the budget or lower retention"
            )
        if any(is_conf(e.data) for e in entries):
            # In the file before it is in the log (``conffile``): the node's configuration is
            # the newest entry, and the file is how a starting node finds it.
            first = entries[0].index
            confs = [c for c in self.confs if c.index < first]
            confs += [e for e in entries if is_conf(e.data)]
            self._io("write configuration file", conffile.save, self.dir, confs)
            self.confs = confs
        if roll:
            self._roll()
            seg = self.segments[-1]
        start = seg.size
        try:
            written = 0
            while written < len(buf):
                written += os.pwrite(seg.fd, memoryview(buf)[written:], start + written)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                self._undo_write(seg, start)
                raise DiskFull(
                    f"{self.dir}: no space left on the volume; writes resume when space "
                    f"returns (free disk or lower retention)"
                ) from e
            self._poison(f"write to {seg.path} failed: {e}")
            raise StorageFailed(self.failed or "") from e
        offset = start
        for e_ in entries:
            end = offset + frame.HEADER_SIZE + len(e_.data)
            seg.note(e_.index, e_.term, offset, end)
            offset = end
        self.total_bytes += len(buf)
        self.bytes_written += len(buf)
        self._cache(entries)

    def _undo_write(self, seg: Segment, start: int) -> None:
        try:
            os.ftruncate(seg.fd, start)
        except OSError as e:
            self._poison(f"could not undo a partial write to {seg.path}: {e}")

    def _cache(self, entries: Sequence[Entry]) -> None:
        self.tail.extend(entries)
        self.tail_bytes += sum(len(e.data) for e in entries)
        drop = 0
        while self.tail_bytes > TAIL_CACHE_BYTES and drop < len(self.tail) - 1:
            self.tail_bytes -= len(self.tail[drop].data)
            drop += 1
        if drop:
            del self.tail[:drop]

    def truncate_suffix(self, index: Index) -> None:
        """Remove entries ``index..last`` (Raft §5.3 conflict); durable before returning.

        Every failure here is fatal: a half-done truncation followed by a retry could leave
        the file and the in-memory view disagreeing, so the store refuses writes instead. The
        files change first; the in-memory view follows only once they did.
        """
        assert self.first_index() <= index <= self.last_index(), f"truncate at {index}"
        i = bisect.bisect_right(self._firsts, index) - 1
        later = self.segments[i + 1 :]
        for seg in reversed(later):
            self._io("remove segment", self._remove_segment, seg, fatal=True)
        del self.segments[i + 1 :]
        del self._firsts[i + 1 :]
        if later:
            self._io("fsync directory", fsync_dir, self.log_dir, fatal=True)
        seg = self.segments[-1]
        offset = seg.offset_of(index)
        if seg.sealed:
            self._io("reopen segment", self._unseal, seg, fatal=True)
        self._io("truncate", os.ftruncate, seg.fd, offset, fatal=True)
        self._io("fsync", os.fsync, seg.fd, fatal=True)
        self.total_bytes -= seg.size - offset
        seg.forget_after(index - 1, offset)
        # The file keeps naming a truncated entry until it is next written: harmless, since
        # opening drops what the log does not hold at that index and term.
        self.confs = [c for c in self.confs if c.index < index]
        if self.tail and index <= self.tail[-1].index:
            keep = max(0, index - self.tail[0].index)
            self.tail_bytes -= sum(len(e.data) for e in self.tail[keep:])
            del self.tail[keep:]
        log.info("%s: truncated the log from index %d (conflicting suffix)", self.node, index)

    @staticmethod
    def _unseal(seg: Segment) -> None:
        fd = os.open(seg.path, os.O_RDWR)
        os.close(seg.fd)
        seg.fd = fd
        seg.sealed = False
        seg.idx_path.unlink(missing_ok=True)

    def _roll(self) -> None:
        seg = self.segments[-1]
        self._io("fdatasync", os.fdatasync, seg.fd, fatal=True)
        self._io("write segment index", seg.idx_path.write_bytes, seg.encode_idx())
        seg.sealed = True
        try:
            self._create_segment(Index(seg.last_index + 1), seg.last_term())
        except DiskFull:
            seg.sealed = False  # it stays the open segment; the next append tries again
            seg.idx_path.unlink(missing_ok=True)
            raise

    def _create_segment(self, first: Index, prev_term: Term) -> None:
        seg = self._new_segment(first, prev_term)
        self.segments.append(seg)
        self._firsts.append(first)
        self.total_bytes += HEADER_SIZE

    def _new_segment(self, first: Index, prev_term: Term) -> Segment:
        path = self.log_dir / segment_name(first)
        fd = self._io("create segment", os.open, path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        assert isinstance(fd, int)
        try:
            self._io("write segment header", os.write, fd, encode_header(first, prev_term))
            self._io("fsync", os.fsync, fd, fatal=True)
            self._io("fsync directory", fsync_dir, self.log_dir, fatal=True)
        except (DiskFull, StorageFailed):
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return Segment(path, fd, first, prev_term)

    def _remove_segment(self, seg: Segment) -> None:
        os.close(seg.fd)
        seg.idx_path.unlink(missing_ok=True)
        seg.path.unlink()
        self.total_bytes -= seg.size

    # ------------------------------------------------------------ snapshots

    def compact(self, snap: Snapshot) -> None:
        """Keep ``snap`` (the node's state at an applied index) durably; segments wholly at or
        below its index may then go (``apply_retention``)."""
        assert self.first_index() - 1 <= snap.index <= self.last_index(), f"compact({snap.index})"
        assert self.term(snap.index) == snap.term, f"snapshot term {snap.term} at {snap.index}"
        self._save_snapshot(snap, fatal=False)

    def install_snapshot(self, snap: Snapshot) -> None:
        """The leader's snapshot replaces the whole log (Raft §7): the snapshot file first (no
        room for it: ``DiskFull``, nothing changed, the caller retries), then the segments go
        (recovery finishes an install a crash interrupted)."""
        if self.failed is not None:
            raise StorageFailed(self.failed)
        self._save_snapshot(snap, fatal=False)
        self._replace_log(snap)

    def _save_snapshot(self, snap: Snapshot, *, fatal: bool) -> None:
        n = self._io("write snapshot", snapfile.save, self.dir, snap, fatal=fatal)
        assert isinstance(n, int)
        self.snapshot_bytes, self.snap = n, snap

    def _replace_log(self, snap: Snapshot) -> None:
        """Every segment goes; one empty segment after ``snap`` takes their place. Readers on
        other threads (``status``) see the old list or the new one, never an empty one. Any
        failure is fatal: the files and the view would disagree."""
        first = Index(snap.index + 1)
        for seg in reversed(self.segments):
            if seg.first_index != first:
                self._io("remove segment", self._remove_segment, seg, fatal=True)
            else:  # the new segment takes this name: truncated in place by O_TRUNC below
                os.close(seg.fd)
                seg.idx_path.unlink(missing_ok=True)
                self.total_bytes -= seg.size
        try:
            seg = self._new_segment(first, snap.term)
        except DiskFull as e:
            self._poison(f"no room to start the log after the snapshot at {snap.index}: {e}")
            raise StorageFailed(self.failed or "") from e
        self.segments, self._firsts = [seg], [first]
        self.tail, self.tail_bytes = [], 0
        self.confs = []
        self.total_bytes = HEADER_SIZE
        log.info("%s: the log now starts after the snapshot at index %d", self.node, snap.index)

    # ------------------------------------------------------------ retention

    def remove_before(self, index: Index) -> int:
        """Remove whole sealed segments whose entries are all below ``index`` and covered by
        the snapshot (never past it: a log that starts past its snapshot cannot be opened)."""
        index = Index(min(index, self.snap.index + 1))
        count = 0
        while len(self.segments) > 1 and self.segments[0].last_index < index:
            self._remove_segment(self.segments.pop(0))
            self._firsts.pop(0)
            count += 1
        if count:
            fsync_dir(self.log_dir)
            log.info("%s: retention removed %d segment(s) below index %d", self.node, count, index)
        return count

    def apply_retention(
        self,
        *,
        below: Index,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
        now: float | None = None,
    ) -> int:
        """Remove the segments ``retention_cut`` names (never past the snapshot)."""
        cut = self.retention_cut(below=below, max_bytes=max_bytes, max_age_s=max_age_s, now=now)
        return self.remove_before(cut) if cut else 0

    def retention_cut(
        self,
        *,
        below: Index,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
        now: float | None = None,
    ) -> Index:
        """Where retention would cut (0: nothing): after the oldest sealed segments wholly
        below ``below`` (the runtime passes one past its snapshot) while the log exceeds
        ``max_bytes`` or they are older than ``max_age_s`` (by their last write). Only reads
        (``Retention.due`` asks it from the event loop)."""
        now = time.time() if now is None else now
        cut = Index(0)
        total = self.total_bytes
        for seg in self.segments[:-1]:
            if seg.last_index >= below:
                break
            too_big = max_bytes is not None and total > max_bytes
            too_old = max_age_s is not None and now - segment_mtime(seg.path, now) > max_age_s
            if not (too_big or too_old):
                break
            total -= seg.size
            cut = Index(seg.last_index + 1)
        return cut

    # -------------------------------------------------------------- helpers

    def _segment_for(self, index: Index) -> Segment:
        i = bisect.bisect_right(self._firsts, index) - 1
        if i < 0 and index == self.first_index() - 1:
            i = 0
        return self.segments[max(i, 0)]

    def _io(
        self, what: str, fn: Callable[..., object], *args: object, fatal: bool = False
    ) -> object:
        """Run one I/O call and return its result; ENOSPC becomes DiskFull (unless ``fatal``),
        any other error poisons the store."""
        if self.failed is not None:
            raise StorageFailed(self.failed)
        try:
            return fn(*args)
        except OSError as e:
            if not fatal and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(
                    f"{self.dir}: no space left for {what}; free disk space or lower retention, "
                    f"writes resume by themselves when space returns"
                ) from e
            self._poison(f"{what} failed in {self.dir}: {e}")
            raise StorageFailed(self.failed or "") from e

    def _poison(self, reason: str) -> None:
        self.failed = (
            f"{reason}. The data written since the last good fsync may be gone; this node "
            f"refuses further writes. Check the disk, then restart the node (recovery re-reads "
            f"what is really on disk)"
        )
        log.error("%s: storage failed: %s", self.node, self.failed)

    def close(self) -> None:
        """Close every segment; a failing close (EIO after the disk died) is logged, and the
        remaining files are still closed."""
        for seg in self.segments:
            try:
                os.close(seg.fd)
            except OSError as e:
                log.error("%s: closing %s failed: %s", self.node, seg.path, e)
        self.segments = []
        self._firsts = []


def segment_mtime(path: Path, default: float) -> float:
    """A segment's last write; ``default`` when it was just removed (by the storage thread,
    while the event loop asks ``retention_cut``)."""
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return default
