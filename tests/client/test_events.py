"""The event-time ordered stream (issue 6), end to end on an in-process cluster: records from
producers with disordered clocks come out of ``tail --order event`` in event-time order, a
record older than the watermark is flagged late and still delivered, and an idle cluster
flushes the buffer through the leader's time ticks."""

from __future__ import annotations

import time

import trio

from p2plog.client import make_record, open_client

from .cluster import LocalCluster

TIMEOUT_S = 15.0
MS = 1_000_000


async def test_event_tail_orders_by_event_time_and_flags_late(cluster: LocalCluster) -> None:
    now = time.time_ns()
    # Event times 300 ms apart, submitted in scrambled order, all within the 1 s window.
    offsets_ms = [600, 0, 900, 300]
    recs = [make_record(f"e{k}", ts=now + k * MS) for k in offsets_ms]
    got: list[dict[str, object]] = []
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c, c.tail(order="event") as t:
            await trio.sleep(0.2)  # the subscription is in place
            for r in recs:
                await c.submit([r])
            # Nothing more is written: only the leader's time ticks can flush the buffer.
            async for row in t:
                got.append(row)
                if len(got) == len(recs):
                    break
            # A record whose event time is already behind the watermark: late, not dropped.
            stale = make_record("stale", ts=now - 10_000 * MS)
            await c.submit([stale])
            async for row in t:
                got.append(row)
                break
    msgs = [row["msg"] for row in got]
    assert msgs[:4] == ["e0", "e300", "e600", "e900"]
    assert not any(row["late"] for row in got[:4])
    assert msgs[4] == "stale"
    assert got[4]["late"] is True


async def test_status_reports_the_reorder_buffer(cluster: LocalCluster) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            await c.submit([make_record("x", ts=time.time_ns())])
            st = await c.status()
    reorder = st["reorder"]
    assert {"depth", "late", "watermark_lag_ms"} <= set(reorder)


async def test_event_query_matches_the_live_stream_on_every_node(cluster: LocalCluster) -> None:
    """query --order event replays the stream for an index range: the same order and the same
    late flags the live tail delivered, on every node."""
    now = time.time_ns()
    offsets_ms = [500, -20_000, 100, 800, 0, -30_000, 300]  # two of them older than the window
    recs = [make_record(f"q{k}", ts=now + k * MS) for k in offsets_ms]
    live: list[dict[str, object]] = []
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c, c.tail(order="event") as t:
            await trio.sleep(0.2)
            acks = [(await c.submit([r]))[0] for r in recs]
            async for row in t:
                live.append(row)
                if len(live) == len(recs):
                    break
        first, last = acks[0].index, acks[-1].index
        per_node = []
        for address in cluster.addresses:
            async with open_client([address]) as one:
                rows = await one.query(from_index=first, to_index=last, order="event")
            per_node.append([(row["msg"], row["late"]) for row in rows])
    expected = [(row["msg"], row["late"]) for row in live]
    assert sorted(m for m, _ in expected) == sorted(r["msg"] for r in recs)
    assert {m for m, late in expected if late} == {"q-20000", "q-30000"}
    for got in per_node:
        assert got == expected
