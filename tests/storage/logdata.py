"""Entries and reads shared by the storage tests: 100-byte payloads that say their own index
and term, so a misplaced or stale entry is visible in an assertion message."""

from __future__ import annotations

from pathlib import Path

from p2plog.raft.types import Entry, Index, Snapshot, Term
from p2plog.storage.segmented_log import SegmentedLog

PAYLOAD = 100
SEG = 4096  # the segment size the tests open logs with (``opened``)


def ent(term: int, index: int, data: bytes | None = None) -> Entry:
    if data is None:
        data = f"{index}:{term}:".encode().ljust(PAYLOAD, b".")
    return Entry(Term(term), Index(index), data)


def run(start: int, n: int, term: int = 1) -> list[Entry]:
    return [ent(term, i) for i in range(start, start + n)]


def read_all(log: SegmentedLog) -> list[Entry]:
    return log.entries(log.first_index(), Index(log.last_index() + 1), 1 << 40)


def seg_files(d: Path) -> list[Path]:
    return sorted((d / "log").glob("*.seg"))


def keep_snapshot(log: SegmentedLog, below: int) -> None:
    """Write a snapshot at ``below - 1`` (at most the last index), as the node does before its
    retention cuts: a log that starts past index 1 needs one to open again."""
    at = min(below - 1, log.last_index())
    if at > log.snapshot().index and at >= log.first_index() - 1:
        log.compact(Snapshot(Index(at), log.term(Index(at)), b""))
