"""A node that lost its data must not vote again under its old identity (issue 16).

Raft's safety rests on a voter remembering its vote and its log. A host whose disk was lost,
restarted with the same id and an empty data directory, would grant votes in terms where it
already voted, and count toward commits it no longer holds. So every data directory gets an
**incarnation id** when it is created (``DATA_DIR/identity``, random), which the node states in
its peer hello; every node remembers the incarnation it first saw for each peer
(``DATA_DIR/peers_seen``, trust on first use, as ssh's known_hosts). A *voter* that comes back
with another incarnation is refused at the handshake, with the reason and the fix in the close
frame: its links carry nothing, so it can neither vote nor campaign. Once the operator removes
it (``member remove``), every node forgets its incarnation, and it may be added again under the
same id as a new learner that catches up from the others. A learner never voted, so a new
incarnation of one is taken (and remembered) without fuss.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Container, Iterable
from pathlib import Path

from p2plog.ratelog import RateLimitedLog
from p2plog.storage.meta import replace_durably

log = logging.getLogger("p2plog.node")
_refusals = RateLimitedLog(log, interval_s=30.0, burst=1)  # it redials several times a second

IDENTITY = "identity"
SEEN = "peers_seen"


class Incarnations:
    def __init__(self, data_dir: Path, me: str) -> None:
        """Blocking (file reads and, for a new directory, a write): call from a thread."""
        self.dir = data_dir
        self.me = me
        self._lock = threading.Lock()
        path = data_dir / IDENTITY
        try:
            self.mine = path.read_text().strip()
        except FileNotFoundError:
            self.mine = secrets.token_hex(8)
            replace_durably(path, self.mine.encode() + b"\n")
        try:
            raw = json.loads((data_dir / SEEN).read_text())
            self.seen: dict[str, str] = {str(k): str(v) for k, v in dict(raw).items()}
        except FileNotFoundError:
            self.seen = {}
        except (ValueError, TypeError) as e:
            log.warning("%s: %s/%s unreadable (%s): starting it afresh", me, data_dir, SEEN, e)
            self.seen = {}

    def refusal(self, peer: str, incarnation: str, voters: Container[str]) -> str | None:
        """Why a hello from ``peer`` stating ``incarnation`` must be refused, or None (then
        ``remember`` it). Short: it goes in a websocket close frame (at most 123 bytes)."""
        known = self.seen.get(peer)
        if not incarnation or known is None or known == incarnation or peer not in voters:
            return None
        _refusals.log(
            logging.ERROR,
            "%s: refused %s: it is a voter whose data directory changed (incarnation %s, was "
            "%s): its votes and log are gone. Remove it (`p2plog member remove %s`), then add "
            "it again (`p2plog member add %s HOST:PORT`)",
            self.me,
            peer,
            incarnation,
            known,
            peer,
            peer,
        )
        return f"lost data: run `p2plog member remove {peer}`, then `member add {peer} ADDR`"[:120]

    def needs_saving(self, peer: str, incarnation: str) -> bool:
        return bool(incarnation) and self.seen.get(peer) != incarnation

    def remember(self, peer: str, incarnation: str) -> None:
        """Blocking (a small file, written durably): call from a thread."""
        with self._lock:
            self.seen[peer] = incarnation
            self._write()

    def forget(self, gone: Iterable[str]) -> bool:
        """Peers no longer members: a new incarnation of them is welcome. True if any was
        known (the caller then saves, with ``save``)."""
        drop = [p for p in gone if p in self.seen]
        for p in drop:
            del self.seen[p]
        return bool(drop)

    def save(self) -> None:
        """Blocking: call from a thread. Handshakes of several peers save at once: the lock
        keeps their writes of one file apart (each writes the whole map as it is then)."""
        with self._lock:
            self._write()

    def _write(self) -> None:
        replace_durably(self.dir / SEEN, json.dumps(self.seen, sort_keys=True).encode())
