"""Checks shared by the multi-process tests: a node is alive and serving, every node holds the
same committed log, a connection is closed with a reason. Every wait is bounded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from .harness import Cluster, log_key, make_records, open_client


async def wait_until(
    pred: Callable[[], bool], timeout_s: float, what: str, cluster: Cluster, extra: Any = ""
) -> float:
    """Poll ``pred`` every 20 ms; return the seconds it took, or fail with the node logs."""
    t0 = trio.current_time()
    try:
        with trio.fail_after(timeout_s):
            for _ in range(int(timeout_s / 0.02) + 2):  # bounded by count and by time
                if pred():
                    break
                await trio.sleep(0.02)
            else:
                raise trio.TooSlowError
    except trio.TooSlowError:
        raise AssertionError(
            f"{what}: not within {timeout_s} s; {extra}\n{cluster.log_tails()}"
        ) from None
    return trio.current_time() - t0


async def wait_new_leader(
    cluster: Cluster, old: str | None, among: list[str], t0: float, timeout_s: float = 5.0
) -> tuple[float, str]:
    """From ``t0`` (trio clock) until the first status of a node in ``among`` names a leader
    other than ``old``; returns (seconds since ``t0``, that leader)."""
    seen: dict[str, Any] = {}
    try:
        with trio.fail_after(max(0.1, t0 + timeout_s - trio.current_time())):
            for _ in range(100_000):  # bounded by count, and by the fail_after above
                assert_alive(cluster, among, f"waiting for a leader other than {old}")
                seen = await cluster.statuses(among, timeout_s=0.5)
                for st in seen.values():
                    if st is not None and st["leader"] not in (None, old):
                        return trio.current_time() - t0, str(st["leader"])
                await trio.sleep(0.01)
            raise trio.TooSlowError
    except trio.TooSlowError:
        summary = {k: v and (v["role"], v["term"], v["leader"]) for k, v in seen.items()}
        raise AssertionError(
            f"no new leader (old {old}) among {among} within {timeout_s} s; last (role, term, "
            f"leader) = {summary}; live processes {cluster.live()}\n{cluster.log_tails()}"
        ) from None


def assert_alive(cluster: Cluster, nids: list[str], when: str) -> None:
    dead: dict[str, int | None] = {}
    for n in nids:
        nd = cluster.nodes[n]
        if not nd.alive:
            dead[n] = nd.poll()
    assert not dead, f"{when}: node(s) exited (id: exit code) {dead}\n{cluster.log_tails()}"


async def assert_same_logs(
    cluster: Cluster, nids: list[str], *, timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    """Wait until the nodes agree on last/commit/applied index, then demand identical
    (id, index, term) lists from index 1 on every node; return one node's records."""
    statuses = await cluster.wait_converged(nids, timeout_s=timeout_s)
    logs = {nid: await cluster.query_all(nid) for nid in nids}
    ref = nids[0]
    for nid in nids[1:]:
        a, b = log_key(logs[ref]), log_key(logs[nid])
        if a != b:
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            raise AssertionError(
                f"logs of {ref} and {nid} differ: {len(a)} vs {len(b)} records, first "
                f"difference at position {first}: "
                f"{a[first] if first < len(a) else None} vs "
                f"{b[first] if first < len(b) else None}\n" + cluster.log_tails()
            )
    for key in ("last_index", "commit_index", "applied_index", "records", "record_index"):
        values = {nid: statuses[nid][key] for nid in nids}
        assert len(set(values.values())) == 1, f"{key} differs: {values}"
    assert statuses[ref]["records"] == len(logs[ref]), (statuses[ref], len(logs[ref]))
    return logs[ref]


async def assert_serving(port: int, tag: str) -> list[dict[str, Any]]:
    """A normal submit through ``port`` is acked (the node survived what came before);
    returns the records written."""
    recs = make_records(3, tag)
    with trio.fail_after(10):
        async with open_client(port) as c:
            reply = await c.submit(recs)
    assert reply["kind"] == "ack", reply
    assert [a["id"] for a in reply["acks"]] == [r["id"] for r in recs], reply
    assert reply["errors"] == []
    return recs


async def expect_close(ws: Any, payload: bytes | str, timeout_s: float = 5.0) -> tuple[int, str]:
    """Send ``payload``; the node must close the connection; return (code, reason)."""
    with trio.fail_after(timeout_s):
        await ws.send_message(payload)
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
    reason = info.value.reason
    assert reason is not None
    return reason.code, reason.reason or ""
