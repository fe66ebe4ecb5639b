"""Failover when the node the client is connected to stops (a real in-process cluster):
submits move to another node and keep their ids; a tail resumes there without a gap."""

from __future__ import annotations

from typing import Any

import trio

from p2plog.client import ClientOptions, make_record, open_client

from .cluster import LocalCluster

TIMEOUT_S = 15.0
OPTS = ClientOptions(submit_deadline_s=8.0, backoff_min_s=0.02)


async def test_submit_fails_over_when_the_connected_node_stops(cluster: LocalCluster) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses, OPTS) as c:
            [before] = await c.submit(make_record("before"))
            assert c.statistics().address == cluster.addresses[0]
            cluster.stop("n1")
            [after] = await c.submit(make_record("after"))
            rows = await c.query(from_index=before.index)
            st = c.statistics()
    assert after.index > before.index
    assert [r["msg"] for r in rows] == ["before", "after"]
    assert st.failovers >= 1
    assert st.address != cluster.addresses[0]


async def test_tail_continues_on_another_node_when_its_node_stops(
    cluster: LocalCluster,
) -> None:
    got: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses, OPTS) as writer:
            first = (await writer.submit([make_record("t0")]))[0].index
            async with (
                open_client(cluster.addresses, OPTS) as reader,
                reader.tail(from_index=first, limit=20) as stream,
            ):
                async for rec in stream:
                    got.append(rec)
                    if len(got) == 1:
                        cluster.stop("n1")  # the reader's (and writer's) node
                        for i in range(1, 20):
                            await writer.submit(make_record(f"t{i}"))
    assert [r["msg"] for r in got] == [f"t{i}" for i in range(20)]
    assert [r["index"] for r in got] == sorted({r["index"] for r in got})
