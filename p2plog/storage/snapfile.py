"""The node's snapshot on disk: one file, replaced atomically, checksummed.

``snapshot`` in the data directory holds ``magic(8) index(u64) term(u64) len(u64) crc32c(u32)``
then ``len`` bytes of replica state (``replica.snapshot``); the CRC covers index, term, length
and the state, so a damaged header is refused, never taken for another snapshot. A new one is
written to ``snapshot.tmp``, fsync'd, renamed over the old one and the directory fsync'd (the
rename is atomic, so a crash leaves the old snapshot or the new one, never half of one). Only
then may the log drop what it stands in for. A damaged file is refused (``Corruption``): it is
the only copy of what the cut segments held.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from crc32c import crc32c

from p2plog.errors import Corruption
from p2plog.raft.types import NO_SNAPSHOT, Index, Snapshot, Term
from p2plog.storage.meta import fsync_dir, write_all_fsync

NAME = "snapshot"
MAGIC = b"P2SNAP01"
_HEAD = struct.Struct("<8sQQQI")
_META = struct.Struct("<QQQ")


def _crc(index: int, term: int, data: bytes) -> int:
    return crc32c(data, crc32c(_META.pack(index, term, len(data))))


def encode(s: Snapshot) -> bytes:
    return _HEAD.pack(MAGIC, s.index, s.term, len(s.data), _crc(s.index, s.term, s.data)) + s.data


def decode(raw: bytes, where: str) -> Snapshot:
    if len(raw) < _HEAD.size:
        raise Corruption(
            f"{where}: a snapshot file of {len(raw)} bytes is shorter than its header",
            path=where,
            offset=0,
        )
    magic, index, term, n, crc = _HEAD.unpack_from(raw)
    data = raw[_HEAD.size :]
    if magic != MAGIC or len(data) != n or _crc(index, term, data) != crc:
        raise Corruption(
            f"{where}: the snapshot file is damaged (magic, length or checksum); it is the only "
            f"copy of the state the log was cut behind, so this node cannot start: replace it "
            f"by a new node (its vote and acks went with the damage; see README, Backup)",
            path=where,
            offset=0,
        )
    return Snapshot(Index(index), Term(term), data)


def load(data_dir: Path, *, tidy: bool = True) -> Snapshot:
    """The snapshot in ``data_dir`` (``NO_SNAPSHOT`` when there is none). ``tidy`` (the node
    opening its own directory) removes a ``snapshot.tmp`` a crash left; a reader that is not
    the node (``verify``) passes False, since the node may be writing it."""
    path = data_dir / NAME
    if tidy:
        (data_dir / (NAME + ".tmp")).unlink(missing_ok=True)  # a write that never finished
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return NO_SNAPSHOT
    return decode(raw, str(path))


def save(data_dir: Path, s: Snapshot) -> int:
    """Write ``s`` durably in place of the old snapshot; returns the bytes written."""
    tmp = data_dir / (NAME + ".tmp")
    raw = encode(s)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all_fsync(fd, raw)
    finally:
        os.close(fd)
    os.replace(tmp, data_dir / NAME)
    fsync_dir(data_dir)
    return len(raw)
