"""The async Client against a real in-process 3-node cluster (and scripted fake nodes for the
fault replies): acks, dedup on retry, per-record errors, coalescing, failover, reads."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from p2plog.client import (
    ClientOptions,
    RecordsRejected,
    SubmitFailed,
    Unreachable,
    make_record,
    open_client,
)
from p2plog.testing.ports import free_ports

from .cluster import LocalCluster, cluster_config
from .fake_node import FakeNode, ack_all

TIMEOUT_S = 10.0
FAST = ClientOptions(connect_timeout_s=1.0, submit_deadline_s=3.0, backoff_min_s=0.01)


async def test_submit_acks_in_order(cluster: LocalCluster) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            [one] = await c.submit(make_record("hello", source="t"))
            acks = await c.submit([make_record(f"m{i}") for i in range(20)])
            assert not one.dup
            assert [a.index for a in acks] == list(range(one.index + 1, one.index + 21))
            rows = await c.query(from_index=one.index)
            assert [r["msg"] for r in rows] == ["hello"] + [f"m{i}" for i in range(20)]
            assert rows[0]["id"] == one.id
            assert rows[0]["source"] == "t"


async def test_a_record_acked_via_the_leader_is_read_at_once_on_a_follower(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Followers learn a new commit index lazily (with the next append, or on the leader's
    next tick: 100 ms here), so a follower read first asks the leader how far it has committed
    and waits to apply that far (the read barrier)."""
    c = LocalCluster(cluster_config(tmp_path, free_ports(3), tick_ms=100), nursery)
    for n in c.config.nodes:
        await c.start(n.id)
    leader = await c.wait_leader()
    follower = next(n for n in c.config.nodes if n.id != leader)
    with trio.fail_after(TIMEOUT_S):
        async with (
            open_client([c.config.by_id[leader].address]) as w,  # type: ignore[index]
            open_client([follower.address]) as r,
        ):
            for i in range(5):
                [a] = await w.submit(make_record(f"m{i}"))
                rows = await r.query(from_index=a.index)
                assert [row["msg"] for row in rows] == [f"m{i}"]


async def test_resubmit_same_id_is_stored_once(cluster: LocalCluster) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            rec = make_record("once")
            [first] = await c.submit(rec)
            [again] = await c.submit(rec)
            [batch] = await c.submit([dict(rec)])
            assert (again.dup, again.index) == (True, first.index)
            assert (batch.dup, batch.index) == (True, first.index)
            rows = await c.query(grep="once")
            assert [r["index"] for r in rows] == [first.index]


async def test_record_without_id_gets_one_in_place(cluster: LocalCluster) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            rec: dict[str, Any] = {"msg": "no id yet"}
            [a] = await c.submit(rec)
            assert rec["id"] == a.id
            [b] = await c.submit(rec)
            assert b.dup


async def test_bad_record_is_reported_and_others_are_stored(cluster: LocalCluster) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            good1, good2 = make_record("good 1"), make_record("good 2")
            bad = {**make_record("bad"), "level": "LOUD"}
            with pytest.raises(RecordsRejected) as info:
                await c.submit([good1, bad, good2])
            err = info.value
            assert [e.i for e in err.errors] == [1]
            assert err.errors[0].id == bad["id"]
            assert "LOUD" in err.errors[0].error
            assert err.acks[1] is None
            assert err.acks[0] is not None
            assert err.acks[2] is not None
            msgs = [r["msg"] for r in await c.query(grep="good")]
            assert msgs == ["good 1", "good 2"]
            with pytest.raises(RecordsRejected):
                await c.submit({"msg": 42})  # a single record through the batcher


async def test_unencodable_and_bad_records_in_later_frames_are_named_by_position(
    cluster: LocalCluster,
) -> None:
    """Records are encoded once on the client: one CBOR cannot carry is refused there, by
    its position in the whole submit, and the others (over several frames) are stored."""
    opts = ClientOptions(frame_records=2)
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses, opts) as c:
            recs = [make_record(f"ok {i}") for i in range(6)]
            recs[1] = {**make_record("odd"), "fields": {"when": object()}}
            recs[4] = {**make_record("bad"), "level": "LOUD"}  # the node refuses it
            with pytest.raises(RecordsRejected) as info:
                await c.submit(recs)
            err = info.value
            assert [e.i for e in err.errors] == [1, 4]
            assert "cannot be encoded as CBOR" in err.errors[0].error
            assert err.errors[1].error.startswith("record 4:")
            assert [a is not None for a in err.acks] == [True, False, True, True, False, True]
            stored = await c.query(grep="ok ")
            assert [r["msg"] for r in stored] == ["ok 0", "ok 2", "ok 3", "ok 5"]
            with pytest.raises(RecordsRejected, match="cannot be encoded"):
                await c.submit({**make_record("odd"), "fields": {"x": object()}})


async def test_concurrent_single_submits_coalesce_into_few_frames(cluster: LocalCluster) -> None:
    n = 300
    acks: list[Any] = []
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses, ClientOptions(linger_ms=5)) as c:

            async def one(i: int) -> None:
                acks.extend(await c.submit(make_record(f"c{i}")))

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)
            st = c.statistics()
    assert len({a.index for a in acks}) == n
    assert st.records_sent == n
    assert st.coalesced_frames == st.frames_sent
    assert st.frames_sent <= n // 10, st


async def test_fails_over_past_a_dead_address(cluster: LocalCluster) -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    with trio.fail_after(TIMEOUT_S):
        async with open_client([dead, *cluster.addresses], FAST) as c:
            [a] = await c.submit(make_record("via failover"))
            st = c.statistics()
    assert a.index > 0
    assert st.address == cluster.addresses[0]


async def test_no_reachable_node() -> None:
    dead = [f"127.0.0.1:{p}" for p in free_ports(2)]
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(Unreachable) as info:
            async with open_client(dead, FAST):
                pass
        assert [a for a, _ in info.value.tried] == dead
        assert "refused" in str(info.value)
        quick = ClientOptions(connect_timeout_s=0.5, submit_deadline_s=0.3, backoff_min_s=0.01)
        async with open_client(dead, quick, lazy=True) as c:
            with pytest.raises(SubmitFailed) as failed:
                await c.submit([make_record("nowhere")])
    assert failed.value.code == "unreachable"
    assert failed.value.acks == [None]


async def test_retries_unavailable_with_the_same_ids(nursery: trio.Nursery) -> None:
    calls: list[list[str]] = []

    def script(msg: dict[str, Any]) -> list[Any]:
        calls.append([r["id"] for r in msg["records"]])
        if len(calls) < 3:
            return [("error", {"code": "unavailable", "msg": "no leader", "retry_after_ms": 20})]
        return [ack_all(msg)]

    fake = FakeNode(script)
    await fake.start(nursery)
    with trio.fail_after(TIMEOUT_S):
        async with open_client([fake.address], FAST) as c:
            acks = await c.submit([make_record("a"), make_record("b")])
            assert c.statistics().retries == 2
    assert len(calls) == 3
    assert calls[0] == calls[1] == calls[2] == [a.id for a in acks]


async def test_resends_only_records_not_acknowledged(nursery: trio.Nursery) -> None:
    seen: list[list[str]] = []

    def script(msg: dict[str, Any]) -> list[Any]:
        recs = msg["records"]
        seen.append([r["id"] for r in recs])
        if len(seen) == 1:
            acks = [{"i": 0, "id": recs[0]["id"], "index": 5, "term": 1, "dup": False}]
            errors = [{"i": 1, "error": "record 1: not acknowledged; retry"}]
            return [("ack", {"acks": acks, "errors": errors})]
        return [ack_all(msg, start_index=6)]

    fake = FakeNode(script)
    await fake.start(nursery)
    with trio.fail_after(TIMEOUT_S):
        async with open_client([fake.address], FAST) as c:
            r0, r1 = make_record("kept"), make_record("lost ack")
            acks = await c.submit([r0, r1])
    assert seen == [[r0["id"], r1["id"]], [r1["id"]]]
    assert [(a.id, a.index) for a in acks] == [(r0["id"], 5), (r1["id"], 6)]


async def test_garbage_from_a_node_fails_over(cluster: LocalCluster, nursery: trio.Nursery) -> None:
    fake = FakeNode(lambda msg: [b"\xff\x00 not cbor"])
    await fake.start(nursery)
    with trio.fail_after(TIMEOUT_S):
        async with open_client([fake.address, *cluster.addresses], FAST) as c:
            [a] = await c.submit(make_record("after garbage"))
            st = c.statistics()
    assert a.index > 0
    assert st.failovers == 1
    assert st.address == cluster.addresses[0]


async def test_non_retryable_error_is_raised_at_once(nursery: trio.Nursery) -> None:
    fake = FakeNode(lambda msg: [("error", {"code": "disk_full", "msg": "no space"})])
    await fake.start(nursery)
    with trio.fail_after(TIMEOUT_S):
        async with open_client([fake.address], FAST) as c:
            with pytest.raises(SubmitFailed) as info:
                await c.submit(make_record("x"))
    assert info.value.code == "disk_full"
    assert len(fake.requests) == 1


async def test_query_pages_and_filters(cluster: LocalCluster) -> None:
    levels = ("debug", "info", "warning", "error")
    recs = [
        make_record(
            f"r{i} {'needle' if i % 7 == 0 else ''}", level=levels[i % 4], source=f"s{i % 3}"
        )
        for i in range(2500)
    ]
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            acks = await c.submit(recs)
            first = acks[0].index
            rows = await c.query(from_index=first, limit=2100)  # 3 pages of <= 1000
            assert [r["index"] for r in rows] == [a.index for a in acks[:2100]]
            everything = await c.query(from_index=first, limit=10_000)
            assert len(everything) == 2500
            errors = await c.query(from_index=first, level="error", limit=10_000)
            assert {r["level"] for r in errors} == {"error"}
            assert len(errors) == 625
            warn_up = await c.query(from_index=first, level="warning", limit=10_000)
            assert len(warn_up) == 1250
            src = await c.query(from_index=first, source="s1", grep="needle", limit=10_000)
            expect = [f"r{i} needle" for i in range(2500) if i % 3 == 1 and i % 7 == 0]
            assert [r["msg"] for r in src] == expect
            window = await c.query(from_index=first + 10, to_index=first + 19)
            assert [r["index"] for r in window] == list(range(first + 10, first + 20))
            # Time filters apply to ts_corrected (ts plus this client's measured clock offset).
            t_mid = everything[1000]["ts_corrected"]
            since = await c.query(from_index=first, since=t_mid, limit=10_000)
            assert since[0]["id"] == recs[1000]["id"]
            until = await c.query(from_index=first, until=t_mid, limit=10_000)
            assert len(until) == 1000


async def test_query_since_seeks_and_fields_are_checked_on_the_node(
    cluster: LocalCluster,
) -> None:
    """``since`` starts the scan where the time range can start (``state.time_index``): the
    rows are those of a full scan, a record a minute ahead of its ingest time included; field
    filters hold on the node."""
    now = time.time_ns()
    hour = 3600 * 10**9
    recs = [
        make_record(f"old {i}", ts=now - hour, fields={"user": "ann", "n": i}) for i in range(5000)
    ]
    ahead = make_record("from the future", ts=now + 60 * 10**9, fields={"user": "cy"})
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            first = (await c.submit([*recs, ahead]))[0].index
            await trio.sleep(1.5)  # past the seek slack: those are behind the seek point
            since = time.time_ns() - 200_000_000
            new = [
                make_record(f"new {i}", fields={"user": "bob" if i % 2 else "ann", "n": i})
                for i in range(50)
            ]
            await c.submit(new)
            rows = await c.query(from_index=first, since=since, limit=10_000)
            full = [
                r
                for r in await c.query(from_index=first, limit=10_000)
                if (r["ts_corrected"] or r["ingest_ts"]) >= since
            ]
            assert [r["index"] for r in rows] == [r["index"] for r in full]
            assert [r["msg"] for r in rows] == ["from the future"] + [f"new {i}" for i in range(50)]
            ev = await c.query(from_index=first, since=since, order="event", limit=10_000)
            full_ev = [
                r
                for r in await c.query(from_index=first, order="event", limit=10_000)
                if (r["ts_corrected"] or r["ingest_ts"]) >= since
            ]
            assert [(r["index"], r["late"]) for r in ev] == [
                (r["index"], r["late"]) for r in full_ev
            ]
            assert {r["msg"] for r in ev} == {r["msg"] for r in rows}
            bob = await c.query(from_index=first, fields={"user": "bob"}, limit=10_000)
            assert [r["msg"] for r in bob] == [f"new {i}" for i in range(1, 50, 2)]
            both = await c.query(from_index=first, fields={"user": "ann", "n": 4}, limit=10)
            assert [r["msg"] for r in both] == ["old 4", "new 4"]


async def test_query_event_order(cluster: LocalCluster) -> None:
    now = time.time_ns()
    recs = [make_record(f"e{i}", ts=now - i * 1000) for i in range(5)]
    # A year ahead of its ingest time: absurd, so emitted at once (flagged), never waited for.
    absurd = make_record("absurd", ts=now + 365 * 86_400 * 10**9)
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            first = (await c.submit([*recs, absurd]))[0].index
            rows = await c.query(from_index=first, order="event")
    assert [r["msg"] for r in rows] == ["absurd", "e4", "e3", "e2", "e1", "e0"]
    assert rows[0]["absurd"] is True
    assert rows[0]["late"] is True
    assert not any(r["late"] for r in rows[1:])


async def test_status_and_clock_offset(cluster: LocalCluster) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            st = await c.status()
            while st["leader"] is None:
                # Three nodes and the client share one process with 10 ms ticks: under CPU
                # load a re-election can be under way at the instant we ask.
                await trio.sleep(0.05)
                st = await c.status()
            off = await c.clock_offset()
    assert st["id"] == "n1"
    assert st["leader"] in cluster.nodes
    assert {"role", "term", "commit_index", "applied_index"} <= set(st)
    assert off.delay_ns >= 0
    assert abs(off.offset_ns) < 50_000_000  # same host: same clock, within the round trip


def test_make_record_shape() -> None:
    r = make_record("m", level="error", source="s", fields={"k": 1}, ts=5)
    assert uuid.UUID(r["id"]).version == 4
    assert r == {
        "id": r["id"],
        "ts": 5,
        "level": "error",
        "source": "s",
        "msg": "m",
        "fields": {"k": 1},
    }
    with pytest.raises(ValueError, match="LOUD"):
        make_record("m", level="LOUD")


def test_import_p2plog_is_cheap() -> None:
    code = (
        "import sys, p2plog; assert 'trio' not in sys.modules, 'trio imported eagerly'; "
        "assert p2plog.Client.__name__ == 'Client'; assert 'trio' in sys.modules; "
        "print(sorted(p2plog.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert "LogHandler" in out.stdout


async def test_records_carry_corrected_time_and_status_reports_the_clock(
    cluster: LocalCluster,
) -> None:
    """Issue 6 wiring: the node stamps ts_corrected (ts + the client's measured offset) and a
    clock_uncertain flag, measures its peers' offsets, and says which clock it runs on."""
    rec = make_record("timed", ts=time.time_ns())
    with trio.fail_after(TIMEOUT_S):
        async with open_client(cluster.addresses) as c:
            (ack,) = await c.submit([rec])
            (row,) = await c.query(from_index=ack.index, to_index=ack.index)
            st = await c.status()
            while not st["clock"]["peer_offsets_ms"]:
                await trio.sleep(0.1)  # the first peer time probes go out within a second
                st = await c.status()
    assert row["ts"] == rec["ts"]
    assert abs(row["ts_corrected"] - rec["ts"]) < 50_000_000  # one host: same clock
    assert row["clock_uncertain"] is False
    clock = st["clock"]
    assert "system clock" in clock["source"]
    assert clock["clock_uncertain"] is False
    assert all(abs(v) < 50 for v in clock["peer_offsets_ms"].values())
