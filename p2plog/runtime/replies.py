"""Requests to a peer awaiting its reply (``fwd`` -> ``fwda``, ``ci`` -> ``cia``).

Each request gets a random 63-bit id (sequential ids let anyone who could reach a link
guess the next one and answer it: real clients were acked for records never stored), and
a reply counts only if it comes from the peer the request was sent to and carries an id
still waiting. Anything else is dropped: a late answer to a request that gave up is normal.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from p2plog.raft.types import NodeId

M = TypeVar("M")


@dataclass(slots=True)
class Waiting(Generic[M]):
    id: int
    peer: NodeId
    kind: type[M]
    done: trio.Event = field(default_factory=trio.Event)
    reply: M | None = None


class Replies:
    def __init__(self) -> None:
        self._waiting: dict[int, Waiting[Any]] = {}

    @contextmanager
    def expect(self, peer: NodeId, kind: type[M]) -> Iterator[Waiting[M]]:
        """A fresh id for a request to ``peer`` answered by a ``kind`` message; waiting on it
        ends with the block."""
        while True:
            rid = secrets.randbits(63)
            if rid not in self._waiting:
                break
        w: Waiting[M] = Waiting(rid, peer, kind)
        self._waiting[rid] = w
        try:
            yield w
        finally:
            self._waiting.pop(rid, None)

    def deliver(self, src: NodeId, rid: int, msg: object) -> bool:
        """Hand ``msg`` to the request ``rid`` if ``src`` is the peer it asked and ``msg`` the
        kind of reply it waits for; True if so."""
        w = self._waiting.get(rid)
        if w is None or w.peer != src or not isinstance(msg, w.kind) or w.done.is_set():
            return False
        w.reply = msg
        w.done.set()
        return True

    def __len__(self) -> int:
        return len(self._waiting)
