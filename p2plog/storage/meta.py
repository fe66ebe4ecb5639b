"""HardState (term, vote) in two alternately written, checksummed, sequence-numbered files.

A write goes to the file *not* holding the newest valid record and is fsync'd before the call
returns, so a crash mid-write leaves the other file intact: recovery takes the valid record with
the highest sequence number. Nothing that recovery would trust over the log (such as a commit
index) is stored here.

Record: ``magic(4) seq(u64) term(u64) vote_len(u16) vote(utf-8) crc32c(u32)``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from crc32c import crc32c

from p2plog.errors import Corruption
from p2plog.raft.types import HardState, NodeId, Term

MAGIC = b"P2HS"
_HEAD = struct.Struct("<4sQQH")
_CRC = struct.Struct("<I")
NAMES = ("meta.1", "meta.2")


def encode(seq: int, hs: HardState) -> bytes:
    vote = (hs.vote or "").encode()
    body = _HEAD.pack(MAGIC, seq, hs.term, len(vote)) + vote
    return body + _CRC.pack(crc32c(body))


def decode(raw: bytes) -> tuple[int, HardState] | None:
    """(seq, hard state), or None if the record is torn or damaged."""
    if len(raw) < _HEAD.size + _CRC.size:
        return None
    magic, seq, term, vote_len = _HEAD.unpack_from(raw)
    end = _HEAD.size + vote_len
    if magic != MAGIC or len(raw) != end + _CRC.size:
        return None
    if _CRC.unpack_from(raw, end)[0] != crc32c(raw[:end]):
        return None
    vote = raw[_HEAD.size : end].decode()
    return seq, HardState(Term(term), NodeId(vote) if vote else None)


class MetaStore:
    """The two meta files of one data directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.seq = 0
        self.slot = 1  # the slot the next write goes to (the first save uses NAMES[1])
        self.state = HardState()
        records = []
        for i, name in enumerate(NAMES):
            path = directory / name
            if not path.exists():
                continue
            rec = decode(path.read_bytes())
            if rec is not None:
                records.append((rec[0], i, rec[1]))
        present = [n for n in NAMES if (directory / n).exists()]
        if present == [NAMES[1]] and not records:
            # Only the first-written slot exists and it is torn: the very first save crashed,
            # so no hard state was ever durable (no vote left before it). Start empty.
            present = []
        if present and not records:
            raise Corruption(
                f"{directory}: both hard-state files ({', '.join(present)}) are damaged; the "
                f"node's term and vote are lost. Do not start this node with a fresh state: "
                f"restore the directory from a backup or remove the node from the cluster",
                path=str(directory / present[0]),
            )
        if records:
            self.seq, newest, self.state = max(records)
            self.slot = 1 - newest

    def save(self, hs: HardState) -> None:
        """Write and fsync ``hs``; it survives any crash once this returns."""
        self.seq += 1
        path = self.dir / NAMES[self.slot]
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = encode(self.seq, hs)
            written = os.write(fd, data)
            assert written == len(data), "short write of a small meta record"
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.dir)
        self.state = hs
        self.slot = 1 - self.slot


def write_all_fsync(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less) and fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def replace_durably(path: Path, data: bytes) -> None:
    """Put ``data`` in place of ``path`` so a crash leaves the old file or the new one, never
    half of one: write ``path.tmp``, fsync it, rename it over ``path``, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all_fsync(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a file creation, rename or removal in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
