"""Backup and restore (``storage.backup``): a copy up to an index taken from a log that stays
open and keeps growing, restored into an empty directory, equal to the source up to that
index; a damaged file or a changed manifest is found; nothing is overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2plog.raft.types import Index, Snapshot, Term
from p2plog.storage.backup import MANIFEST, BackupError, backup, check_backup, restore
from p2plog.storage.segmented_log import SegmentedLog

from .logdata import read_all, run

SEG = 4096


def _fill(log: SegmentedLog, start: int, n: int) -> None:
    for i in range(start, start + n, 10):
        log.append_batch(run(i, min(10, start + n - i)), None)


def test_backup_of_a_live_log_restores_equal_up_to_its_index(tmp_path: Path) -> None:
    src = SegmentedLog(tmp_path / "node", segment_bytes=SEG)
    _fill(src, 1, 300)
    src.compact(Snapshot(Index(120), Term(1), b"state at 120"))
    src.apply_retention(below=Index(121), max_bytes=0)
    seen: list[tuple[int, int]] = []
    m = backup(
        tmp_path / "node",
        tmp_path / "bk",
        250,
        meta={"node": "n1"},
        progress=lambda d, t: seen.append((d, t)),
    )
    _fill(src, 301, 50)  # the node goes on writing
    assert m["index"] == 250
    assert m["snapshot"] == {"index": 120, "term": 1}
    assert m["node"] == "n1"
    assert seen
    assert seen[-1][0] == seen[-1][1]
    assert not (tmp_path / "bk.partial").exists()
    check_backup(tmp_path / "bk")
    restore(tmp_path / "bk", tmp_path / "new")
    got = SegmentedLog(tmp_path / "new", segment_bytes=SEG)
    assert got.snapshot() == src.snapshot()
    assert got.last_index() == 250
    want = [e for e in read_all(src) if got.first_index() <= e.index <= 250]
    assert read_all(got) == want
    got.close()
    src.close()


def test_damage_and_a_changed_manifest_are_found(tmp_path: Path) -> None:
    src = SegmentedLog(tmp_path / "node", segment_bytes=SEG)
    _fill(src, 1, 100)
    backup(tmp_path / "node", tmp_path / "bk", 100)
    src.close()
    m = json.loads((tmp_path / "bk" / MANIFEST).read_text())
    seg = tmp_path / "bk" / m["files"][0]["path"]
    raw = bytearray(seg.read_bytes())
    raw[100] ^= 1
    seg.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="SHA-256 differs"):
        check_backup(tmp_path / "bk")
    m["index"] = 5
    (tmp_path / "bk" / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BackupError, match="checksum does not match"):
        check_backup(tmp_path / "bk")


def test_nothing_is_overwritten(tmp_path: Path) -> None:
    src = SegmentedLog(tmp_path / "node", segment_bytes=SEG)
    _fill(src, 1, 20)
    backup(tmp_path / "node", tmp_path / "bk", 20)
    with pytest.raises(BackupError, match="exists"):
        backup(tmp_path / "node", tmp_path / "bk", 20)
    src.close()
    with pytest.raises(BackupError, match="not empty"):
        restore(tmp_path / "bk", tmp_path / "node")
    with pytest.raises(BackupError, match="not a p2plog backup"):
        check_backup(tmp_path / "node")


def test_a_log_holding_nothing_past_its_snapshot_backs_up_and_restores(tmp_path: Path) -> None:
    src = SegmentedLog(tmp_path / "node", segment_bytes=SEG)
    src.install_snapshot(Snapshot(Index(40), Term(3), b"leader state"))
    m = backup(tmp_path / "node", tmp_path / "bk", 40)
    src.close()
    assert [f["path"] for f in m["files"]] == ["snapshot"]
    check_backup(tmp_path / "bk")
    restore(tmp_path / "bk", tmp_path / "new")
    got = SegmentedLog(tmp_path / "new", segment_bytes=SEG)
    assert (got.snapshot().index, got.first_index(), got.last_index()) == (40, 41, 40)
    got.close()
