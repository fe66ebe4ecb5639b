"""tail: live records, replay from an index, and resumption without gaps or duplicates."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from p2plog.client import ClientOptions, make_record, open_client
from p2plog.client.client import Client
from p2plog.client.tail import TailStream

from .cluster import LocalCluster
from .fake_node import FakeNode

TIMEOUT_S = 10.0


async def collect(stream: TailStream, n: int, into: list[dict[str, Any]]) -> None:
    async for rec in stream:
        into.append(rec)
        if len(into) >= n:
            return


async def wait_subscribed(stream: TailStream, count: int = 1) -> None:
    while stream.subscriptions < count:  # noqa: ASYNC110 - polls a counter; bounded by callers
        await trio.sleep(0.005)


async def test_tail_from_now_sees_new_records_live(cluster: LocalCluster) -> None:
    got: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            await c.submit([make_record("before")])
            async with c.tail() as stream, trio.open_nursery() as nursery:
                nursery.start_soon(collect, stream, 5, got)
                await wait_subscribed(stream)
                for i in range(5):
                    await c.submit(make_record(f"live {i}"))
    assert [r["msg"] for r in got] == [f"live {i}" for i in range(5)]


async def test_tail_replays_from_index_with_filters_and_stops(cluster: LocalCluster) -> None:
    recs = [make_record(f"r{i}", level="error" if i % 2 else "info") for i in range(10)]
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            first = (await c.submit(recs))[0].index
            async with c.tail(from_index=first, level="error", limit=3) as stream:
                got = [r["msg"] async for r in stream]
            assert got == ["r1", "r3", "r5"]
            async with c.tail(from_index=first, to_index=first + 3) as stream:
                got = [r["msg"] async for r in stream]
            # to_index ends the tail at the first record past it (here: when r4 arrives)
            assert got == ["r0", "r1", "r2", "r3"]


async def kill_connection(c: Client) -> None:
    conn = await c.connection()
    c.failover(conn, "test: connection dropped")


async def test_tail_resumes_after_connection_loss_without_gap(cluster: LocalCluster) -> None:
    got: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            first = (await c.submit([make_record("start")]))[0].index
            async with c.tail(from_index=first) as stream, trio.open_nursery() as nursery:
                nursery.start_soon(collect, stream, 31, got)
                await wait_subscribed(stream)
                for round_ in range(3):
                    await c.submit([make_record(f"{round_}.{i}") for i in range(10)])
                    await kill_connection(c)  # records may or may not be delivered yet
                    if round_ < 2:
                        await wait_subscribed(stream, round_ + 2)
            assert stream.subscriptions >= 3
    indexes = [r["index"] for r in got]
    assert indexes == list(range(first, first + 31))


async def test_tail_resumes_where_the_node_says_after_end_behind(nursery: trio.Nursery) -> None:
    froms: list[int] = []

    def script(msg: dict[str, Any]) -> list[Any]:
        if msg["kind"] != "tail":
            return []
        froms.append(msg["from_index"])
        if len(froms) == 1:
            return [
                ("batch", {"records": [{"index": 1}, {"index": 2}], "done": False}),
                ("end", {"code": "behind", "msg": "too slow", "resume_index": 3}),
            ]
        return [("batch", {"records": [{"index": 2}, {"index": 3}], "done": False})]

    fake = FakeNode(script)
    await fake.start(nursery)
    with trio.fail_after(TIMEOUT_S):
        async with open_client([fake.address]) as c, c.tail(from_index=1, limit=3) as stream:
            got = [r["index"] async for r in stream]
    assert froms == [1, 3]
    assert got == [1, 2, 3]  # index 2 repeated by the node is not delivered twice


async def test_tail_resubscribes_when_the_local_buffer_overflows(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("p2plog.client.connection.STREAM_FRAMES", 2)
    froms: list[int] = []

    def script(msg: dict[str, Any]) -> list[Any]:
        if msg["kind"] != "tail":
            return []
        froms.append(msg["from_index"])
        return [
            ("batch", {"records": [{"index": i}], "done": False})
            for i in range(msg["from_index"], 11)
        ]

    fake = FakeNode(script)
    await fake.start(nursery)
    opts = ClientOptions(backoff_min_s=0.001)
    with trio.fail_after(TIMEOUT_S):
        async with open_client([fake.address], opts) as c, c.tail(from_index=1, limit=10) as s:
            got = []
            async for r in s:
                got.append(r["index"])
                await trio.sleep(0.01)  # a slow reader
    assert got == list(range(1, 11))
    assert len(froms) > 1
    assert froms == sorted(froms)
