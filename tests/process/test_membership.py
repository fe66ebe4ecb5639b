"""Replacing hosts on a real cluster under steady writes (issue 16): ``n4`` (``join = true`` in
peers.toml) starts, waits to be added, is added as a learner and promoted; the leader is
removed while it leads, then another of the first three. Every acked record is on every
remaining node exactly once, their logs are identical, the removed nodes (still running) do
not disrupt, and the write stall of each change is measured (printed: p50 and max of the gaps
between acked batches while the change ran)."""

from __future__ import annotations

import itertools
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import started
from .harness import Cluster, WriterStats, duplicates, log_key, make_records, submit_batches

BATCH = 20


async def _member(c: Cluster, *args: str, timeout_s: float = 60.0) -> str:
    cmd = [sys.executable, "-m", "p2plog", "member", *args, "--config", str(c.config_path)]
    with trio.fail_after(timeout_s):
        done = await trio.run_process(
            cmd, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False
        )
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, f"member {' '.join(args)} failed: {out}"
    return out


class Timed:
    """Fresh batches until stopped, noting when each batch was acked (the next one asked)."""

    def __init__(self) -> None:
        self.stop = trio.Event()
        self.acked_at: list[float] = []

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        for n in range(100_000):
            self.acked_at.append(time.monotonic())
            if self.stop.is_set():
                return
            yield make_records(BATCH, f"m{n}")

    def stall(self, t0: float, t1: float) -> tuple[float, float]:
        """p50 and max of the gaps between acked batches within [t0, t1 + 1 s]."""
        ts = [t for t in self.acked_at if t0 <= t <= t1 + 1.0]
        gaps = [b - a for a, b in itertools.pairwise(ts)] or [t1 - t0]
        return statistics.median(gaps), max(gaps)


async def _leader_of(c: Cluster, members: list[str], timeout_s: float = 10.0) -> str:
    """The leader the members agree on (a removed node, still running, is left out)."""
    with trio.fail_after(timeout_s):
        while True:
            got = await c.statuses(members)
            leaders = {s and s["leader"] for s in got.values()}
            if len(leaders) == 1 and None not in leaders:
                (lead,) = leaders
                if got.get(lead) and got[lead]["role"] == "leader":
                    return str(lead)
            await trio.sleep(0.02)


async def _wait_member(c: Cluster, nid: str, role: str, timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while True:
            st = await c.try_status(nid)
            if st is not None and nid in st["members"][role + "s"]:
                return
            await trio.sleep(0.1)


async def test_add_promote_remove_the_leader_then_another_under_writes(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    c = Cluster(tmp_path, n=4, joining=1)
    async with started(c, request):
        await c.start("n4")
        st = await c.wait_serving("n4")
        assert "n4" not in st["members"]["voters"] + st["members"]["learners"]
        timed, stats = Timed(), WriterStats()
        stalls: dict[str, tuple[float, float]] = {}
        async with trio.open_nursery() as nursery:
            # Through n4, the one node that stays to the end (it forwards to the leader).
            nursery.start_soon(submit_batches, c.port("n4"), timed.batches(), stats)
            await trio.sleep(1.0)
            steps = [
                ("add learner n4", ["add", "n4", f"127.0.0.1:{c.port('n4')}", "--learner"]),
                ("promote n4", ["promote", "n4"]),
            ]
            for name, args in steps:
                t0 = time.monotonic()
                await _member(c, *args)
                stalls[name] = timed.stall(t0, time.monotonic())
                await trio.sleep(1.0)
            await _wait_member(c, "n4", "voter")
            removed = []
            for _ in range(2):
                lead = await _leader_of(c, [n for n in c.ids if n not in removed])
                victim = (
                    lead
                    if not removed
                    else next(n for n in ("n1", "n2", "n3") if n not in removed and n != lead)
                )
                t0 = time.monotonic()
                out = await _member(c, "remove", victim)
                stalls[f"remove {victim}" + (" (leader)" if victim == lead else "")] = timed.stall(
                    t0, time.monotonic()
                )
                assert f"member remove {victim}" in out
                removed.append(victim)
                await trio.sleep(1.5)
            timed.stop.set()
        assert not stats.stuck, stats.stuck
        remaining = [n for n in c.ids if n not in removed]
        statuses = await c.wait_converged(remaining, timeout_s=30)
        for s in statuses.values():
            assert sorted(s["members"]["voters"]) == sorted(remaining)
        logs = {n: await c.query_all(n) for n in remaining}
        keys = {n: log_key(recs) for n, recs in logs.items()}
        assert len({tuple(k) for k in keys.values()}) == 1, "logs differ"
        ids = [r["id"] for r in logs["n4"]]
        assert not duplicates(ids)
        missing = set(stats.acked) - set(ids)
        assert not missing, f"{len(missing)} acked records missing"
        # The removed nodes still run and did not move the term of the remaining ones.
        terms = {s["term"] for s in statuses.values()}
        assert len(terms) == 1
        for v in removed:
            assert c.nodes[v].alive, f"removed {v} should still be running"
        listing = await _member(c, "list")
        rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
        assert sorted(rows) == sorted(remaining), listing
        assert all(" voter" in row for row in rows.values()), listing
        report = ", ".join(
            f"{k}: p50 {a * 1000:.0f} ms max {b * 1000:.0f} ms" for k, (a, b) in stalls.items()
        )
        print(f"\nwrite stall per change ({len(stats.acked)} records acked): {report}")


async def test_a_voter_that_lost_its_data_is_refused_until_removed_and_added_again(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    c = Cluster(tmp_path)
    async with started(c, request):
        lead = await c.leader()
        stats = WriterStats()
        records = make_records(300, "before")
        await submit_batches(c.port(lead), iter([records[:150], records[150:]]), stats)
        await c.wait_converged(c.ids)
        lost = next(n for n in c.ids if n != lead)
        c.kill(lost)
        await c.wait_exit(lost)
        shutil.rmtree(c.nodes[lost].data_dir)  # the disk is gone; same id, empty directory
        await c.restart(lost)
        # Its links are refused: it neither votes nor holds anything, and says why.
        with trio.fail_after(15):
            while "lost data: run `p2plog member remove" not in c.logs(lost):  # noqa: ASYNC110
                await trio.sleep(0.1)
        assert f"refused {lost}: it is a voter whose data directory changed" in c.logs(lead)
        st = await c.status(lost)
        assert st["records"] == 0
        assert st["role"] != "leader"
        others = [n for n in c.ids if n != lost]
        assert await _leader_of(c, others) == lead
        await _member(c, "remove", lost)
        await _member(c, "add", lost, f"127.0.0.1:{c.port(lost)}")  # a learner, then promoted
        statuses = await c.wait_converged(c.ids, timeout_s=30)
        assert sorted(statuses[lead]["members"]["voters"]) == sorted(c.ids)
        got = {r["id"] for r in await c.query_all(lost)}
        assert set(stats.acked) <= got
