"""Three real ``python -m p2plog run`` processes on 127.0.0.1, driven by the raw client of
``harness.py``: convergence, kill -9 of the leader under load (failover time, no acked loss,
no duplicates, recovery from disk), kill -9 of a follower and catch-up after 50,000 records,
SIGTERM hand-over, bad input, ``ack=leader``.

Every wait is bounded; the measured figures (failover, catch-up) are printed (``-s``) and put
in the assertion messages. On failure the tail of every node's log is attached to the report.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import cbor2
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from .harness import (
    HOST,
    Cluster,
    WriterStats,
    duplicates,
    encode,
    fmt_s,
    log_key,
    make_records,
    open_client,
    open_raw_ws,
    run_writer,
    write_records,
)

FAILOVER_LIMIT_S = 1.5  # the target is < 1 s; the slack absorbs CI noise
# Node._serve_peer catches ConnectionClosed/ProtocolError around `async with open_nursery()`,
# but what the loop inside raises arrives as an ExceptionGroup, which `except ConnectionClosed`
# does not match; it escapes serve_websocket and Node.run, and the process exits 1. So when
# one node dies or stops, every node that had an inbound link from it dies too.


# Node._forward waits up to SUBMIT_TIMEOUT_S (10 s) for the leader's `fwda`; nothing fails
# the pending forwards when the link to that leader drops or another node becomes leader.
# Session.dispatch reads `t1` of a `time` request outside `guard`, so its ProtocolError
# reaches the connection-level handler.


# ---------------------------------------------------------------------------- helpers


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
        proc = cluster.nodes[n].proc
        if proc is None or proc.poll() is not None:
            dead[n] = proc and proc.poll()
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


def assert_no_loss(records: list[dict[str, Any]], stats: WriterStats, cluster: Cluster) -> None:
    """Every acked id is in the log at its acked index, once; nothing unknown is in it."""
    ids = [r["id"] for r in records]
    dups = duplicates(ids)
    assert not dups, f"{len(dups)} ids stored more than once, e.g. {list(dups.items())[:5]}"
    at = {r["id"]: (r["index"], r["term"]) for r in records}
    lost = [i for i in stats.acked if i not in at]
    assert not lost, (
        f"{len(lost)} of {len(stats.acked)} acked records are missing, e.g. {lost[:5]}; "
        f"writer errors {dict(stats.errors)}\n{cluster.log_tails()}"
    )
    moved = {i: (ack, at[i]) for i, ack in stats.acked.items() if ack[0] != at[i][0]}
    assert not moved, f"acked index differs from the stored index: {list(moved.items())[:5]}"
    other_term = {i: (ack, at[i]) for i, ack in stats.acked.items() if ack[1] != at[i][1]}
    if other_term:
        print(f"acks whose term differs from the stored entry's: {list(other_term.items())[:5]}")
    unknown = set(at) - stats.submitted
    assert not unknown, f"records nobody submitted: {list(unknown)[:5]}"


def assert_has_entries(verify_out: str, nid: str) -> int:
    """The last index ``p2plog verify`` found (it prints "entries FIRST..LAST"); must be > 0."""
    m = re.search(r"entries (\d+)\.\.(\d+)", verify_out)
    assert m, f"no entry range in the verify output of {nid}:\n{verify_out}"
    last = int(m.group(2))
    assert last > 0, f"{nid}'s data dir holds no entries:\n{verify_out}"
    return last


def check_writer(stats: WriterStats, cluster: Cluster) -> None:
    assert not stats.stuck, f"writer stuck: {stats.stuck}\n{cluster.log_tails()}"


# ---------------------------------------------------------------------------- 1. convergence


async def test_writes_through_every_node_converge(cluster: Cluster) -> None:
    stats = WriterStats()
    per_node = {nid: make_records(300, f"via-{nid}") for nid in cluster.ids}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for nid, recs in per_node.items():
                nursery.start_soon(
                    partial(write_records, cluster.port(nid), recs, stats, batch=50, concurrency=2)
                )
    check_writer(stats, cluster)
    assert len(stats.acked) == 900, (len(stats.acked), dict(stats.errors))
    assert all(not dup for _, _, dup in stats.acked.values())

    records = await assert_same_logs(cluster, cluster.ids, timeout_s=10)
    assert {r["id"] for r in records} == {r["id"] for recs in per_node.values() for r in recs}
    assert_no_loss(records, stats, cluster)
    # Log order: strictly increasing indexes; the records of one submit keep their order.
    indexes = [r["index"] for r in records]
    assert indexes == sorted(set(indexes))
    at = {r["id"]: r for r in records}
    for nid, recs in per_node.items():
        assert all(at[r["id"]]["node"] == nid for r in recs), "the taking node is recorded"
        for b in range(0, 300, 50):
            batch_indexes = [at[r["id"]]["index"] for r in recs[b : b + 50]]
            assert batch_indexes == sorted(batch_indexes), f"{nid} batch {b // 50} reordered"


# ---------------------------------------------------------------------------- 2. leader kill -9


async def test_leader_kill9_under_load(cluster: Cluster) -> None:
    old = await cluster.leader()
    survivors = [n for n in cluster.ids if n != old]
    via = survivors[0]
    stats = WriterStats()
    stop = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(run_writer, cluster.port(via), stats, stop, tag="fo"))
            await wait_until(lambda: stats.batches_acked >= 20, 10, "writer warm-up", cluster)
            acked_before = stats.batches_acked

            t_kill = trio.current_time()
            cluster.kill(old, signal.SIGKILL)
            failover_s, new = await wait_new_leader(cluster, old, survivors, t_kill)
            print(f"\nleader kill -9: {old} -> {new} in {fmt_s(failover_s)}")
            assert await cluster.wait_exit(old) == -signal.SIGKILL
            assert_alive(cluster, survivors, f"after kill -9 of the leader {old}")
            assert failover_s < FAILOVER_LIMIT_S, (
                f"failover took {fmt_s(failover_s)} (limit {FAILOVER_LIMIT_S} s, target 1 s)"
            )

            resumed_s = await wait_until(
                lambda: stats.batches_acked >= acked_before + 20,
                15,
                "writes resume after the failover",
                cluster,
                extra=f"writer errors {dict(stats.errors)}",
            )
            print(f"writes resumed {fmt_s(resumed_s)} after the new leader was seen")
            print(f"writer: max batch latency {stats.max_batch_s:.2f} s")

            # Its data dir passes the offline check, then it restarts from it.
            rc, out = await cluster.verify_data_dir(old)
            assert rc == 0, f"verify of {old}'s data dir after kill -9:\n{out}"
            assert_has_entries(out, old)
            await cluster.restart(old)
            acked_restart = stats.batches_acked
            await wait_until(
                lambda: stats.batches_acked >= acked_restart + 10,
                10,
                "writes after restart",
                cluster,
            )
            stop.set()
    check_writer(stats, cluster)
    assert_alive(cluster, cluster.ids, "end of test")
    leader = await cluster.leader()
    print(f"writer: {len(stats.acked)} acked, errors {dict(stats.errors)}; leader now {leader}")

    # The old leader recovered from its data dir and caught up: identical logs everywhere.
    records = await assert_same_logs(cluster, cluster.ids, timeout_s=20)
    assert_no_loss(records, stats, cluster)
    restarted = await cluster.status(old)
    assert restarted["first_index"] == 1
    assert restarted["term"] >= 2


# ---------------------------------------------------------------------------- 3. follower catch-up


async def test_follower_kill9_catches_up_after_50k_records(cluster: Cluster) -> None:
    lead = await cluster.leader()
    victim, other = (n for n in cluster.ids if n != lead)
    before = await cluster.status(lead)
    cluster.kill(victim, signal.SIGKILL)
    assert await cluster.wait_exit(victim) == -signal.SIGKILL
    await trio.sleep(0.3)
    assert_alive(cluster, [lead, other], f"after kill -9 of the follower {victim}")

    records = make_records(50_000, "bulk")
    stats = WriterStats()
    t0 = time.monotonic()
    with trio.fail_after(60):
        await write_records(cluster.port(lead), records, stats, batch=500, concurrency=4)
    write_s = time.monotonic() - t0
    check_writer(stats, cluster)
    assert_alive(cluster, [lead, other], f"after kill -9 of the follower {victim}")
    assert len(stats.acked) == 50_000, (len(stats.acked), dict(stats.errors))

    rc, out = await cluster.verify_data_dir(victim)
    assert rc == 0, f"verify of {victim}'s data dir after kill -9:\n{out}"
    t1 = time.monotonic()
    await cluster.restart(victim)
    await cluster.wait_converged(cluster.ids, timeout_s=60)
    catch_up_s = time.monotonic() - t1
    print(
        f"\n50,000 records written in {write_s:.1f} s with {victim} down; "
        f"{victim} caught up in {catch_up_s:.1f} s after restart"
    )
    stored = await assert_same_logs(cluster, cluster.ids, timeout_s=10)
    assert len(stored) == 50_000 + before["records"]
    assert_no_loss(stored, stats, cluster)
    st = await cluster.status(victim)
    assert st["record_index"] >= before["record_index"] + 50_000


# ---------------------------------------------------------------------------- 4. SIGTERM hand-over


async def test_sigterm_leader_hands_over_and_exits_0(cluster: Cluster) -> None:
    old = await cluster.leader()
    survivors = [n for n in cluster.ids if n != old]
    via = survivors[0]
    stats = WriterStats()
    stop = trio.Event()
    exited: list[tuple[int, float]] = []

    async def watch_exit(t0: float) -> None:
        code = await cluster.wait_exit(old, timeout_s=10)
        exited.append((code, trio.current_time() - t0))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(run_writer, cluster.port(via), stats, stop, tag="term"))
            await wait_until(lambda: stats.batches_acked >= 20, 10, "writer warm-up", cluster)
            acked_before = stats.batches_acked

            t0 = trio.current_time()
            cluster.kill(old, signal.SIGTERM)
            nursery.start_soon(watch_exit, t0)
            handover_s, new = await wait_new_leader(cluster, old, survivors, t0)
            await wait_until(lambda: bool(exited), 5, f"{old} exits after SIGTERM", cluster)
            code, exit_s = exited[0]
            print(
                f"\nSIGTERM on leader {old}: {new} leads after {fmt_s(handover_s)}; "
                f"{old} exited with {code} after {fmt_s(exit_s)}"
            )
            assert code == 0, f"exit code {code}\n{cluster.log_tail(old)}"
            assert exit_s < 5.0
            assert "handed leadership" in cluster.logs(old), cluster.log_tail(old)
            assert_alive(cluster, survivors, f"after SIGTERM of the leader {old}")
            assert handover_s < FAILOVER_LIMIT_S, f"hand-over took {fmt_s(handover_s)}"

            resumed_s = await wait_until(
                lambda: stats.batches_acked >= acked_before + 20,
                15,
                "writes resume after the hand-over",
                cluster,
                extra=f"writer errors {dict(stats.errors)}",
            )
            print(
                f"20 more batches {fmt_s(resumed_s)} after the new leader was seen; writer "
                f"max batch latency {stats.max_batch_s:.2f} s, errors {dict(stats.errors)}"
            )
            await cluster.restart(old)
            acked_restart = stats.batches_acked
            await wait_until(
                lambda: stats.batches_acked >= acked_restart + 5,
                10,
                "writes after restart",
                cluster,
            )
            stop.set()
    check_writer(stats, cluster)
    records = await assert_same_logs(cluster, cluster.ids, timeout_s=20)
    assert_no_loss(records, stats, cluster)


# ---------------------------------------------------------------------------- 5. bad input


async def assert_serving(port: int, tag: str) -> None:
    """A normal submit through ``port`` is acked (the node survived what came before)."""
    recs = make_records(3, tag)
    with trio.fail_after(10):
        async with open_client(port) as c:
            reply = await c.submit(recs)
    assert reply["kind"] == "ack", reply
    assert [a["id"] for a in reply["acks"]] == [r["id"] for r in recs], reply
    assert reply["errors"] == []


async def expect_close(ws: Any, payload: bytes | str, timeout_s: float = 5.0) -> tuple[int, str]:
    """Send ``payload``; the node must close the connection; return (code, reason)."""
    with trio.fail_after(timeout_s):
        await ws.send_message(payload)
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
    reason = info.value.reason
    assert reason is not None
    return reason.code, reason.reason or ""


async def test_bad_client_input_is_rejected_and_node_keeps_serving(cluster: Cluster) -> None:
    target = cluster.ids[0]
    port = cluster.port(target)
    await assert_serving(port, "before")

    bad_frames: list[tuple[str, bytes | str, str]] = [
        ("invalid CBOR", b"\xff\x00\x13garbage", "undecodable CBOR"),
        ("truncated CBOR", b"\xa2\x61", "undecodable CBOR"),
        ("oversized frame", b"\x00" * ((2 << 20) + 1), "exceeds"),
        ("text frame", '{"kind": "status", "req": 1}', "text frame"),
        ("CBOR list, not a map", cbor2.dumps([1, 2, 3]), "expected a map"),
        ("no version", cbor2.dumps({"kind": "status", "req": 1}), "version"),
        ("no req", encode("status", {}), "req"),
    ]
    for what, payload, says in bad_frames:
        async with open_raw_ws(port) as ws:
            code, reason = await expect_close(ws, payload)
        assert code == 1008, f"{what}: closed with {code} {reason!r}"
        assert says in reason, f"{what}: reason {reason!r}"
        await assert_serving(port, f"after-{what}")

    # Well-formed requests with bad fields: error bad_request, and the connection stays open.
    with trio.fail_after(20):
        async with open_client(port) as c:
            bad_requests: list[tuple[str, dict[str, Any]]] = [
                ("submit", {"records": "not a list"}),
                ("submit", {"records": {"id": "x"}}),
                ("submit", {"records": [], "ack": "everyone"}),
                ("query", {"limit": "ten"}),
                ("query", {"level": "LOUD"}),
                ("query", {"order": "random"}),
                ("frobnicate", {}),
            ]
            for kind, fields in bad_requests:
                reply = await c.request(kind, fields)
                assert reply["kind"] == "error", (kind, fields, reply)
                assert reply["code"] == "bad_request", (kind, fields, reply)
                assert isinstance(reply["msg"], str)
                assert reply["msg"], reply

            # Bad records: per-record errors; the good records of the batch are stored.
            good = make_records(3, "mixed")
            bad = [
                {**make_records(1, "loud")[0], "level": "LOUD"},
                {**make_records(1, "nested")[0], "fields": {"http": {"status": 200}}},
                {**make_records(1, "nomsg")[0], "msg": 42},
                {**make_records(1, "extra")[0], "color": "red"},
                {"id": "not-a-uuid", "msg": "x"},
            ]
            batch = [good[0], bad[0], good[1], bad[1], bad[2], bad[3], good[2], bad[4]]
            reply = await c.submit(batch)
            assert reply["kind"] == "ack", reply
            assert sorted(a["i"] for a in reply["acks"]) == [0, 2, 6], reply
            assert sorted(e["i"] for e in reply["errors"]) == [1, 3, 4, 5, 7], reply
            errs = {e["i"]: e["error"] for e in reply["errors"]}
            assert "LOUD" in errs[1], errs
            assert "flat" in errs[3], errs
            assert "msg" in errs[4], errs
            assert "color" in errs[5], errs
            assert "UUID" in errs[7], errs

            # The same connection still serves.
            st = await c.status()
            assert st["id"] == target

    await assert_serving(port, "after-bad-requests")
    records = await assert_same_logs(cluster, cluster.ids, timeout_s=10)
    stored = {r["id"] for r in records}
    assert {r["id"] for r in good} <= stored
    assert not {r["id"] for r in bad[:4]} & stored
    assert not [r for r in records if r["msg"] == "x"]


async def test_bad_peer_and_path_are_rejected(cluster: Cluster) -> None:
    target = cluster.ids[0]
    port = cluster.port(target)

    # A peer of another cluster: closed with a reason naming the cluster, and logged.
    async with open_raw_ws(port, "/peer") as ws:
        hello = encode("hello", {"cluster": "other-cluster", "node": "n2", "to": target})
        code, reason = await expect_close(ws, hello)
    assert code == 1008, (code, reason)
    assert "cluster" in reason, reason
    assert "other-cluster" in reason, reason
    await assert_serving(port, "after-wrong-cluster")
    await wait_until(
        lambda: "belongs to cluster 'other-cluster'" in cluster.logs(target),
        5,
        "the node logs the wrong-cluster peer",
        cluster,
    )

    # Other bad hellos: not a hello, an unknown node, garbage.
    for what, payload, says in [
        ("unknown node", encode("hello", {"cluster": "ptest", "node": "n9", "to": target}), "n9"),
        ("wrong target", encode("hello", {"cluster": "ptest", "node": "n2", "to": "n3"}), "n3"),
        ("not a hello", encode("hb", {"src": "n2", "dst": target, "term": 1}), "hello"),
        ("garbage", b"\xff\xfe", "undecodable"),
    ]:
        async with open_raw_ws(port, "/peer") as ws:
            code, reason = await expect_close(ws, payload)
        assert code == 1008, (what, code, reason)
        assert says in reason, (what, reason)
        await assert_serving(port, f"after-peer-{what}")

    # A websocket to an unknown path is rejected at the handshake.
    with trio.fail_after(5), pytest.raises(ConnectionRejected) as rejected:
        async with open_raw_ws(port, "/other"):
            pass
    assert rejected.value.status_code == 404
    await assert_serving(port, "after-bad-path")

    # A plain HTTP GET (not a websocket upgrade) gets an HTTP error, not a hang or a crash.
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(HOST, port)
        async with stream:
            await stream.send_all(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 4"), head[:200]
    await assert_serving(port, "after-plain-http")
    assert_alive(cluster, cluster.ids, "after bad peers and paths")


async def test_peer_link_closing_after_hello_does_not_crash_node(cluster: Cluster) -> None:
    """Regression (it once crashed every linked node): a peer link that says a valid hello
    and then closes (or sends garbage) must only end that link."""
    target = cluster.ids[0]
    port = cluster.port(target)
    other = cluster.ids[1]
    # A valid hello followed by a clean close, like a peer that shuts down.
    async with open_raw_ws(port, "/peer") as ws:
        with trio.fail_after(5):
            await ws.send_message(
                encode("hello", {"cluster": cluster.name, "node": other, "to": target})
            )
            await trio.sleep(0.2)
    await trio.sleep(0.5)
    assert_alive(cluster, [target], "after a peer link closed cleanly")
    await assert_serving(port, "after-peer-close")
    # A valid hello followed by an undecodable frame: close that link (1008), keep running.
    async with open_raw_ws(port, "/peer") as ws:
        with trio.fail_after(5):
            await ws.send_message(
                encode("hello", {"cluster": cluster.name, "node": other, "to": target})
            )
        code, _ = await expect_close(ws, b"\xff")
    assert code == 1008
    assert_alive(cluster, [target], "after garbage on a peer link")
    await assert_serving(port, "after-peer-garbage")


async def test_time_request_with_bad_t1_gets_bad_request(cluster: Cluster) -> None:
    port = cluster.port(cluster.ids[0])
    with trio.fail_after(10):
        async with open_client(port) as c:
            ok = await c.request("time", {"t1": time.time_ns()})
            assert ok["kind"] == "time", ok
            assert ok["t2"] <= ok["t3"], ok
            for fields in ({}, {"t1": "now"}):
                reply = await c.request("time", fields)
                assert reply["kind"] == "error", reply
                assert reply["code"] == "bad_request", reply
            assert (await c.status())["id"] == cluster.ids[0]


async def test_forward_in_flight_when_leader_dies_is_answered_promptly(cluster: Cluster) -> None:
    """SIGSTOP the leader, submit through a follower (it forwards to the stopped leader),
    kill -9 the leader: once a new leader exists the follower must answer the client soon
    (an ack, or a retryable error), not hold the request for its 10 s forward timeout."""
    old = await cluster.leader()
    via, other = (n for n in cluster.ids if n != old)
    recs = make_records(10, "stall")
    replies: list[dict[str, Any]] = []
    with trio.fail_after(30):
        async with open_client(cluster.port(via)) as c:

            async def submit() -> None:
                replies.append(await c.submit(recs, timeout_s=15))

            async with trio.open_nursery() as nursery:
                cluster.kill(old, signal.SIGSTOP)
                nursery.start_soon(submit)
                await trio.sleep(0.05)
                st = await cluster.status(via)
                if st["leader"] != old:
                    pytest.skip(f"precondition: {via} already left {old} ({st['leader']})")
                t_kill = trio.current_time()
                cluster.kill(old, signal.SIGKILL)
                failover_s, new = await wait_new_leader(cluster, old, [via, other], t_kill)
                answered_s = await wait_until(
                    lambda: bool(replies),
                    3.0,
                    f"{via} answers the submit it forwarded to the dead leader {old} "
                    f"(new leader {new} after {fmt_s(failover_s)})",
                    cluster,
                )
    print(f"\nforward in flight: answered {fmt_s(answered_s + failover_s)} after the kill")
    reply = replies[0]
    assert reply["kind"] == "ack" or reply["code"] in ("unavailable", "timeout"), reply


# ---------------------------------------------------------------------------- 6. ack=leader


async def test_ack_leader_records_commit_everywhere(cluster: Cluster) -> None:
    lead = await cluster.leader()
    follower = next(n for n in cluster.ids if n != lead)
    stats = WriterStats()
    sent: list[dict[str, Any]] = []
    with trio.fail_after(30):
        for nid in (lead, follower):
            async with open_client(cluster.port(nid)) as c:
                for b in range(5):
                    recs = make_records(100, f"al-{nid}-{b}")
                    sent += recs
                    reply = await c.submit(recs, ack="leader")
                    assert reply["kind"] == "ack", reply
                    assert reply["errors"] == [], reply
                    assert len(reply["acks"]) == 100
                    for a in reply["acks"]:
                        assert a["id"] == recs[a["i"]]["id"]
                        assert isinstance(a["index"], int)
                        assert isinstance(a["term"], int)
                        assert a["index"] >= 1
                        assert a["term"] >= 1
                        assert a["dup"] is False
                        stats.acked[a["id"]] = (a["index"], a["term"], a["dup"])
                    stats.submitted.update(r["id"] for r in recs)
    records = await assert_same_logs(cluster, cluster.ids, timeout_s=10)
    assert_no_loss(records, stats, cluster)
    at = {r["id"]: (r["index"], r["term"]) for r in records}
    for rid, (index, term, _) in stats.acked.items():
        assert at[rid] == (index, term), (rid, at[rid], index, term)
    assert len(records) == len(sent) == 1000

    # A retry of an acked id with ack=leader is acked as a duplicate at the original index.
    with trio.fail_after(10):
        async with open_client(cluster.port(follower)) as c:
            reply = await c.submit(sent[:5], ack="leader")
    assert reply["kind"] == "ack", reply
    for a in reply["acks"]:
        assert a["dup"] is True, a
        assert a["index"] == at[a["id"]][0], (a, at[a["id"]])


def test_harness_free_ports_are_distinct() -> None:
    from p2plog.testing.ports import free_ports

    ports = free_ports(3)
    assert len(set(ports)) == 3
    for p in ports:  # and really free right after
        with socket.socket() as s:
            s.bind((HOST, p))
