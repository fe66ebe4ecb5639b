"""The disk store keeps a log's configuration entries at hand (``storage.conffile``): read back
on open without a scan, dropped when a truncation or a crash took them out of the log, rebuilt
from the log when the file is missing; and the snapshot file carries the configuration at its
index (version 2; a version 1 file is still read).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from crc32c import crc32c

from p2plog.errors import Corruption
from p2plog.raft.membership import encode_conf
from p2plog.raft.types import ConfState, Entry, Index, NodeId, Snapshot, Term
from p2plog.storage import conffile, snapfile
from p2plog.storage.memory import MemoryStore
from p2plog.storage.segmented_log import SegmentedLog

from .logdata import run

N = NodeId


def _conf(*voters: str, learners: tuple[str, ...] = ()) -> ConfState:
    members = (*voters, *learners)
    return ConfState(
        tuple(N(v) for v in voters),
        tuple(N(v) for v in learners),
        tuple((N(m), f"h:{m}") for m in sorted(members)),
    )


def _c(term: int, index: int, conf: ConfState) -> Entry:
    return Entry(Term(term), Index(index), encode_conf(conf))


C1 = _conf("n1", "n2", "n3", learners=("n4",))
C2 = _conf("n1", "n2", "n3", "n4")


def test_configuration_entries_are_read_back_on_open(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    log.append_batch(run(1, 30), None)  # several segments: sealed ones are not scanned
    log.append_batch([_c(1, 31, C1), *run(32, 30)], None)
    log.append_batch([_c(1, 62, C2)], None)
    assert [e.index for e in log.conf_entries()] == [31, 62]
    log.close()
    log = opened()
    assert [e.index for e in log.conf_entries()] == [31, 62]
    assert (tmp_path / conffile.NAME).exists()


def test_truncated_or_lost_configuration_entries_are_dropped(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    log.append_batch([*run(1, 5), _c(1, 6, C1), *run(7, 3)], None)
    log.append_batch(run(6, 4, term=2), None)  # a new leader truncates from 6
    assert log.conf_entries() == []
    log.close()
    # The file still names (6, term 1); the log holds (6, term 2): it is not in force.
    assert [e.index for e in conffile.load(tmp_path) or []] == [6]
    log = opened()
    assert log.conf_entries() == []
    # A crash that kept the file's entry but not the frames (the file is written first).
    conffile.save(tmp_path, [_c(2, 50, C2)])
    log.close()
    log = opened()
    assert log.conf_entries() == []


def test_a_missing_file_is_rebuilt_from_the_log(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    log.append_batch([*run(1, 20), _c(1, 21, C1), *run(22, 20), _c(1, 42, C2)], None)
    log.close()
    (tmp_path / conffile.NAME).unlink()  # as after a restore, or a directory from before
    log = opened()
    assert [e.index for e in log.conf_entries()] == [21, 42]
    assert [e.index for e in conffile.load(tmp_path) or []] == [21, 42]


def test_a_damaged_file_is_refused_with_the_fix(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    log.append_batch([*run(1, 3), _c(1, 4, C1)], None)
    log.close()
    raw = bytearray((tmp_path / conffile.NAME).read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / conffile.NAME).write_bytes(bytes(raw))
    with pytest.raises(Corruption, match="remove it while the node is stopped"):
        opened()


def test_compaction_folds_configurations_into_the_snapshot(
    opened: Callable[[], SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    log.append_batch([*run(1, 5), _c(1, 6, C1), *run(7, 20), _c(1, 27, C2)], None)
    log.compact(Snapshot(Index(10), Term(1), b"state", C1))
    assert [e.index for e in log.conf_entries()] == [27]
    log.close()
    log = opened()
    assert log.snapshot().conf == C1
    assert [e.index for e in log.conf_entries()] == [27]


def test_memory_store_lists_its_configuration_entries() -> None:
    s = MemoryStore()
    s.append_batch([*run(1, 3), _c(1, 4, C1), *run(5, 2)], None, sync=True)
    assert [e.index for e in s.conf_entries()] == [4]


def test_snapshot_file_carries_the_configuration_and_reads_version_1(tmp_path: Path) -> None:
    snap = Snapshot(Index(7), Term(2), b"state", C2)
    snapfile.save(tmp_path, snap)
    assert snapfile.load(tmp_path) == snap
    snapfile.save(tmp_path, Snapshot(Index(7), Term(2), b"state"))
    assert snapfile.load(tmp_path).conf is None
    # A version 1 file (before membership changes): no configuration field.
    data = b"old state"
    crc = crc32c(data, crc32c(struct.pack("<QQQ", 9, 3, len(data))))
    v1 = struct.pack("<8sQQQI", b"P2SNAP01", 9, 3, len(data), crc) + data
    (tmp_path / snapfile.NAME).write_bytes(v1)
    assert snapfile.load(tmp_path) == Snapshot(Index(9), Term(3), data)
    raw = bytearray(snapfile.encode(snap))
    raw[60] ^= 1  # inside the configuration
    (tmp_path / snapfile.NAME).write_bytes(bytes(raw))
    with pytest.raises(Corruption):
        snapfile.load(tmp_path)
