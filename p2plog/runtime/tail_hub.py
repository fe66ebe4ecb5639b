"""Fan-out of items to live ``tail`` subscribers: applied entries (index order) and emitted
records (event-time order) alike; anything with an ``index``.

Each subscriber has a buffer bounded in items and in bytes (20,000 records of 64 KiB were
1.3 GB). The Raft loop publishes without ever waiting; a reader that falls behind by more than
its buffer is cut off with the index to resume from, rather than slowing the loop or growing
memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import trio

BUFFER_ENTRIES = 20_000
BUFFER_BYTES = 32 << 20


class Indexed(Protocol):
    @property
    def index(self) -> int: ...


T = TypeVar("T", bound=Indexed)


@dataclass(eq=False)
class Subscriber(Generic[T]):
    buf: deque[T] = field(default_factory=deque)
    wakeup: trio.Event = field(default_factory=trio.Event)
    behind_at: int | None = None  # first index this reader missed, once it fell behind
    limit: int = BUFFER_ENTRIES
    limit_bytes: int = BUFFER_BYTES
    nbytes: int = 0

    def take(self) -> list[T]:
        """Everything buffered, oldest first; the buffer is empty afterwards."""
        items = list(self.buf)
        self.buf.clear()
        self.nbytes = 0
        return items


class TailHub(Generic[T]):
    def __init__(self) -> None:
        self.subs: set[Subscriber[T]] = set()

    def subscribe(
        self, limit: int = BUFFER_ENTRIES, limit_bytes: int = BUFFER_BYTES
    ) -> Subscriber[T]:
        s: Subscriber[T] = Subscriber(limit=limit, limit_bytes=limit_bytes)
        self.subs.add(s)
        return s

    def unsubscribe(self, s: Subscriber[T]) -> None:
        self.subs.discard(s)

    def publish(self, entries: list[T], nbytes: int = 0) -> None:
        """Hand ``entries`` (about ``nbytes`` in all) to every subscriber that keeps up."""
        if not entries:
            return
        for s in list(self.subs):
            if s.behind_at is not None:
                continue
            if len(s.buf) + len(entries) > s.limit or s.nbytes + nbytes > s.limit_bytes:
                s.behind_at = s.buf[0].index if s.buf else entries[0].index
                s.buf.clear()
                s.nbytes = 0
            else:
                s.buf.extend(entries)
                s.nbytes += nbytes
            s.wakeup.set()
