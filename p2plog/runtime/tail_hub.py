"""Fan-out of items to live ``tail`` subscribers: applied entries (index order) and emitted
records (event-time order) alike; anything with an ``index``.

Each subscriber has a bounded buffer. The Raft loop publishes without ever waiting; a reader
that falls behind by more than its buffer is cut off with the index to resume from, rather than
slowing the loop or growing memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import trio

BUFFER_ENTRIES = 20_000


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


class TailHub(Generic[T]):
    def __init__(self) -> None:
        self.subs: set[Subscriber[T]] = set()

    def subscribe(self, limit: int = BUFFER_ENTRIES) -> Subscriber[T]:
        s: Subscriber[T] = Subscriber(limit=limit)
        self.subs.add(s)
        return s

    def unsubscribe(self, s: Subscriber[T]) -> None:
        self.subs.discard(s)

    def publish(self, entries: list[T]) -> None:
        if not entries:
            return
        for s in list(self.subs):
            if s.behind_at is not None:
                continue
            if len(s.buf) + len(entries) > s.limit:
                s.behind_at = s.buf[0].index if s.buf else entries[0].index
                s.buf.clear()
            else:
                s.buf.extend(entries)
            s.wakeup.set()
