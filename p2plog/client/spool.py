"""The LogHandler's spool: a bounded, thread-safe FIFO of records waiting to be sent,
optionally mirrored to an append-only JSON-lines file so they survive a restart.

Invariants:

- ``put_nowait`` never blocks on I/O or on the sender: it takes a lock held only for deque
  operations; when the spool is full the OLDEST record is dropped and counted;
- records taken by the sender are "in flight" until ``done`` (acked or refused) or
  ``give_back`` (to be sent again, at the front, same ids);
- the file is written only by the sender thread (``persist``), holds at most
  ``max_file_bytes``, is replayed on start and truncated once every record is acked (a crash
  between the ack and the truncation replays records the cluster already has; they dedup).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

Rec = dict[str, Any]


class Spool:
    def __init__(
        self, max_records: int, path: Path | None = None, max_file_bytes: int = 64 << 20
    ) -> None:
        assert max_records > 0
        self.max_records = max_records
        self.path = path
        self.max_file_bytes = max_file_bytes
        self._cond = threading.Condition(threading.Lock())
        self._q: deque[Rec] = deque()
        self._inflight: list[Rec] = []  # taken by the sender, not yet done or given back
        # The oldest records may be in flight when the spool overflows: this many of them are
        # discarded if the batch comes back unsent (they were the oldest, so they go first).
        self._evict = 0
        self._in_file: set[str] = set()
        self._file_bytes = 0
        self.dropped = 0  # since the last ``take_counters``
        self.file_full = 0
        self.file_error: str | None = None
        self.replayed = 0
        if path is not None:
            self._replay(path)

    def __len__(self) -> int:
        with self._cond:
            return len(self._q) + len(self._inflight) - self._evict

    def put_nowait(self, rec: Rec) -> None:
        with self._cond:
            if len(self._q) + len(self._inflight) - self._evict >= self.max_records:
                if self._evict < len(self._inflight):
                    self._evict += 1  # counted as dropped if the batch comes back
                else:
                    self._q.popleft()
                    self.dropped += 1
            self._q.append(rec)
            self._cond.notify_all()

    def take(self, max_n: int, timeout_s: float) -> list[Rec]:
        """Up to ``max_n`` records, waiting up to ``timeout_s`` for the first one."""
        with self._cond:
            if not self._q:
                self._cond.wait(timeout_s)
            n = min(max_n, len(self._q))
            batch = [self._q.popleft() for _ in range(n)]
            self._inflight = batch
            return batch

    def done(self, batch: list[Rec]) -> None:
        with self._cond:
            assert batch is self._inflight, "one batch in flight at a time"
            self._inflight = []
            self._evict = 0  # delivered after all
            for r in batch:
                self._in_file.discard(str(r.get("id")))
            if not self._q and self._file_bytes:
                self._truncate()
            self._cond.notify_all()

    def give_back(self, batch: list[Rec]) -> None:
        with self._cond:
            assert batch is self._inflight, "one batch in flight at a time"
            self.dropped += self._evict
            keep = batch[self._evict :]
            self._inflight = []
            self._evict = 0
            self._q.extendleft(reversed(keep))
            while len(self._q) > self.max_records:
                self._q.popleft()
                self.dropped += 1
            self._cond.notify_all()

    def wait_empty(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._q and not self._inflight, timeout_s)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def take_counters(self) -> tuple[int, int]:
        with self._cond:
            out = (self.dropped, self.file_full)
            self.dropped = self.file_full = 0
            return out

    def pending(self) -> list[Rec]:
        """Every record not yet acked, oldest first (the batch in flight included)."""
        with self._cond:
            return [*self._inflight[self._evict :], *self._q]

    # ------------------------------------------------------------------ the file

    def persist(self, batch: list[Rec]) -> None:
        """Append the records of ``batch`` not yet in the file (sender thread only)."""
        if self.path is None or self.file_error is not None:
            return
        with self._cond:
            new = [r for r in batch if str(r.get("id")) not in self._in_file]
        if not new:
            return
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in new).encode()
        if self._file_bytes + len(lines) > self.max_file_bytes:
            with self._cond:
                self.file_full += len(new)
            return
        try:
            with open(self.path, "ab") as f:
                f.write(lines)
        except OSError as e:
            self.file_error = f"{self.path}: {e.strerror or e}"
            return
        with self._cond:
            self._file_bytes += len(lines)
            self._in_file.update(str(r.get("id")) for r in new)

    def _truncate(self) -> None:
        assert self.path is not None
        try:
            with open(self.path, "wb"):
                pass
        except OSError as e:
            self.file_error = f"{self.path}: {e.strerror or e}"
        self._file_bytes = 0
        self._in_file.clear()

    def _replay(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            self.file_error = f"{path}: {e.strerror or e}"
            return
        self._file_bytes = len(data)
        for line in data.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-append
            if isinstance(rec, dict) and "id" in rec:
                self.put_nowait(rec)
                self._in_file.add(str(rec["id"]))
                self.replayed += 1


def now_hms() -> str:
    return time.strftime("%H:%M:%S", time.localtime())
