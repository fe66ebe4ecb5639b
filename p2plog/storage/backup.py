"""Backup and restore of a node's log, read-only from the live data directory.

``backup(data_dir, dest, index)`` copies what a node holds up to an applied index: the snapshot
file (if any), every segment up to the one holding ``index`` (that one cut after the frame of
``index``), and writes ``manifest.json`` with each file's size and SHA-256 and a checksum over
the manifest itself. It never opens the log for writing and takes no lock: the node keeps
running. That is consistent because of how the log changes: frames at or below an applied index
never change (a truncation only cuts an uncommitted suffix), a sealed segment is never written
again, the snapshot file is replaced by a rename (an open descriptor keeps reading the old
one), and a segment that retention removes meanwhile stays readable through the descriptor
opened before. The descriptors are opened snapshot first, then segments; if a segment is gone
before it could be opened, or the segments do not continue the snapshot, it starts over.

The copy is built in ``dest.partial`` and renamed to ``dest`` at the end, so a backup cut short
never looks complete. ``restore(src, data_dir)`` checks the manifest and every file, then copies
into an empty data directory (fsync'd); the node starts with no vote and the term of its log.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2plog.errors import P2PLogError
from p2plog.raft.types import NO_SNAPSHOT, Snapshot
from p2plog.storage import snapfile
from p2plog.storage.meta import fsync_dir
from p2plog.storage.segment import HEADER_SIZE, ScanEnd, decode_header, iter_frames
from p2plog.storage.verify import Report, verify

MANIFEST = "manifest.json"
FORMAT = "p2plog-backup"
VERSION = 1
CHUNK = 4 << 20
ATTEMPTS = 5

Progress = Callable[[int, int], None]  # (bytes copied, bytes in all)


class BackupError(P2PLogError):
    """A backup could not be made, or a backup directory does not check out."""


@dataclass(frozen=True, slots=True)
class _Source:
    name: str
    fd: int
    first: int
    size: int  # bytes to copy


def backup(
    data_dir: Path,
    dest: Path,
    index: int,
    *,
    meta: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Copy ``data_dir``'s log up to ``index`` (applied on that node) into ``dest``; returns
    the manifest. ``meta`` goes into the manifest as is (node, record index, cluster)."""
    if dest.exists():
        raise BackupError(f"{dest} exists; back up into a new directory")
    work = dest.with_name(dest.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    for _ in range(ATTEMPTS):
        picked = _open_sources(data_dir, index)
        if picked is not None:
            break
    else:
        raise BackupError(f"{data_dir}: the log kept changing under the backup; try again")
    snap, raw_snap, sources = picked
    try:
        files = _copy(work, raw_snap, sources, progress)
    finally:
        for s in sources:
            os.close(s.fd)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "index": index,
        "snapshot": {"index": snap.index, "term": snap.term},
        "first_index": sources[0].first if sources else snap.index + 1,
        "files": files,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(meta or {}),
    }
    manifest["checksum"] = _manifest_sum(manifest)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _fsync_tree(work)
    os.replace(work, dest)
    fsync_dir(dest.parent)
    return manifest


def _open_sources(
    data_dir: Path, index: int
) -> tuple[Snapshot, bytes | None, list[_Source]] | None:
    """The snapshot and the segments to copy, opened; None when the log moved meanwhile."""
    try:
        raw_snap: bytes | None = (data_dir / snapfile.NAME).read_bytes()
    except FileNotFoundError:
        raw_snap = None
    snap = NO_SNAPSHOT if raw_snap is None else snapfile.decode(raw_snap, str(data_dir))
    if snap.index > index:
        raise BackupError(f"the snapshot at {snap.index} is past the backup index {index}")
    log_dir = data_dir / "log"
    paths = sorted(p for p in log_dir.iterdir() if p.suffix == ".seg")
    fds: list[tuple[Path, int, int]] = []
    try:
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            head = decode_header(os.pread(fd, HEADER_SIZE, 0))
            fds.append((p, fd, head[0] if head else -1))
    except FileNotFoundError:
        _close(fds)
        return None
    if not fds or fds[0][2] > snap.index + 1 or any(f < 0 for _, _, f in fds):
        _close(fds)
        return None
    sources, last = _cut(fds, index)
    if last != index:  # (the log was being replaced meanwhile: a prefix was listed)
        for src in sources:
            os.close(src.fd)
        return None
    return snap, raw_snap, sources


def _cut(fds: list[tuple[Path, int, int]], index: int) -> tuple[list[_Source], int]:
    """The segments holding entries up to ``index``, the last one cut after its frame; and
    the last index they hold."""
    out: list[_Source] = []
    last = fds[0][2] - 1
    for k, (path, fd, first) in enumerate(fds):
        nxt = fds[k + 1][2] if k + 1 < len(fds) else None
        if first > index:
            os.close(fd)
            continue
        size = os.fstat(fd).st_size
        if nxt is None or nxt - 1 > index:
            size, last = _end_of(fd, first, size, index)
        else:
            last = nxt - 1
        out.append(_Source(path.name, fd, first, size))
    return out, last


def _end_of(fd: int, first: int, size: int, index: int) -> tuple[int, int]:
    """The end of the frame of ``index`` (or of the last before it) and that frame's index."""
    end, last = HEADER_SIZE, first - 1
    for item in iter_frames(fd, HEADER_SIZE, size, first):
        if isinstance(item, ScanEnd):
            break
        entry, _, frame_end = item
        if entry.index > index:
            break
        end, last = frame_end, entry.index
    return end, last


def _close(fds: list[tuple[Path, int, int]]) -> None:
    for _, fd, _ in fds:
        os.close(fd)


def _copy(
    work: Path, raw_snap: bytes | None, sources: list[_Source], progress: Progress | None
) -> list[dict[str, Any]]:
    (work / "log").mkdir(parents=True)
    files: list[dict[str, Any]] = []
    if raw_snap is not None:
        (work / snapfile.NAME).write_bytes(raw_snap)
        files.append(_entry(snapfile.NAME, len(raw_snap), hashlib.sha256(raw_snap).hexdigest()))
    total, done = sum(s.size for s in sources), 0
    for s in sources:
        h = hashlib.sha256()
        with open(work / "log" / s.name, "wb") as out:
            pos = 0
            while pos < s.size:
                chunk = os.pread(s.fd, min(CHUNK, s.size - pos), pos)
                if not chunk:
                    raise BackupError(f"{s.name} ended at {pos} bytes, expected {s.size}")
                out.write(chunk)
                h.update(chunk)
                pos += len(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        files.append(_entry(f"log/{s.name}", s.size, h.hexdigest()))
    return files


def _entry(path: str, size: int, sha: str) -> dict[str, Any]:
    return {"path": path, "bytes": size, "sha256": sha}


def _manifest_sum(m: dict[str, Any]) -> str:
    body = {k: v for k, v in m.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _fsync_tree(root: Path) -> None:
    for p in [*root.rglob("*")]:
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(root / "log")
    fsync_dir(root)


# ------------------------------------------------------------------ checking and restoring


def read_manifest(src: Path) -> dict[str, Any]:
    try:
        m = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{src}: no {MANIFEST}; not a p2plog backup") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BackupError(f"{src}/{MANIFEST}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("version") != VERSION:
        raise BackupError(f"{src}/{MANIFEST}: not a version {VERSION} p2plog backup manifest")
    if m.get("checksum") != _manifest_sum(m):
        raise BackupError(f"{src}/{MANIFEST}: its checksum does not match: it was changed")
    return m


def check_backup(src: Path, *, progress: Progress | None = None) -> tuple[dict[str, Any], Report]:
    """The manifest and the log's verify report, once every file the manifest names has its
    size and SHA-256 and the log verifies up to the manifest's index; ``BackupError`` names
    the first thing that does not."""
    m = read_manifest(src)
    files = m["files"]
    total, done = sum(int(f["bytes"]) for f in files), 0
    for f in files:
        path = src / f["path"]
        if not path.resolve().is_relative_to(src.resolve()):
            raise BackupError(f"{src}/{MANIFEST}: names a file outside the backup: {f['path']}")
        h = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except FileNotFoundError:
            raise BackupError(f"{path}: missing from the backup") from None
        if size != f["bytes"] or h.hexdigest() != f["sha256"]:
            raise BackupError(f"{path}: size or SHA-256 differs from the manifest: damaged")
    rep = verify(src)  # frames, segment continuity, the snapshot file
    if rep.problems:
        raise BackupError(f"{src}: {rep.problems[0]}")
    last = rep.last_index if rep.segments else m["snapshot"]["index"]  # (nothing past it)
    if last != m["index"]:
        raise BackupError(f"{src}: the log ends at {last}, but the manifest says {m['index']}")
    return m, rep


def restore(src: Path, data_dir: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Check the backup in ``src``, then copy it into ``data_dir`` (absent or empty)."""
    m, _ = check_backup(src, progress=progress)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty; restore into a new data directory")
    (data_dir / "log").mkdir(parents=True, exist_ok=True)
    for f in m["files"]:
        shutil.copyfile(src / f["path"], data_dir / f["path"])
    _fsync_tree(data_dir)
    return m
