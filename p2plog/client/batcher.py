"""Coalescing of single-record submits into frames (a Kafka producer's linger).

Callers hand one record each to ``submit_one``; while frames are in flight, the batcher task
collects records for up to ``linger_s`` after the first one (or until a frame is full by count
or bytes); with none in flight it sends what is queued at once. Each frame goes out in its own
task, up to ``max_inflight`` frames at once. While every frame slot is busy,
records keep queueing (a bounded channel), so under load frames grow by themselves. Records of
different ``ack`` modes never share a frame. Every caller gets the outcome of its own record.

Each record is encoded once, when it is handed in: the bytes size the frame and travel in it.
A caller's wait is bounded by its deadline without a cancel scope per record (a scope cost
about a quarter of the client's CPU per single-record submit): ``run`` also runs a sweeper
that fails records still waiting past their deadline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from p2plog.client.errors import Ack, RecordFailure, SubmitError, SubmitFailed
from p2plog.client.records import (
    FRAME_OVERHEAD_BYTES,
    Record,
    UnencodableRecord,
    encode_record,
    id_text,
)

Outcome = Ack | RecordFailure
SendFrame = Callable[[list[Record], list[bytes], str], Awaitable[list[Outcome]]]
SWEEP_S = 0.25  # how often waits past their deadline are failed


@dataclass(eq=False, slots=True)
class _Item:
    record: Record
    data: bytes
    deadline: float
    done: trio.Event = field(default_factory=trio.Event)
    outcome: Outcome | None = None
    error: SubmitError | None = None

    @property
    def size(self) -> int:
        return len(self.data)


class Batcher:
    def __init__(
        self,
        send_frame: SendFrame,
        *,
        linger_s: float,
        max_records: int,
        max_bytes: int,
        max_inflight: int,
        queue_records: int,
    ) -> None:
        self._send_frame = send_frame
        self.linger_s = linger_s
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._tx, self._rx = trio.open_memory_channel[tuple[str, _Item]](queue_records)
        self._slots = trio.Semaphore(max_inflight)
        self.max_inflight = max_inflight
        self.frames = 0
        self.records = 0
        self._waiting: deque[_Item] = deque()  # queued or in flight, oldest first

    async def submit_one(self, record: Record, ack: str, *, timeout_s: float) -> Outcome:
        """Queue one record and wait for its outcome; raises ``SubmitError`` for a failed
        frame (the record's fate is then in the error's ``code``)."""
        try:
            data = encode_record(record)
        except UnencodableRecord as e:
            return RecordFailure(0, id_text(record.get("id")), f"record 0: {e}")
        item = _Item(record, data, trio.current_time() + timeout_s)
        self._waiting.append(item)  # in deadline order, for the sweeper
        try:
            self._tx.send_nowait((ack, item))
        except trio.WouldBlock:  # the queue is full: wait for room, within the deadline
            with trio.move_on_at(item.deadline) as scope:
                await self._tx.send((ack, item))
            if scope.cancelled_caught:
                item.done.set()
        # Bounded without a scope of its own: the sweeper wakes it at its deadline.
        await item.done.wait()
        if item.error is not None:
            raise item.error
        if item.outcome is None:
            raise SubmitFailed(
                f"no outcome within {timeout_s:.0f} s (the client is overloaded or stopping)",
                code="timeout",
            )
        return item.outcome

    async def run(self) -> None:
        """Collect and dispatch frames until cancelled (the client's nursery owns it)."""
        buckets: dict[str, list[_Item]] = {}
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep)
                while True:
                    ack, first = await self._rx.receive()
                    buckets = {ack: [first]}
                    await self._collect(nursery, buckets)
                    for ack, bucket in buckets.items():
                        if bucket:
                            await self._dispatch(nursery, ack, bucket)
                    buckets = {}
        finally:
            stranded = [it for b in buckets.values() for it in b]
            while True:
                try:
                    stranded.append(self._rx.receive_nowait()[1])
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            _fail(stranded)
            _fail(list(self._waiting))

    async def _sweep(self) -> None:
        """Wake callers whose record is still waiting at its deadline (items go in with
        non-decreasing deadlines, so the oldest are at the left)."""
        waiting = self._waiting
        while True:
            await trio.sleep(SWEEP_S)
            now = trio.current_time()
            while waiting and (waiting[0].done.is_set() or waiting[0].deadline <= now):
                it = waiting.popleft()
                if not it.done.is_set():
                    it.done.set()  # no outcome: the caller raises "no outcome within"

    async def _collect(self, nursery: trio.Nursery, buckets: dict[str, list[_Item]]) -> None:
        """Gather records for a frame. With no frame in flight, take only what is already
        queued and go: a lone record does not wait for the linger (its latency is the round
        trip). While frames are in flight, linger: the records that gather form the next
        frame (the batch grows with the load, like Nagle without the delay at low load)."""
        sizes = {ack: FRAME_OVERHEAD_BYTES + b[0].size for ack, b in buckets.items()}
        idle = self._slots.value == self.max_inflight
        with trio.move_on_after(0 if idle else self.linger_s):
            while True:
                try:
                    ack, item = self._rx.receive_nowait()
                except trio.WouldBlock:
                    if idle:
                        return
                    ack, item = await self._rx.receive()
                bucket = buckets.setdefault(ack, [])
                size = sizes.get(ack, FRAME_OVERHEAD_BYTES)
                if bucket and (
                    len(bucket) >= self.max_records or size + item.size > self.max_bytes
                ):
                    await self._dispatch(nursery, ack, bucket)
                    bucket = buckets[ack] = []
                    size = FRAME_OVERHEAD_BYTES
                bucket.append(item)
                sizes[ack] = size + item.size

    async def _dispatch(self, nursery: trio.Nursery, ack: str, items: list[_Item]) -> None:
        # Shielded from the linger timeout (this runs inside it); bounded by the frames in
        # flight, each of which is bounded by the client's submit deadline.
        with trio.CancelScope(shield=True):
            await self._slots.acquire()
        self.frames += 1
        self.records += len(items)
        nursery.start_soon(self._flush, ack, items)

    async def _flush(self, ack: str, items: list[_Item]) -> None:
        try:
            outcomes = await self._send_frame(
                [it.record for it in items], [it.data for it in items], ack
            )
        except SubmitError as e:
            for k, it in enumerate(items):
                if k < len(e.acks) and e.acks[k] is not None:
                    it.outcome = e.acks[k]
                else:
                    it.error = SubmitFailed(str(e), code=e.code, reason=e.reason)
                it.done.set()
        else:
            for it, out in zip(items, outcomes, strict=True):
                it.outcome = out
                it.done.set()
        finally:
            self._slots.release()
            _fail(items)


def _fail(items: list[_Item]) -> None:
    """Wake every item still waiting: the client is closing."""
    for it in items:
        if it.outcome is None and it.error is None:
            it.error = SubmitFailed("the client closed before the record was acked", code="closed")
        it.done.set()
