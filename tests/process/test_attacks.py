"""Attacks on a real 3-node cluster on 127.0.0.1, one test per way a stranger (or a member's
misbehaving process) once took nodes down or forged data (issue 13's table).

Each test starts a fresh cluster with a cluster secret and client tokens, writes some records,
attacks, and then shows three things: the attack was refused (the connection closed with a
reason, the request answered with an error), the cluster still serves (a normal submit is acked
on every node), and the committed log is identical on every node and unchanged except for the
test's own legitimate writes. Every wait is bounded.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from p2plog.testing.proc import NodeEntry, write_peers_toml

from .attacker import STRANGER, closed_reason, peer_link, raft, rss_mb, secret_of, send_all
from .checks import assert_alive, assert_same_logs, assert_serving, wait_until
from .conftest import started
from .harness import (
    Cluster,
    Credentials,
    Secured,
    encode,
    log_key,
    make_records,
    open_client,
    open_raw_ws,
)

pytestmark = pytest.mark.slow
TOKENS = {"writer": "write", "reader": "read"}


@pytest.fixture
async def secured(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, secured=Secured(tokens=TOKENS), cluster_keys={"max_conn_requests": 64})
    async with started(c, request):
        yield c


async def baseline(cluster: Cluster) -> list[tuple[str, int, int]]:
    """Records through every node, then the log every node agrees on."""
    for nid in cluster.ids:
        await assert_serving(cluster.port(nid), f"before-{nid}")
    return log_key(await assert_same_logs(cluster, cluster.ids))


async def still_fine(cluster: Cluster, before: list[tuple[str, int, int]], when: str) -> None:
    """Alive, serving through every node, one identical log that extends ``before`` only by
    records the test wrote itself (``make_records``: source ``test.<tag>``), none forged."""
    assert_alive(cluster, cluster.ids, when)
    for nid in cluster.ids:
        await assert_serving(cluster.port(nid), f"after-{nid}")
    after = await assert_same_logs(cluster, cluster.ids)
    assert log_key(after)[: len(before)] == before, f"{when}: the committed log changed"
    forged = [r for r in after[len(before) :] if not r["source"].startswith("test.")]
    assert not forged, f"{when}: records nobody legitimate wrote: {forged[:3]}"


async def terms(cluster: Cluster) -> dict[str, int]:
    return {nid: (await cluster.status(nid))["term"] for nid in cluster.ids}


def as_token(cluster: Cluster, name: str | None) -> Credentials:
    return Credentials(cluster.client_ssl, cluster.tokens[name] if name else None)


# ------------------------------------------------------------------- rows of the table


@pytest.mark.parametrize("where", ["field", "ack", "v", "clock_offset_ns", "grep", "req"])
async def test_a_bignum_closes_only_that_connection(secured: Cluster, where: str) -> None:
    """Row 1: one frame holding 10**5000 made the node exit (formatting the error raised
    ValueError). Now CBOR tags are refused at decoding: that connection closes, nothing else."""
    before = await baseline(secured)
    big = cbor2.CBORTag(2, (10**5000).to_bytes(2077, "big"))
    rec = {**make_records(1, "big")[0]}
    fields: dict[str, Any] = {"v": 1, "kind": "submit", "req": 1, "records": [rec]}
    if where == "field":
        rec["fields"] = {"n": big}
    elif where == "grep":
        fields = {"v": 1, "kind": "query", "req": 1, "grep": big}
    else:
        fields[where] = big
    for nid in secured.ids:  # every node at once: two frames took the majority once
        async with open_raw_ws(secured.port(nid), creds=as_token(secured, "writer")) as ws:
            await ws.send_message(cbor2.dumps(fields))
            code, reason = await closed_reason(ws)
        assert code == 1008, reason
        assert "CBOR tags" in reason, reason
    await still_fine(secured, before, f"after a bignum in {where}")
    assert "closing client" in secured.logs(secured.ids[0])


async def test_a_huge_term_never_reaches_raft(secured: Cluster) -> None:
    """Row 2: a heartbeat with term 2**64 - 1 crashed two nodes storing it, on every restart.
    A stranger does not get past the handshake; a member's process that sends it anyway is
    cut off at decoding (terms stop at 2**62, the on-disk fields are u64)."""
    before = await baseline(secured)
    t0 = await terms(secured)
    lead = await secured.leader()
    target = next(n for n in secured.ids if n != lead)
    hb = raft("hb", src=lead, dst=target, term=2**64 - 1, c=0)
    async with peer_link(secured, target, lead, None) as ws:
        assert await send_all(ws, [hb]) == "authentication failed"
    async with peer_link(secured, target, lead, secret_of(secured)) as ws:
        reason = await send_all(ws, [hb])
    assert reason is not None
    assert "<= 4611686018427387904" in reason, reason
    assert await terms(secured) == t0
    await secured.restart(target)  # nothing of it was stored: the node starts as before
    await secured.leader()
    await still_fine(secured, before, "after a huge term")


async def test_a_forged_forward_is_not_stored(secured: Cluster) -> None:
    """Row 3: a 1-byte forwarded body was committed unchecked and crashed every node applying
    it. A stranger is refused at the handshake; a member's forward is checked exactly as a
    client's submit (``record.revalidate``) and refused whole."""
    before = await baseline(secured)
    lead = await secured.leader()
    follower = next(n for n in secured.ids if n != lead)
    rid = uuid.uuid4().bytes
    bad = [b"\x01", b"\x00" * 8 + cbor2.dumps({"x": 1}), b"\x00" * 8 + b"\xff\xff"]
    for body in bad:
        fwd = raft("fwd", fid=7, ack="quorum", ids=rid, bodies=[body])
        async with peer_link(secured, lead, follower, None) as ws:
            assert await send_all(ws, [fwd]) == "authentication failed"
        async with peer_link(secured, lead, follower, secret_of(secured)) as ws:
            assert await send_all(ws, [fwd]) is None  # answered on the real link, not closed
    await wait_until(
        lambda: secured.logs(lead).count(f"refused a forward from {follower}") >= 1,
        5,
        "the leader logs the refused forward",
        secured,
    )
    await still_fine(secured, before, "after forged forwards")


@pytest.mark.parametrize("term", ["leader's", "next"])
async def test_forged_append_entries_are_refused(secured: Cluster, term: str) -> None:
    """Rows 4 and 5: a forged AppendEntries (with the next term, claiming leadership; or
    with the leader's own) replaced an acked record, or served records no other node had.
    Only members speak on /peer now."""
    before = await baseline(secured)
    lead = await secured.leader()
    st = await secured.status(lead)
    t = st["term"] + (1 if term == "next" else 0)
    entry = [t, st["last_index"] + 1, b""]
    ae = {"src": lead, "term": t, "pi": st["last_index"], "pt": st["term"], "c": 0, "e": [entry]}
    for target in (n for n in secured.ids if n != lead):
        async with peer_link(secured, target, lead, None) as ws:
            frame = raft("ae", dst=target, **ae)
            assert await send_all(ws, [frame]) == "authentication failed"
    await still_fine(secured, before, "after forged appends")


async def test_forged_forward_acks_are_ignored(secured: Cluster) -> None:
    """Row 6: forged ``fwda`` replies (forward ids were sequential) acked real clients for
    records never stored. Forward ids are random 63-bit numbers now, and a reply counts only
    from the peer the forward went to; a stranger does not even get a link."""
    before = await baseline(secured)
    lead = await secured.leader()
    via, other = (n for n in secured.ids if n != lead)
    acks: list[dict[str, Any]] = []
    stop = trio.Event()

    async def client() -> None:
        async with open_client(secured.port(via), creds=as_token(secured, "writer")) as c:
            for k in range(40):
                reply = await c.submit(make_records(5, f"legit{k}"))
                assert reply["kind"] == "ack", reply
                acks.extend(reply["acks"])
        stop.set()

    async def forger(secret: bytes | None) -> None:
        fwda = [raft("fwda", fid=f, runs=[[0, 5, 999999, 77]], acks=[]) for f in range(1, 200)]
        async with peer_link(secured, via, other if secret else lead, secret) as ws:
            for f in fwda:
                if stop.is_set():
                    break
                try:
                    await ws.send_message(f)
                except ConnectionClosed:
                    return
                await trio.sleep(0.005)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            nursery.start_soon(forger, None)
            nursery.start_soon(forger, secret_of(secured))  # a member, not the leader
    stored = {i: (index, t) for i, index, t in log_key(await secured.query_all(via))}
    assert len(acks) == 200
    for a in acks:
        assert stored[a["id"]] == (a["index"], a["term"]), a
    assert all(a["index"] != 999999 for a in acks)
    await still_fine(secured, before, "after forged forward acks")


async def test_forged_votes_and_timeout_now_do_not_move_the_term(secured: Cluster) -> None:
    """Row 7: ~35 forged TimeoutNow / vote requests a second took the term from 1 to 47 and
    made most writes fail. Strangers' links end at the handshake."""
    before = await baseline(secured)
    t0 = await terms(secured)
    lead = await secured.leader()
    errors: list[str] = []

    async def flood() -> None:
        for k in range(105):  # 35/s for 3 s
            target = secured.ids[k % 3]
            src = next(n for n in secured.ids if n != target)
            kind = "tn" if k % 2 else "rv"
            extra = {} if kind == "tn" else {"li": 10**6, "lt": 10**6, "pre": False, "tr": True}
            msg = raft(kind, src=src, dst=target, term=t0[target] + 1 + k, **extra)
            async with peer_link(secured, target, src, None) as ws:
                assert await send_all(ws, [msg]) == "authentication failed"
            await trio.sleep(1 / 35)

    async def writes() -> None:
        async with open_client(secured.port(lead), creds=as_token(secured, "writer")) as c:
            for k in range(30):
                reply = await c.submit(make_records(2, f"legit{k}"))
                if reply["kind"] != "ack":
                    errors.append(reply["code"])
                await trio.sleep(0.1)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            nursery.start_soon(writes)
    assert errors == []
    assert await terms(secured) == t0
    await still_fine(secured, before, "after a vote flood")


async def test_a_client_that_never_reads_loses_its_connection_not_the_node_its_memory(
    secured: Cluster,
) -> None:
    """Row 8: a client that submitted 500-record frames and never read its acks grew the node
    to ~1 GB and slowed everyone else. Requests in flight per connection are bounded (the node
    stops reading), and replies that wait too long end that connection, with the reason."""
    before = await baseline(secured)
    lead = await secured.leader()
    port = secured.port(lead)
    rss0 = rss_mb(secured, lead)
    peak = rss0
    other_s: list[float] = []
    creds = as_token(secured, "writer")

    async def hog() -> str:
        async with open_raw_ws(port, creds=creds, max_message_size=1 << 16) as ws:
            try:
                with trio.fail_after(40):
                    for k in range(100_000):
                        recs = make_records(500, f"hog{k}")
                        f = {"req": k, "ack": "quorum", "records": recs}
                        await ws.send_message(encode("submit", f))
            except (ConnectionClosed, trio.BrokenResourceError) as e:
                return str(getattr(e, "reason", e))
            except trio.TooSlowError:
                return "the node kept reading"
        return "?"

    async def others() -> None:
        async with open_client(port, creds=creds) as c:
            for k in range(15):
                t = time.monotonic()
                reply = await c.submit(make_records(3, f"legit{k}"), timeout_s=10)
                assert reply["kind"] == "ack", reply
                other_s.append(time.monotonic() - t)
                await trio.sleep(0.5)

    async def watch(done: trio.Event) -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(secured, lead))
            await trio.sleep(0.1)

    done = trio.Event()
    result: list[str] = []
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, done)
            nursery.start_soon(others)

            async def run_hog() -> None:
                result.append(await hog())

            await run_hog()
            await wait_until(lambda: len(other_s) >= 15, 30, "other clients finish", secured)
            done.set()
    p50 = sorted(other_s)[len(other_s) // 2]
    print(
        f"\nnever-reading client: RSS {rss0:.0f} -> peak {peak:.0f} MB; client saw {result}; "
        f"others' submits p50 {p50 * 1000:.0f} ms, max {max(other_s) * 1000:.0f} ms"
    )
    assert peak < 150, f"the node grew to {peak:.0f} MB"
    logs = secured.logs(lead)
    assert "does not read its replies" in logs or "for this client to read" in logs, logs[-3000:]
    await still_fine(secured, before, "after a client that never reads")


async def test_a_huge_query_comes_in_bounded_pages(secured: Cluster) -> None:
    """Row 9: a query with a huge limit over 48 KB records was one 50 MB reply frame
    (+200 MB per query) and lost elections. Pages are bounded in bytes as well as count."""
    lead = await secured.leader()
    big = [{**r, "msg": "x" * 48_000} for r in make_records(400, "big")]
    async with open_client(secured.port(lead), creds=as_token(secured, "writer")) as c:
        for k in range(0, len(big), 20):
            reply = await c.submit(big[k : k + 20], timeout_s=20)
            assert reply["kind"] == "ack", reply
    before = log_key(await assert_same_logs(secured, secured.ids))
    t0 = await terms(secured)
    frames: list[int] = []
    async with open_raw_ws(secured.port(lead), creds=as_token(secured, "reader")) as ws:
        nxt, got = 1, 0
        with trio.fail_after(60):
            for req in range(1, 1000):
                q = {"req": req, "from_index": nxt, "limit": 10**9}
                await ws.send_message(encode("query", q))
                raw = await ws.get_message()
                frames.append(len(raw))
                page = cbor2.loads(raw)
                assert page["kind"] == "batch", page
                got += len(page["records"])
                if page["done"]:
                    break
                nxt = page["next_index"]
    print(f"\nhuge query: {got} records in {len(frames)} pages, largest {max(frames)} bytes")
    assert got == len(before)
    assert max(frames) < 1.5 * (1 << 20)
    assert len(frames) > 10
    assert await terms(secured) == t0
    assert rss_mb(secured, lead) < 200
    await still_fine(secured, before, "after a huge query")


@pytest.mark.parametrize("path", ["/client", "/peer"])
async def test_giant_frames_are_cut_off_while_they_arrive(secured: Cluster, path: str) -> None:
    """Row 10: a few connections each sending 60 MB of a 63 MB frame buffered 180 MB before
    any limit applied. The limit is enforced as bytes arrive: 64 KiB for a client without a
    token or a peer before its handshake, 2 MiB for a client with a token."""
    before = await baseline(secured)
    lead = await secured.leader()
    port = secured.port(lead)
    rss0 = rss_mb(secured, lead)
    frame = b"\x00" * (60 << 20)
    creds = [STRANGER, as_token(secured, "writer")] if path == "/client" else [STRANGER]
    outcomes: list[str] = []

    async def one(c: Credentials) -> None:
        async with open_raw_ws(port, path, creds=c) as ws:
            try:
                with trio.fail_after(20):
                    await ws.send_message(frame)
                    await ws.get_message()
            except (ConnectionClosed, trio.BrokenResourceError) as e:
                outcomes.append(str(getattr(e, "reason", e)))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for c in creds * 3:
                nursery.start_soon(one, c)
    grown = rss_mb(secured, lead) - rss0
    print(f"\ngiant frames on {path}: {outcomes}; RSS +{grown:.0f} MB")
    assert len(outcomes) == len(creds) * 3
    assert grown < 40, f"+{grown:.0f} MB"
    await still_fine(secured, before, f"after giant frames on {path}")


async def test_idle_connections_cannot_exhaust_descriptors(tmp_path: Path, request: Any) -> None:
    """Row 11: ~1,010 idle connections under a 1,024-descriptor limit made the node refuse
    new clients and log an EMFILE traceback every 100 ms. Now it keeps descriptors for its
    peers and storage (max_connections is lowered to fit), refuses the rest with a reason
    (HTTP 503, or a closed connection past the TCP cap), and closes idle connections."""

    class Limited(Cluster):
        def node_command(self, nid: str) -> list[str]:
            cmd = super().node_command(nid)
            return ["prlimit", "--nofile=1024:1024", *cmd] if nid == "n1" else cmd

    c = Limited(
        tmp_path, secured=Secured(tokens=TOKENS), cluster_keys={"client_idle_timeout_s": 20}
    )
    async with started(c, request):
        before = await baseline(c)
        port = c.port("n1")
        outcome: dict[str, int] = {}
        upgrade = (  # with a token: anonymous connections have a small pool of their own
            b"GET /client HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer "
            + c.tokens["writer"].encode()
            + b"\r\n\r\n"
        )
        done = trio.Event()
        answered: list[bytes] = []

        async def idle() -> None:
            # A raw TCP client that completes the websocket handshake and then says nothing
            # (cheaper for this test process than a websocket library's client).
            got = b"closed"
            try:
                async with await trio.open_tcp_stream("127.0.0.1", port) as s:
                    await s.send_all(upgrade)
                    got = (await s.receive_some(64))[:12] or b"closed"
                    answered.append(got)
                    if got.startswith(b"HTTP/1.1 101"):
                        with trio.move_on_after(30):
                            await done.wait()
                        if not done.is_set():
                            got = b"timed out"
            except (OSError, trio.BrokenResourceError):
                got = b"reset"
            key = got.decode(errors="replace")
            outcome[key] = outcome.get(key, 0) + 1

        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for _ in range(1010):
                    nursery.start_soon(idle)
                await wait_until(lambda: len(answered) >= 1010, 60, "the flood is answered", c)
                # While n1 is full: a new client is told why, and the cluster serves.
                with pytest.raises(ConnectionRejected) as info:
                    async with open_raw_ws(port, creds=as_token(c, "writer")):
                        pass
                assert info.value.status_code == 503
                await assert_serving(c.port("n2"), "while-n1-full")
                done.set()
        print(f"\nidle flood of 1010 connections on n1 (ulimit -n 1024): {outcome}")
        assert outcome.pop("HTTP/1.1 101") == 768, outcome  # max_connections, lowered to fit
        assert outcome.get("HTTP/1.1 503", 0) > 0, outcome  # told why
        assert sum(outcome.values()) == 242, outcome  # the rest: 503, or closed at the TCP cap
        logs = c.logs("n1")
        assert "EMFILE" not in logs, logs[-2000:]
        assert "Too many open files" not in logs, logs[-2000:]
        assert "max_connections 1024 lowered to 768" in logs
        assert "768 client connections open, the most this node takes" in logs
        await c.leader()
        await still_fine(c, before, "after an idle-connection flood")


async def test_strangers_get_nothing_over_tls(tmp_path: Path, request: Any) -> None:
    """Row 12: anyone who reached the port read every record, in the clear; ``status`` listed
    every peer's id and address; hello refusals echoed the cluster name. With TLS and tokens:
    no plain connection, no anonymous read or write, anonymous status without peers, a bare
    "authentication failed" on /peer, roles enforced."""
    c = Cluster(tmp_path, secured=Secured(tls=True, tokens=TOKENS))
    async with started(c, request):
        before = await baseline(c)
        port = c.port("n1")
        with trio.fail_after(15), pytest.raises((HandshakeError, OSError, ConnectionClosed)):
            async with open_raw_ws(port, creds=STRANGER):
                pass  # plain ws:// to a wss:// port
        with trio.fail_after(5), pytest.raises(ConnectionRejected) as rejected:
            async with open_raw_ws(port, creds=Credentials(c.client_ssl, "p2p_wrong")):
                pass
        assert rejected.value.status_code == 401
        anon = Credentials(c.client_ssl, None)
        async with open_client(port, creds=anon) as cl:
            st = await cl.status()
            assert not {"peers", "leader", "address", "security"} & set(st), st
            assert "peer_offsets_ms" not in st["clock"], st
            for kind, fields in (("query", {}), ("submit", {"records": make_records(1, "x")})):
                reply = await cl.request(kind, fields)
                assert (reply["kind"], reply["code"]) == ("error", "unauthorized"), reply
                assert "token" in reply["msg"]
        async with open_client(port, creds=as_token(c, "writer")) as cl:
            assert (await cl.request("query", {}))["code"] == "forbidden"
            assert "leader" in await cl.status()
        async with open_client(port, creds=as_token(c, "reader")) as cl:
            reply = await cl.submit(make_records(1, "x"))
            assert reply["code"] == "forbidden", reply
            assert len((await cl.request("query", {}))["records"]) == len(before)
        async with open_raw_ws(port, "/peer", creds=anon) as ws:
            with trio.fail_after(5):
                challenge = cbor2.loads(await ws.get_message())
            bad = {"node": "n2", "to": "n1", "nonce": b"\x00" * 16, "proof": b"\x00" * 32}
            await ws.send_message(encode("hello", bad))
            code, reason = await closed_reason(ws)
        assert (code, reason) == (1008, "authentication failed")
        assert c.name not in reason
        assert "n2" not in reason
        assert challenge["kind"] == "challenge"
        await still_fine(c, before, "after strangers tried TLS")


# ------------------------------------------------------------------- smaller findings


async def test_protocol_violations_close_the_connection_with_a_reason(secured: Cluster) -> None:
    """Trailing bytes, unknown keys and kinds, wrong types: ``error bad_request`` naming the
    field when the request id can be read, then the connection closes (1008, the reason)."""
    before = await baseline(secured)
    port = secured.port(secured.ids[0])
    w = as_token(secured, "writer")
    cases: list[tuple[str, bytes | str, str]] = [
        ("invalid CBOR", b"\xff\x00\x13garbage", "undecodable CBOR"),
        ("trailing bytes", encode("status", {"req": 1}) + b"\x00", "bytes after the end"),
        ("oversized", b"\x00" * ((2 << 20) + 1), ""),
        ("text frame", '{"kind": "status", "req": 1}', "text frame"),
        ("a list", cbor2.dumps([1, 2, 3]), "expected a map"),
        ("no version", cbor2.dumps({"kind": "status", "req": 1}), "version"),
        ("no req", encode("status", {}), "req"),
        ("unknown kind", encode("frobnicate", {"req": 1}), "unknown message kind"),
        ("unknown submit key", encode("submit", {"req": 1, "records": [], "x": 1}), "`x`"),
        ("records not a list", encode("submit", {"req": 1, "records": "no"}), "records"),
        ("bad ack", encode("submit", {"req": 1, "records": [], "ack": "all"}), "ack"),
        ("bad level", encode("query", {"req": 1, "level": "LOUD"}), "level"),
        ("limit text", encode("query", {"req": 1, "limit": "ten"}), "limit"),
        ("t1 text", encode("time", {"req": 1, "t1": "now"}), "t1"),
        (
            "huge offset",
            encode("submit", {"req": 1, "records": [], "clock_offset_ns": 10**17}),
            "clock_offset_ns",
        ),
    ]
    for what, payload, says in cases:
        async with open_raw_ws(port, creds=w) as ws:
            with trio.fail_after(5):
                await ws.send_message(payload)
            replies: list[dict[str, Any]] = []
            closed: ConnectionClosed | None = None
            with trio.fail_after(5):
                while closed is None:
                    try:
                        replies.append(cbor2.loads(await ws.get_message()))
                    except ConnectionClosed as e:
                        closed = e
            assert closed.reason is not None
            code, reason = closed.reason.code, closed.reason.reason or ""
        assert code in (1008, 1009), (what, code, reason)
        assert says in reason, (what, reason)
        for r in replies:
            assert (r["kind"], r["code"]) == ("error", "bad_request"), (what, r)
    await still_fine(secured, before, "after protocol violations")


async def test_bad_records_get_per_record_errors_and_the_rest_are_stored(
    secured: Cluster,
) -> None:
    before = await baseline(secured)
    port = secured.port(secured.ids[0])
    good = make_records(3, "ok-mixed")
    bad = [
        {**make_records(1, "loud")[0], "level": "LOUD"},
        {**make_records(1, "nested")[0], "fields": {"http": {"status": 200}}},
        {**make_records(1, "nomsg")[0], "msg": 42},
        {**make_records(1, "extra")[0], "color": "red"},
        {"id": "not-a-uuid", "msg": "x"},
        {**make_records(1, "nan")[0], "fields": {"ratio": math.nan}},
        {**make_records(1, "inf")[0], "fields": {"ratio": math.inf}},
    ]
    batch = [good[0], bad[0], good[1], *bad[1:4], good[2], *bad[4:]]
    async with open_client(port, creds=as_token(secured, "writer")) as c:
        reply = await c.submit(batch)
        assert reply["kind"] == "ack", reply
        assert sorted(a["i"] for a in reply["acks"]) == [0, 2, 6], reply
        errs = {e["i"]: e["error"] for e in reply["errors"]}
        assert sorted(errs) == [1, 3, 4, 5, 7, 8, 9]
        for i, says in ((1, "LOUD"), (3, "flat"), (4, "msg"), (5, "color"), (7, "UUID")):
            assert says in errs[i], errs
        assert "JSON cannot carry" in errs[8], errs
        assert "JSON cannot carry" in errs[9], errs
        assert (await c.status())["id"] == secured.ids[0]  # the connection stays
    after = await assert_same_logs(secured, secured.ids)
    assert {r["id"] for r in good} <= {r["id"] for r in after}
    assert len(after) == len(before) + 3


async def test_paths_and_plain_http_are_refused(secured: Cluster) -> None:
    port = secured.port(secured.ids[0])
    with trio.fail_after(5), pytest.raises(ConnectionRejected) as rejected:
        async with open_raw_ws(port, "/other", creds=STRANGER):
            pass
    assert rejected.value.status_code == 404
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 4"), head[:200]
    assert_alive(secured, secured.ids, "after bad paths")


async def test_a_peer_link_that_closes_or_babbles_after_the_handshake(secured: Cluster) -> None:
    """A member's link that closes right after its handshake, or sends garbage, ends only
    that link (it once crashed every linked node)."""
    before = await baseline(secured)
    target, other = secured.ids[0], secured.ids[1]
    async with peer_link(secured, target, other, secret_of(secured)):
        await trio.sleep(0.2)
    async with peer_link(secured, target, other, secret_of(secured)) as ws:
        reason = await send_all(ws, [b"\xff"])
    assert reason is not None
    assert "undecodable" in reason
    await still_fine(secured, before, "after a babbling peer")


async def test_an_unwritable_data_dir_is_named_as_such(tmp_path: Path) -> None:
    """It was reported as "cannot listen on ...; is another node using that port?"."""
    (tmp_path / "file").write_text("not a directory")
    cfg = write_peers_toml(tmp_path / "peers.toml", {}, [NodeEntry("n1", "127.0.0.1:1", "file/n1")])
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "p2plog", "run", "--config", str(cfg), "--node", "n1"],
            stdin=subprocess.DEVNULL,
            capture_stderr=True,
            check=False,
        )
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "cannot open the data directory" in err, err
    assert "listen" not in err, err


async def test_a_reused_id_with_other_content_is_refused_not_acked_as_a_dup(
    secured: Cluster,
) -> None:
    """An id sent again with other content was acked ``dup=true`` with no sign the content
    differed. A true retry (same content, through any node) is still a duplicate."""
    lead = await secured.leader()
    follower = next(n for n in secured.ids if n != lead)
    first = make_records(2, "ok-orig")
    w = as_token(secured, "writer")
    async with open_client(secured.port(lead), creds=w) as c:
        reply = await c.submit(first)
        assert reply["kind"] == "ack", reply
    stored = {a["id"]: a["index"] for a in reply["acks"]}
    for nid in (lead, follower):
        async with open_client(secured.port(nid), creds=w) as c:
            retry = await c.submit([first[0]])  # the same record: a retry
            assert retry["acks"][0]["dup"] is True, retry
            assert retry["acks"][0]["index"] == stored[first[0]["id"]]
            other = {**first[1], "msg": "something else"}
            reply = await c.submit([make_records(1, "ok-new")[0], other])
            assert [a["i"] for a in reply["acks"]] == [0], (nid, reply)
            [err] = reply["errors"]
            assert err["i"] == 1
            assert f"stored already, at index {stored[first[1]['id']]}" in err["error"], err
            assert "with other content" in err["error"], err
    after = await assert_same_logs(secured, secured.ids)
    assert [r["msg"] for r in after if r["id"] == first[1]["id"]] == [first[1]["msg"]]


async def test_strangers_without_a_token_get_a_small_pool_of_their_own(
    secured: Cluster,
) -> None:
    """Anonymous connections (allowed: status and time) cannot take the slots of clients
    with a token: they have a pool of 64 of their own, and a short idle timeout."""
    before = await baseline(secured)
    port = secured.port(secured.ids[0])
    held, refused = 0, 0
    done = trio.Event()

    async def anon() -> None:
        nonlocal held, refused
        try:
            async with open_raw_ws(port, creds=STRANGER):
                held += 1
                with trio.move_on_after(10):
                    await done.wait()
        except ConnectionRejected as e:
            refused += e.status_code == 503

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(80):
                nursery.start_soon(anon)
            await wait_until(lambda: held + refused >= 80, 20, "anonymous dials", secured)
            async with open_client(port, creds=as_token(secured, "writer")) as c:
                assert (await c.submit(make_records(1, "with-token")))["kind"] == "ack"
            done.set()
    assert (held, refused) == (64, 16)
    await still_fine(secured, before, "after an anonymous flood")


async def test_tails_are_bounded_and_a_cancel_right_behind_a_tail_ends_it(
    secured: Cluster,
) -> None:
    port = secured.port(secured.ids[0])
    async with open_client(port, creds=as_token(secured, "reader")) as c:
        with trio.fail_after(10):
            # tail + cancel in one go: the cancel must find the tail (it once could not).
            await c.ws.send_message(encode("tail", {"req": 1}))
            await c.ws.send_message(encode("cancel", {"req": 1}))
            for k in range(2, 18):
                await c.ws.send_message(encode("tail", {"req": k}))
            reply = await c.request("tail", {})  # the 17th open tail on this connection
            assert (reply["kind"], reply["code"]) == ("error", "overloaded"), reply
            assert "tails per connection" in reply["msg"]
            # A tail subscribes once its task runs, so the count may trail the replies.
            for _ in range(100):  # bounded: 100 x 50 ms, under the fail_after
                st = await c.status()
                if st["tail_subscribers"] == 16:
                    break
                await trio.sleep(0.05)
            assert st["tail_subscribers"] == 16
