"""The disk store's snapshot (``storage.snapfile``): kept across reopen, the log cut behind it,
the leader's snapshot replacing the log, an install a crash interrupted finished on open, and a
damaged snapshot or a log that starts past it refused. ``MemoryStore`` keeps the same contract.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from p2plog.errors import Corruption
from p2plog.raft.types import Index, Snapshot, Term
from p2plog.storage import snapfile
from p2plog.storage.memory import MemoryStore
from p2plog.storage.segmented_log import SegmentedLog

from .logdata import read_all, run, seg_files


def _fill(log: SegmentedLog, n: int) -> None:
    for start in range(1, n + 1, 10):  # segments roll between batches
        log.append_batch(run(start, min(10, n + 1 - start)), None)


def test_compact_keeps_the_snapshot_and_retention_cuts_behind_it(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    _fill(log, 200)
    before = len(seg_files(tmp_path))
    snap = Snapshot(Index(150), Term(1), b"state at 150")
    log.compact(snap)
    removed = log.apply_retention(below=Index(snap.index + 1), max_bytes=0)
    assert removed > 0
    assert len(seg_files(tmp_path)) == before - removed
    assert log.first_index() - 1 <= snap.index  # only whole segments go
    log.close()
    log = opened()
    assert log.snapshot() == snap
    assert log.term(Index(log.first_index() - 1)) == 1
    assert [e.index for e in read_all(log)] == list(range(log.first_index(), 201))


def test_install_replaces_the_log_and_appends_go_on(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    log.append_batch(run(1, 50), None)
    snap = Snapshot(Index(500), Term(4), b"leader state")
    log.install_snapshot(snap)
    assert (log.first_index(), log.last_index(), log.term(Index(500))) == (501, 500, 4)
    log.append_batch(run(501, 10, term=4), None)
    log.close()
    log = opened()
    assert log.snapshot() == snap
    assert [e.index for e in read_all(log)] == list(range(501, 511))


def test_open_finishes_an_interrupted_install(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    """A crash after the new snapshot file was written but before the old segments went:
    the log does not continue the snapshot (other term at its index), so it is dropped."""
    log = opened()
    log.append_batch(run(1, 80), None)
    log.close()
    snapfile.save(tmp_path, Snapshot(Index(60), Term(9), b"x"))
    log = opened()
    assert (log.first_index(), log.last_index()) == (61, 60)
    assert log.term(Index(60)) == 9


def test_a_log_that_continues_the_snapshot_is_kept(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    log.append_batch(run(1, 80), None)
    log.close()
    snapfile.save(tmp_path, Snapshot(Index(60), Term(1), b"x"))
    log = opened()
    assert (log.first_index(), log.last_index()) == (1, 80)


def test_damaged_snapshot_is_refused(opened: Callable[[], SegmentedLog], tmp_path: Path) -> None:
    log = opened()
    log.append_batch(run(1, 20), None)
    log.compact(Snapshot(Index(10), Term(1), b"state" * 100))
    log.close()
    raw = bytearray((tmp_path / "snapshot").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "snapshot").write_bytes(bytes(raw))
    with pytest.raises(Corruption, match="snapshot file is damaged"):
        opened()


def test_a_log_starting_past_the_snapshot_is_refused(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    _fill(log, 200)
    log.compact(Snapshot(Index(150), Term(1), b""))
    log.remove_before(Index(151))
    log.close()
    snapfile.save(tmp_path, Snapshot(Index(5), Term(1), b""))  # an old snapshot put back
    with pytest.raises(Corruption, match="entries in between are missing"):
        opened()


def test_memory_store_compact_install_and_crash() -> None:
    import random

    s = MemoryStore()
    s.append_batch(run(1, 30), None, sync=True)
    s.compact(Snapshot(Index(20), Term(1), b"s"))
    assert (s.first_index(), s.last_index(), s.term(Index(20))) == (21, 30, 1)
    assert s.synced_covers(Index(5), Term(7))  # inside the snapshot
    s.append_batch(run(31, 5), None, sync=False)
    s.crash(random.Random(3))
    assert s.first_index() == 21
    assert 30 <= s.last_index() <= 35
    s.install_snapshot(Snapshot(Index(100), Term(2), b"t"))
    assert (s.first_index(), s.last_index(), s.synced_last_index()) == (101, 100, 100)
    s.append_batch(run(101, 3, term=2), None, sync=True)
    assert [e.index for e in s.entries(Index(101), Index(104), 1 << 20)] == [101, 102, 103]
