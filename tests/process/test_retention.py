"""Retention and snapshots on three real nodes: each node cuts its own log behind a snapshot
once it is over ``[retention] max_bytes``; a follower that was down for longer than the
retention horizon is sent the leader's snapshot, then the log after it, and ends with the
same state as the others (records, record index, the same records from where all hold them);
ids acked before the cut are still answered as duplicates."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from .conftest import started
from .harness import Cluster, WriterStats, make_records, open_client, write_records

SEGMENT = 1 << 16
MAX_BYTES = 1 << 20


async def test_follower_behind_retention_rejoins_via_snapshot(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    c = Cluster(
        tmp_path,
        cluster_keys={"segment_bytes": SEGMENT},
        sections=["[retention]", f"max_bytes = {MAX_BYTES}"],
    )
    async with started(c, request):
        lead = await c.leader()
        victim = next(n for n in c.ids if n != lead)
        early = make_records(200, "early")
        stats = WriterStats()
        await write_records(c.port(lead), early, stats, batch=100, concurrency=1)
        c.kill(victim, signal.SIGKILL)
        assert await c.wait_exit(victim) == -signal.SIGKILL
        gone = await c.status(lead)
        records = make_records(20_000, "bulk")
        with trio.fail_after(60):
            await write_records(c.port(lead), records, stats, batch=500, concurrency=4)

        bound = MAX_BYTES + 2 * SEGMENT
        with trio.fail_after(30):  # retention looks every 5 s (a status may fall mid-pass)
            while True:
                st = await c.status(lead)
                kept = st["retention"]["kept"]
                if kept["first_index"] > gone["last_index"] + 1 and kept["bytes"] <= bound:
                    break
                await trio.sleep(0.2)
        assert st["retention"]["snapshot"]["index"] >= st["retention"]["kept"]["first_index"] - 1

        await c.restart(victim)
        await c.wait_converged(c.ids, timeout_s=60)
        late = make_records(300, "late")  # the restored node's log holds only these
        await write_records(c.port(lead), late, stats, batch=100, concurrency=1)
        statuses = await c.wait_converged(c.ids, timeout_s=60)
        back = statuses[victim]
        assert back["retention"]["snapshot"]["index"] > gone["last_index"], back["retention"]
        for key in ("records", "record_index", "applied_index"):
            assert len({s[key] for s in statuses.values()}) == 1, (key, statuses)
        assert back["records"] == len(early) + len(records) + len(late)

        logs = {nid: await c.query_all(nid) for nid in c.ids}
        start = max(rows[0]["index"] for rows in logs.values())
        assert start <= back["record_index"] - len(late) + 1, start
        keyed = {
            nid: [(r["id"], r["index"], r["term"]) for r in rows if r["index"] >= start]
            for nid, rows in logs.items()
        }
        assert len({tuple(v) for v in keyed.values()}) == 1, {k: len(v) for k, v in keyed.items()}
        assert keyed[victim]
        assert keyed[victim][-1][1] == back["record_index"]

        # Ids acked before the cut are still in every node's dedup window.
        async with open_client(c.port(victim)) as cl:
            reply = await cl.submit(early[:5])
        assert reply["kind"] == "ack", reply
        assert len(reply["acks"]) == 5, reply
        for a in reply["acks"]:
            assert a["dup"] is True, a
            assert a["index"] == stats.acked[a["id"]][0], a
