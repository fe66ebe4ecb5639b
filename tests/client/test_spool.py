"""Spool: bounded, drops the oldest (even when the oldest are in flight), file replay."""

from __future__ import annotations

from pathlib import Path

from p2plog.client.spool import Spool


def rec(i: int) -> dict[str, object]:
    return {"id": f"id-{i}", "msg": f"r{i}"}


def msgs(s: Spool) -> list[object]:
    return [r["msg"] for r in s.pending()]


def test_full_spool_drops_oldest_queued() -> None:
    s = Spool(3)
    for i in range(5):
        s.put_nowait(rec(i))
    assert msgs(s) == ["r2", "r3", "r4"]
    assert s.take_counters() == (2, 0)


def test_oldest_in_flight_are_evicted_if_the_batch_comes_back() -> None:
    s = Spool(3)
    for i in range(3):
        s.put_nowait(rec(i))
    batch = s.take(2, timeout_s=0)
    for i in range(3, 6):
        s.put_nowait(rec(i))
    assert msgs(s) == ["r3", "r4", "r5"]
    s.give_back(batch)
    assert msgs(s) == ["r3", "r4", "r5"]
    assert s.take_counters() == (3, 0)


def test_in_flight_records_delivered_are_not_counted_as_dropped() -> None:
    s = Spool(2)
    s.put_nowait(rec(0))
    batch = s.take(1, timeout_s=0)
    s.put_nowait(rec(1))
    s.put_nowait(rec(2))  # logically evicts r0, which is being sent
    s.done(batch)
    assert msgs(s) == ["r1", "r2"]
    assert s.take_counters() == (0, 0)


def test_file_replay_and_truncate(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    s = Spool(10, path)
    for i in range(3):
        s.put_nowait(rec(i))
    s.persist(s.pending())
    s.persist(s.pending())  # nothing written twice
    with path.open("a") as f:
        f.write('{"id": "torn')  # a crash mid-append
    again = Spool(10, path)
    assert again.replayed == 3
    assert msgs(again) == ["r0", "r1", "r2"]
    again.done(again.take(10, timeout_s=0))
    assert path.read_bytes() == b""


def test_file_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    s = Spool(100, path, max_file_bytes=60)
    for i in range(5):
        s.put_nowait(rec(i))
    s.persist(s.pending()[:1])
    s.persist(s.pending()[1:])
    assert len(path.read_text().splitlines()) == 1
    assert s.take_counters() == (0, 4)
