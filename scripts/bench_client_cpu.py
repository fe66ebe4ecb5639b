"""Client-side CPU per single-record ``Client.submit``, without a cluster.

    python scripts/bench_client_cpu.py                 # 60,000 submits from 256 tasks
    python scripts/bench_client_cpu.py --records 200000 --tasks 64

The client's own cost limits the "one record per submit, 256 in flight" shape (the load
generator was the busiest process there). This measures it alone: ``p2plog.Client`` with its
real batcher and frame encoding, against a fake connection that acks every frame at once
(one compact run), so the figure is the client's CPU per submit (process time / records),
nothing of the network or the nodes. Bounded by ``--records``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2plog.client import ClientOptions
from p2plog.client.client import Client
from p2plog.wire import envelope

TEMPLATE: dict[str, Any] = {
    "level": "info",
    "source": "bench_client_cpu",
    "msg": "x" * 120,
    "fields": {"a": "b", "n": 1},
}


class FakeConn:
    """Encodes each frame as the real connection would and acks all its records."""

    address = "fake:0"
    alive = True
    clock_offset_ns = 0

    def __init__(self) -> None:
        self.next_index = 1
        self.frames = 0

    async def request(self, kind: str, fields: dict[str, Any], *, timeout_s: float) -> Any:
        envelope.encode(kind, dict(fields))
        await trio.lowlevel.checkpoint()
        n = len(fields["records"].items)
        reply = {"kind": "ack", "runs": [[0, n, self.next_index, 1]], "acks": [], "errors": []}
        self.next_index += n
        self.frames += 1
        return reply


async def run(records: int, tasks: int) -> None:
    async with trio.open_nursery() as nursery:
        client = Client(["fake:0"], ClientOptions(), nursery)
        conn = FakeConn()

        async def connection() -> FakeConn:
            return conn

        client.connection = connection  # type: ignore[method-assign,assignment]
        nursery.start_soon(client._batcher.run)
        ids = [uuid.uuid4().bytes for _ in range(records)]
        left = [records]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await client.submit({**TEMPLATE, "id": ids[left[0]], "ts": time.time_ns()})

        cpu0, wall0 = time.process_time(), time.perf_counter()
        with trio.fail_after(600):
            async with trio.open_nursery() as workers:
                for _ in range(tasks):
                    workers.start_soon(worker)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print(
            f"{records:,} single-record submits from {tasks} tasks: "
            f"{cpu / records * 1e6:.1f} us client CPU per submit, {records / wall:,.0f}/s, "
            f"{conn.frames} frames ({records / max(conn.frames, 1):.0f} records/frame)"
        )
        nursery.cancel_scope.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=60_000)
    p.add_argument("--tasks", type=int, default=256)
    a = p.parse_args()
    trio.run(run, a.records, a.tasks)


if __name__ == "__main__":
    main()
