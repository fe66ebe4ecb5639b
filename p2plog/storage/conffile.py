"""The configuration entries of a node's log, kept beside it in ``DATA_DIR/confs``.

The node's configuration is the newest configuration entry in its log, committed or not
(``raft.membership``), so a starting node needs them all without reading the log: a sealed
segment is opened from its index, never scanned. The file is ``magic(8)`` followed by the
entries as log frames (``frame.py``: each checksummed). It is rewritten whole (temp file, fsync,
rename, directory fsync) *before* the frames of a batch holding a configuration entry are
written, so a configuration entry on disk is always in the file; the file may name entries
that a crash kept out of the log or that a truncation removed, and ``reconcile`` drops those
by index and term (one leader per term, so an index and term name one entry). A directory
without the file (an older version, a restored backup) has it rebuilt by one scan of the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from p2plog.errors import Corruption
from p2plog.raft.membership import is_conf
from p2plog.raft.types import Entry, Index, Term
from p2plog.storage import frame
from p2plog.storage.meta import replace_durably

NAME = "confs"
MAGIC = b"P2CONF01"


def load(data_dir: Path) -> list[Entry] | None:
    """The entries the file lists, or None when there is no file."""
    path = data_dir / NAME
    (data_dir / (NAME + ".tmp")).unlink(missing_ok=True)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if raw[:8] != MAGIC:
        raise _damaged(path)
    out, off = [], 8
    while off < len(raw):
        status, e, off = frame.decode(raw, off)
        if status is not frame.Status.OK or e is None or not is_conf(e.data):
            raise _damaged(path)
        out.append(e)
    return out


def _damaged(path: Path) -> Corruption:
    return Corruption(
        f"{path}: the configuration file is damaged; remove it while the node is stopped and "
        f"it is rebuilt from the log when the node starts",
        path=str(path),
        offset=0,
    )


def save(data_dir: Path, entries: Iterable[Entry]) -> None:
    replace_durably(data_dir / NAME, MAGIC + frame.encode_batch(entries))


def reconcile(
    listed: list[Entry], first: Index, last: Index, term_at: Callable[[Index], Term]
) -> list[Entry]:
    """The listed entries the log holds: past its snapshot, at or below its last index, and
    of the term the log has there."""
    return [e for e in listed if first <= e.index <= last and term_at(e.index) == e.term]


def scan(entries_from: Callable[[Index], list[Entry]], first: Index, last: Index) -> list[Entry]:
    """Every configuration entry of the log, read in pieces (``entries_from(lo)``)."""
    out: list[Entry] = []
    lo = first
    while lo <= last:
        batch = entries_from(lo)
        out.extend(e for e in batch if is_conf(e.data))
        lo = Index(batch[-1].index + 1)
    return out
