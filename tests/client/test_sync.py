"""SyncClient: the async client driven from plain threads."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

from p2plog.client import ClientClosed, ClientOptions, SyncClient, Unreachable, make_record
from p2plog.testing.ports import free_ports

from .cluster import LocalCluster

TIMEOUT_S = 10.0


async def test_sync_round_trip(cluster: LocalCluster) -> None:
    def work() -> tuple[Any, ...]:
        with SyncClient(cluster.addresses) as sc:
            acks = sc.submit([make_record("s1"), make_record("s2")])
            [one] = sc.submit(make_record("s3"))
            rows = sc.query(from_index=acks[0].index)
            st = sc.status()
            tailed = [r["msg"] for r in sc.tail(from_index=acks[0].index, limit=3)]
            off = sc.clock_offset(samples=2)
        return acks, one, rows, st, tailed, off

    with trio.fail_after(TIMEOUT_S):
        acks, one, rows, st, tailed, off = await trio.to_thread.run_sync(work)
    assert one.index == acks[1].index + 1
    assert [r["msg"] for r in rows] == ["s1", "s2", "s3"]
    assert st["applied_index"] >= one.index
    assert tailed == ["s1", "s2", "s3"]
    assert off.delay_ns >= 0


async def test_many_threads_share_one_client_and_coalesce(cluster: LocalCluster) -> None:
    n_threads, per_thread = 8, 25

    def work() -> tuple[int, int]:
        indexes: list[int] = []
        lock = threading.Lock()
        with SyncClient(cluster.addresses, ClientOptions(linger_ms=5)) as sc:

            def producer(t: int) -> None:
                for i in range(per_thread):
                    [a] = sc.submit(make_record(f"t{t}.{i}"))
                    with lock:
                        indexes.append(a.index)

            threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(TIMEOUT_S)
            frames = sc.statistics().frames_sent
        return len(set(indexes)), frames

    with trio.fail_after(TIMEOUT_S):
        distinct, frames = await trio.to_thread.run_sync(work)
    assert distinct == n_threads * per_thread
    assert frames < n_threads * per_thread


async def test_sync_unreachable_and_closed() -> None:
    dead = [f"127.0.0.1:{p}" for p in free_ports(1)]

    def work() -> None:
        with pytest.raises(Unreachable):
            SyncClient(dead, ClientOptions(connect_timeout_s=0.5))
        sc = SyncClient(dead, lazy=True)
        sc.close()
        assert not sc.thread.is_alive()
        with pytest.raises(ClientClosed):
            sc.submit(make_record("too late"))

    with trio.fail_after(TIMEOUT_S):
        await trio.to_thread.run_sync(work)


async def test_close_interrupts_a_call_in_flight() -> None:
    dead = [f"127.0.0.1:{p}" for p in free_ports(1)]
    opts = ClientOptions(connect_timeout_s=0.2, submit_deadline_s=30.0, backoff_max_s=0.1)

    def work() -> BaseException | None:
        sc = SyncClient(dead, opts, lazy=True)
        caught: list[BaseException] = []

        def blocked() -> None:
            try:
                sc.submit([make_record("stuck")])
            except Exception as e:
                caught.append(e)

        t = threading.Thread(target=blocked)
        t.start()
        t.join(0.3)  # let it retry for a while
        sc.close()
        t.join(5.0)
        assert not t.is_alive()
        return caught[0] if caught else None

    with trio.fail_after(TIMEOUT_S):
        err = await trio.to_thread.run_sync(work)
    assert isinstance(err, ClientClosed), repr(err)
