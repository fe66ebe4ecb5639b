"""The operator's HTTP port on a real cluster (issue 17): Prometheus' own parser reads every
node's ``/metrics``; ``/healthz`` answers; ``/readyz`` turns 503 when a node is cut off from
the others (they are stopped with SIGSTOP) and 200 again when they come back; tokens guard
``/metrics``; bad requests get an HTTP error, not a dead port."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from p2plog.compat import protos

from .conftest import started
from .harness import Cluster, WriterStats, make_records, submit_batches
from .httpc import http_request


async def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One GET over a fresh connection: (status, body)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    req = f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}\r\n".encode()
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(req)
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def test_metrics_health_and_readiness(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    c = Cluster(tmp_path, http=True)
    async with started(c, request):
        lead = await c.leader()
        stats = WriterStats()
        await submit_batches(c.port(lead), iter([make_records(200, "m")]), stats)
        await c.wait_converged(c.ids)
        for nid in c.ids:
            port = c.http_ports[nid]
            assert await http_get(port, "/healthz") == (200, "ok\n")
            status, body = await http_get(port, "/metrics")
            assert status == 200, body
            m = families(body)
            roles = {lab["role"]: v for lab, v in m["p2plog_raft_role"]}
            assert roles["leader"] == (1.0 if nid == lead else 0.0)
            assert m["p2plog_raft_has_leader"][0][1] == 1.0
            assert m["p2plog_records_stored_total"][0][1] == 200
            assert m["p2plog_storage_fsync_duration_seconds_count"][0][1] > 0
            assert "p2plog_raft_commit_duration_seconds_bucket" in m
            assert "p2plog_clock_offset_seconds" in m
            assert {lab["peer"] for lab, _ in m["p2plog_peer_link_up"]} == set(c.ids) - {nid}
            assert await http_get(port, "/readyz") == (200, "ready\n")
        lead_metrics = families((await http_get(c.http_ports[lead], "/metrics"))[1])
        assert lead_metrics["p2plog_raft_commit_duration_seconds_count"][0][1] > 0
        assert (await http_get(c.http_ports[lead], "/nope"))[0] == 404

        # Cut one follower off: the others stop. It loses its leader and turns 503 ...
        cut = next(n for n in c.ids if n != lead)
        others = [n for n in c.ids if n != cut]
        for n in others:
            c.kill(n, signal.SIGSTOP)
        try:
            with trio.fail_after(10):
                while (got := await http_get(c.http_ports[cut], "/readyz"))[0] != 503:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert "no leader known" in got[1]
        finally:
            for n in others:
                c.kill(n, signal.SIGCONT)
        # ... and 200 again once a leader is back and it caught up.
        with trio.fail_after(15):
            while (await http_get(c.http_ports[cut], "/readyz"))[0] != 200:  # noqa: ASYNC110
                await trio.sleep(0.05)


async def test_metrics_need_a_read_token_when_tokens_are_on(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from p2plog.testing.proc.peers import Secured

    c = Cluster(tmp_path, http=True, secured=Secured(tokens={"app": "write", "ro": "read"}))
    async with started(c, request):
        port = c.http_ports["n1"]
        assert (await http_get(port, "/metrics"))[0] == 401
        assert (await http_get(port, "/metrics", {"authorization": "Bearer nope"}))[0] == 401
        app = c.tokens["app"]
        assert (await http_get(port, "/metrics", {"authorization": f"Bearer {app}"}))[0] == 403
        ro = c.tokens["ro"]
        status, body = await http_get(port, "/metrics", {"authorization": f"Bearer {ro}"})
        assert status == 200
        assert "p2plog_raft_term" in body
        assert await http_get(port, "/healthz") == (200, "ok\n")  # probes need no token
        # The pushes need the write role, the Loki reads the read role.
        push = b'{"streams": [{"stream": {"a": "b"}, "values": [["1", "x"]]}]}'
        for token, want in [(None, 401), (ro, 403), (app, 204)]:
            auth = {"authorization": f"Bearer {token}"} if token else {}
            st, _, body = await http_request(
                port,
                "POST",
                "/loki/api/v1/push",
                push,
                {"content-type": "application/json", **auth},
            )
            assert st == want, body
        for token, want in [(None, 401), (ro, 403)]:  # OTLP's refusal is a google.rpc.Status
            auth = {"authorization": f"Bearer {token}"} if token else {}
            st, hdrs, body = await http_request(
                port, "POST", "/v1/logs", b"", {"content-type": "application/x-protobuf", **auth}
            )
            assert st == want
            assert hdrs["content-type"] == "application/x-protobuf"
            assert protos.Status.FromString(body).code == {401: 16, 403: 7}[want]
        for token, want in [(None, 401), (app, 403), (ro, 200)]:
            auth = {"authorization": f"Bearer {token}"} if token else {}
            assert (await http_get(port, "/loki/api/v1/labels", auth))[0] == want


async def test_garbage_gets_an_http_error_and_the_port_keeps_serving(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    c = Cluster(tmp_path, http=True)
    async with started(c, request):
        port = c.http_ports["n1"]
        with trio.fail_after(5):
            s = await trio.open_tcp_stream("127.0.0.1", port)
            async with s:
                await s.send_all(b"\x00\x01 not http at all\r\n\r\n")
                reply = await s.receive_some(1024)
        assert reply.startswith(b"HTTP/1.1 400"), reply
        with trio.fail_after(5):
            s = await trio.open_tcp_stream("127.0.0.1", port)
            async with s:
                await s.send_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx: " + b"a" * 20000)
                reply = await s.receive_some(1024)
        assert reply.startswith(b"HTTP/1.1 431") or reply.startswith(b"HTTP/1.1 400"), reply
        assert await http_get(port, "/healthz") == (200, "ok\n")
