"""An InstallSnapshot on the peer link: cut into ``snap`` chunks, put back together.

A snapshot (``replica.snapshot``: a node's dedup window and event-time buffer) is larger than
a peer frame may be, so the sender cuts it into ``SNAPSHOT_CHUNK`` pieces, in order on its one
link. The receiver keeps at most one snapshot under assembly per link: a chunk that does not
continue it (another snapshot, a gap after a dropped chunk) starts over or is dropped, and the
leader sends the whole snapshot again when no answer came (``raft.leader``). Nothing is
delivered to Raft until every byte is there; what the bytes mean is checked by the replica
(``replica.snapshot.decode``) before anything is written.
"""

from __future__ import annotations

from p2plog.raft.membership import decode_conf, encode_conf
from p2plog.raft.messages import InstallSnapshot
from p2plog.raft.types import Index, NodeId, Snapshot, Term
from p2plog.wire.envelope import encode
from p2plog.wire.peer import MAX_SNAPSHOT, SNAPSHOT_CHUNK, Snap


def chunks(m: InstallSnapshot) -> list[bytes]:
    """The frames that carry ``m``; [] when the snapshot is too large to send at all."""
    s = m.snapshot
    total = len(s.data)
    if total > MAX_SNAPSHOT:
        return []
    base = {"src": m.src, "dst": m.dst, "term": m.term, "i": s.index, "st": s.term}
    conf = encode_conf(s.conf) if s.conf is not None else b""
    out = []
    for off in range(0, max(total, 1), SNAPSHOT_CHUNK):
        part = s.data[off : off + SNAPSHOT_CHUNK]
        extra = {"conf": conf} if off == 0 and conf else {}
        out.append(encode("snap", {**base, "off": off, "total": total, "data": part, **extra}))
    return out


class Assembly:
    """The snapshot one link is receiving (bounded by ``MAX_SNAPSHOT``)."""

    __slots__ = ("_conf", "_head", "_parts", "_size")

    def __init__(self) -> None:
        self._head: tuple[int, int, int, int] | None = None  # term, index, snap term, total
        self._parts: list[bytes] = []
        self._size = 0
        self._conf = b""

    def add(self, c: Snap) -> InstallSnapshot | None:
        """Take one chunk; the whole message once its last chunk came."""
        head = (c.term, c.i, c.st, c.total)
        if c.off == 0:
            self._head, self._parts, self._size, self._conf = head, [], 0, c.conf
        elif head != self._head or c.off != self._size:
            self._head, self._parts, self._size = None, [], 0  # a gap: wait for a resend
            return None
        self._parts.append(c.data)
        self._size += len(c.data)
        if self._size < c.total:
            return None
        data = b"".join(self._parts)
        self._head, self._parts, self._size = None, [], 0
        conf = decode_conf(self._conf) if self._conf else None
        snap = Snapshot(Index(c.i), Term(c.st), data, conf)
        return InstallSnapshot(NodeId(c.src), NodeId(c.dst), Term(c.term), snap)
