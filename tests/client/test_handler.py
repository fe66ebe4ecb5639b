"""LogHandler: logging records reach the cluster; with the cluster away the spool keeps the
newest records, drops the oldest and says so on stderr, rate-limited; a spool file survives a
restart."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from p2plog.client import ClientOptions, LogHandler, SyncClient
from p2plog.testing.ports import free_ports

from .cluster import LocalCluster

TIMEOUT_S = 10.0
QUICK = ClientOptions(connect_timeout_s=0.2, submit_deadline_s=0.2, backoff_min_s=0.01)


def logger_with(handler: logging.Handler, name: str) -> logging.Logger:
    log = logging.getLogger(name)
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


async def test_records_arrive_with_fields(cluster: LocalCluster) -> None:
    def work() -> list[dict[str, Any]]:
        h = LogHandler(cluster.addresses)
        log = logger_with(h, "app.orders")
        try:
            log.info("order %s placed", 42, extra={"user": "bob", "amount": 9.5, "obj": object})
            log.debug("details")
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
            log.log(35, "between warning and error")
            h.flush()
            assert h.sent == 4
        finally:
            h.close()
        with SyncClient(cluster.addresses) as sc:
            return sc.query(source="app.orders")

    with trio.fail_after(TIMEOUT_S):
        rows = await trio.to_thread.run_sync(work)
    assert [r["level"] for r in rows] == ["info", "debug", "error", "warning"]
    first = rows[0]
    assert first["msg"] == "order 42 placed"
    f = first["fields"]
    assert (f["user"], f["amount"], f["obj"]) == ("bob", 9.5, repr(object))
    assert (f["logger"], f["module"]) == ("app.orders", "test_handler")
    assert f["thread"].startswith("work from")  # trio.to_thread names the worker thread
    assert isinstance(f["lineno"], int)
    assert isinstance(f["process"], int)
    assert "ValueError: boom" in rows[2]["msg"]
    assert "Traceback" in rows[2]["msg"]
    assert abs(first["ts"] - time.time_ns()) < 60 * 10**9


async def test_unreachable_cluster_drops_oldest_and_reports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = [f"127.0.0.1:{p}" for p in free_ports(2)]

    def work() -> tuple[list[str], float]:
        h = LogHandler(dead, max_spool=5, report_interval_s=0.3, options=QUICK)
        log = logger_with(h, "app.down")
        t0 = time.monotonic()
        try:
            for i in range(20):
                log.warning("r%d", i)  # never blocks, however dead the cluster
            assert time.monotonic() - t0 < 0.5
            time.sleep(1.2)
            kept = [r["msg"] for r in h.spool.pending()]
            h.flush_timeout_s = 0.2
        finally:
            h.close()
        return kept, time.monotonic() - t0

    with trio.fail_after(TIMEOUT_S):
        kept, elapsed = await trio.to_thread.run_sync(work)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("p2plog.LogHandler:")]
    assert kept == [f"r{i}" for i in range(15, 20)]
    dropped = sum(int(n) for n in re.findall(r"dropped (\d+) records \(spool full\)", err))
    assert dropped == 15
    assert re.search(r"cluster unreachable since \d\d:\d\d:\d\d: no node is reachable", err)
    assert "connection refused" in err
    assert "closing with 5 records not sent (lost)" in err
    assert len(lines) <= elapsed / 0.3 + 2  # rate-limited (+ the closing line)


async def test_spool_file_survives_a_restart(cluster: LocalCluster, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    dead = [f"127.0.0.1:{p}" for p in free_ports(1)]

    def work() -> tuple[list[str], list[str], int]:
        h1 = LogHandler(dead, spool_file=spool, options=QUICK, flush_timeout_s=0.3)
        log = logger_with(h1, "app.spooled")
        for i in range(3):
            log.info("kept %d", i)
        h1.close()
        ids = [json.loads(line)["id"] for line in spool.read_text().splitlines()]
        h2 = LogHandler(cluster.addresses, spool_file=spool)
        assert h2.spool.replayed >= 3
        h2.flush()
        h2.close()
        with SyncClient(cluster.addresses) as sc:
            rows = sc.query(source="app.spooled")
        return ids, [r["id"] for r in rows], spool.stat().st_size

    with trio.fail_after(TIMEOUT_S):
        ids, stored, size = await trio.to_thread.run_sync(work)
    assert len(set(ids)) == 3
    assert stored == list(dict.fromkeys(ids))  # each record stored once, in order
    assert size == 0  # drained: the file is emptied


def test_emit_skips_p2plog_own_loggers() -> None:
    h = LogHandler([f"127.0.0.1:{free_ports(1)[0]}"], options=QUICK, flush_timeout_s=0.1)
    try:
        logger_with(h, "p2plog.client").warning("about myself")
        logger_with(h, "app").warning("about the app")
        assert [r["msg"] for r in h.spool.pending()] + [""] >= ["about the app"]
        assert all(r["source"] != "p2plog.client" for r in h.spool.pending())
    finally:
        h.close()
