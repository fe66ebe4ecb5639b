"""The node's snapshot on disk: one file, replaced atomically, checksummed.

``snapshot`` in the data directory holds ``magic(8) index(u64) term(u64) conf_len(u64)
len(u64) crc32c(u32)``, then ``conf_len`` bytes of the configuration at ``index``
(``membership.encode_conf``; none: the bootstrap one) and ``len`` bytes of replica state
(``replica.snapshot``); the CRC covers everything after the magic, so a damaged header is
refused, never taken for another snapshot. (Version 01 files, before membership changes, have
no configuration field and are still read.) A new one is
written to ``snapshot.tmp``, fsync'd, renamed over the old one and the directory fsync'd (the
rename is atomic, so a crash leaves the old snapshot or the new one, never half of one). Only
then may the log drop what it stands in for. A damaged file is refused (``Corruption``): it is
the only copy of what the cut segments held.
"""

from __future__ import annotations

import struct
from pathlib import Path

from crc32c import crc32c

from p2plog.errors import Corruption
from p2plog.raft.membership import decode_conf, encode_conf
from p2plog.raft.types import NO_SNAPSHOT, Index, Snapshot, Term
from p2plog.storage.meta import replace_durably

NAME = "snapshot"
MAGIC_V1 = b"P2SNAP01"
MAGIC = b"P2SNAP02"
_HEAD_V1 = struct.Struct("<8sQQQI")
_META_V1 = struct.Struct("<QQQ")
_HEAD = struct.Struct("<8sQQQQI")
_META = struct.Struct("<QQQQ")


def _crc(index: int, term: int, conf: bytes, data: bytes) -> int:
    crc = crc32c(conf, crc32c(_META.pack(index, term, len(conf), len(data))))
    return crc32c(data, crc)


def encode(s: Snapshot) -> bytes:
    conf = encode_conf(s.conf) if s.conf is not None else b""
    crc = _crc(s.index, s.term, conf, s.data)
    return _HEAD.pack(MAGIC, s.index, s.term, len(conf), len(s.data), crc) + conf + s.data


def _decode_v1(raw: bytes) -> Snapshot | None:
    _, index, term, n, crc = _HEAD_V1.unpack_from(raw)
    data = raw[_HEAD_V1.size :]
    if len(data) != n or crc32c(data, crc32c(_META_V1.pack(index, term, n))) != crc:
        return None
    return Snapshot(Index(index), Term(term), data)


def _decode_v2(raw: bytes) -> Snapshot | None:
    if len(raw) < _HEAD.size:
        return None
    _, index, term, nc, n, crc = _HEAD.unpack_from(raw)
    conf, data = raw[_HEAD.size : _HEAD.size + nc], raw[_HEAD.size + nc :]
    if len(conf) != nc or len(data) != n or _crc(index, term, conf, data) != crc:
        return None
    try:
        cs = decode_conf(conf) if conf else None
    except ValueError:
        return None
    return Snapshot(Index(index), Term(term), data, cs)


def decode(raw: bytes, where: str) -> Snapshot:
    if len(raw) < _HEAD.size:
        raise Corruption(
            f"{where}: a snapshot file of {len(raw)} bytes is shorter than its header",
            path=where,
            offset=0,
        )
    magic = raw[:8]
    snap = _decode_v2(raw) if magic == MAGIC else _decode_v1(raw) if magic == MAGIC_V1 else None
    if snap is None:
        raise Corruption(
            f"{where}: the snapshot file is damaged (magic, length or checksum); it is the only "
            f"copy of the state the log was cut behind, so this node cannot start: replace it "
            f"by a new node (its vote and acks went with the damage; see README, Backup)",
            path=where,
            offset=0,
        )
    return snap


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
    raw = encode(s)
    replace_durably(data_dir / NAME, raw)
    return len(raw)
