"""The ecosystem's protocols on a real cluster (issue 18): the OpenTelemetry SDK's own OTLP/HTTP
exporter through Python's ``logging`` while the leader is killed; Loki push (JSON and snappy
protobuf) read back through the Loki query API and its websocket tail."""

from __future__ import annotations

import gzip
import json
import logging
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from p2plog.compat import protos
from p2plog.testing.pushes import loki_json, loki_proto

from .conftest import started
from .harness import Cluster
from .httpc import http_request

N_OTEL = 600
LEVELS = [
    (logging.DEBUG, "debug"),
    (logging.INFO, "info"),
    (logging.WARNING, "warning"),
    (logging.ERROR, "error"),
    (logging.CRITICAL, "critical"),
]


class RecordingExporter(OTLPLogExporter):
    """The SDK's exporter, noting which records it was told were stored (and their times)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.succeeded: dict[int, int] = {}
        self.failed: list[int] = []

    def export(self, batch: Any) -> LogRecordExportResult:
        result = super().export(batch)
        for item in batch:
            lr = getattr(item, "log_record", item)
            seq = int(lr.attributes["seq"])
            if result is LogRecordExportResult.SUCCESS:
                self.succeeded[seq] = lr.timestamp
            else:
                self.failed.append(seq)
        return result


def emit(port: int, exporter_box: list[RecordingExporter], started_at: threading.Event) -> None:
    """Log ``N_OTEL`` records through ``logging`` and the OTel SDK (in a thread: the SDK is
    synchronous), then flush."""
    exporter = RecordingExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout=20)
    exporter_box.append(exporter)
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, schedule_delay_millis=50, max_export_batch_size=40)
    )
    logger = logging.getLogger("p2plog.test.otel")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger.addHandler(handler)
    try:
        for i in range(N_OTEL):
            if i == N_OTEL // 3:
                started_at.set()
            lv, _ = LEVELS[i % len(LEVELS)]
            logger.log(lv, "order %d shipped", i, extra={"seq": i, "order.total": i * 1.5})
            time.sleep(0.004)
        provider.force_flush(30_000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


# The SDK's LoggingHandler is deprecated for opentelemetry-instrumentation-logging's, which
# wraps the same LoggerProvider path: the exporter under test is the same.
@pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")
async def test_otel_sdk_through_a_leader_kill(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    c = Cluster(tmp_path, http=True)
    async with started(c, request):
        lead = await c.leader()
        via = next(n for n in c.ids if n != lead)
        box: list[RecordingExporter] = []
        third = threading.Event()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, emit, c.http_ports[via], box, third)
                while not third.is_set():  # noqa: ASYNC110 (a thread's event)
                    await trio.sleep(0.01)
                c.kill(lead, signal.SIGKILL)
        exporter = box[0]
        assert len(exporter.succeeded) > N_OTEL // 2, exporter.failed[:10]
        await c.restart(lead)
        await c.wait_converged(c.ids)
        for nid in c.ids:
            got = [r for r in await c.query_all(nid) if r["source"] == "checkout"]
            seqs = Counter(r["fields"]["seq"] for r in got)
            assert [s for s, k in seqs.items() if k > 1] == [], f"{nid}: duplicated"
            missing = set(exporter.succeeded) - set(seqs)
            assert not missing, f"{nid} lost {len(missing)} acked records: {sorted(missing)[:10]}"
            for r in got:
                i = r["fields"]["seq"]
                assert r["level"] == LEVELS[i % len(LEVELS)][1]
                assert r["msg"] == f"order {i} shipped"
                assert r["fields"]["order.total"] == i * 1.5
                assert r["fields"]["otel.scope.name"] == "p2plog.test.otel"
                if i in exporter.succeeded:
                    assert r["ts"] == exporter.succeeded[i]


async def loki_get(port: int, path: str, **params: str) -> tuple[int, Any]:
    from urllib.parse import urlencode

    status, _, body = await http_request(port, "GET", f"{path}?{urlencode(params)}")
    return status, (json.loads(body) if status == 200 else body.decode())


async def test_loki_push_and_query(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    c = Cluster(tmp_path, http=True)
    async with started(c, request):
        lead = await c.leader()
        port = c.http_ports[next(n for n in c.ids if n != lead)]
        t0 = time.time_ns() - 10**9
        api_lines = [
            (t0 + i * 1000, f"GET /cart {'timeout' if i % 3 == 0 else 'ok'} {i}") for i in range(30)
        ]
        st, _, body = await http_request(
            port,
            "POST",
            "/loki/api/v1/push",
            gzip.compress(loki_json({"source": "api", "env": "prod", "level": "warn"}, api_lines)),
            {"content-type": "application/json", "content-encoding": "gzip"},
        )
        assert st == 204, body
        db = [(t0 + i * 1000, f"query {i} took {i} ms", {"trace_id": f"t{i}"}) for i in range(20)]
        st, _, body = await http_request(
            port,
            "POST",
            "/loki/api/v1/push",
            loki_proto('{job="db", env="prod"}', db),
            {"content-type": "application/x-protobuf"},
        )
        assert st == 204, body
        # A retry of the very same request stores nothing twice.
        st, _, _ = await http_request(
            port,
            "POST",
            "/loki/api/v1/push",
            loki_proto('{job="db", env="prod"}', db),
            {"content-type": "application/x-protobuf"},
        )
        assert st == 204
        _, _, text = await http_request(port, "GET", "/metrics")
        m = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text.decode())
            for s in f.samples
        }
        assert m["p2plog_ingest_requests_total", (("code", "204"), ("protocol", "loki"))] == 3
        # 30 + 20 stored, and the retry's 20 again: acked as duplicates of what is stored.
        assert m["p2plog_ingest_records_total", (("outcome", "stored"), ("protocol", "loki"))] == 70

        for nid in c.ids:
            p = c.http_ports[nid]
            st, ans = await loki_get(
                p, "/loki/api/v1/query_range", query='{source="api"} |= "timeout"', limit="1000"
            )
            assert st == 200, ans
            assert ans["status"] == "success"
            assert ans["data"]["resultType"] == "streams"
            (stream,) = ans["data"]["result"]
            assert stream["stream"] == {"source": "api", "env": "prod", "level": "warning"}
            want = [[str(t), s] for t, s in reversed(api_lines) if "timeout" in s]
            assert stream["values"] == want  # newest first (Loki's default direction)

            st, ans = await loki_get(
                p,
                "/loki/api/v1/query_range",
                query='{env="prod", job=~"d."} != "took 1 ms" |~ "query [0-9]+"',
                direction="forward",
            )
            assert st == 200, ans
            (stream,) = ans["data"]["result"] if len(ans["data"]["result"]) == 1 else [None]
            values = [v for s in ans["data"]["result"] for v in s["values"]]
            assert [v[1] for v in values] == [s for _, s, _ in db if s != "query 1 took 1 ms"]
            assert {s["stream"]["job"] for s in ans["data"]["result"]} == {"db"}
            assert values[0][0] == str(db[0][0])

            st, ans = await loki_get(p, "/loki/api/v1/labels")
            assert st == 200
            assert {"source", "env", "job", "level", "trace_id"} <= set(ans["data"])
            st, ans = await loki_get(p, "/loki/api/v1/label/env/values")
            assert ans["data"] == ["prod"]
            st, ans = await loki_get(p, "/loki/api/v1/query", query='{job="db"}', limit="5")
            assert st == 200
            assert len(ans["data"]["result"][0]["values"]) <= 5
        st, msg = await loki_get(
            port,
            "/loki/api/v1/query_range",
            query='topk(3, sum by (job) (count_over_time({job="db"}[1m])))',
        )
        assert st == 400, msg
        assert "is not a metric query served here" in msg, msg
        assert "count_over_time(<log query>[range])" in msg, msg
        # Grafana's logs volume: lines per level over time, as a matrix.
        st, ans = await loki_get(
            port,
            "/loki/api/v1/query_range",
            query='sum by (level) (count_over_time({env="prod"} | drop __error__[1h]))',
            step="3600",
        )
        assert st == 200, ans
        assert ans["data"]["resultType"] == "matrix"
        totals = {s["metric"]["level"]: int(s["values"][-1][1]) for s in ans["data"]["result"]}
        assert totals == {"warning": 30, "info": 20}
        st, ans = await loki_get(
            port, "/loki/api/v1/query", query='sum(count_over_time({job="db"} |= "took 1"[1h]))'
        )
        assert st == 200, ans
        (sample,) = ans["data"]["result"]
        assert sample["value"][1] == "11"  # took 1, 10..19 ms
        assert sample["metric"] == {}  # (each line has its own trace_id: a series of its own)
        # Grafana's "Save & test" of a Loki data source (pkg/tsdb/loki/healthcheck.go).
        st, ans = await loki_get(
            port, "/loki/api/v1/query", query="vector(1)+vector(1)", time="4000000000"
        )
        assert st == 200
        assert ans["data"]["resultType"] == "vector"
        assert ans["data"]["result"][0]["value"] == [4000000000.0, "2"]
        st, msg = await loki_get(port, "/loki/api/v1/query_range", query='{job="db"} | json')
        assert st == 400, msg
        assert "json" in msg, msg


async def test_loki_tail_over_websocket(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    c = Cluster(tmp_path, http=True)
    async with started(c, request):
        port = c.http_ports[await c.leader()]
        t0 = time.time_ns()
        before = loki_json({"source": "web"}, [(t0, "before 1"), (t0 + 1, "other line")])
        st, _, _ = await http_request(
            port, "POST", "/loki/api/v1/push", before, {"content-type": "application/json"}
        )
        assert st == 204
        url = f"ws://127.0.0.1:{port}/loki/api/v1/tail?query=%7Bsource%3D%22web%22%7D%20%7C%3D%20%22before%22"
        with trio.fail_after(20):
            async with open_websocket_url(url) as ws:
                first = json.loads(await ws.get_message())
                assert [v[1] for s in first["streams"] for v in s["values"]] == ["before 1"]
                live = loki_json({"source": "web"}, [(t0 + 5, "before 2"), (t0 + 6, "skip")])
                st, _, _ = await http_request(
                    port, "POST", "/loki/api/v1/push", live, {"content-type": "application/json"}
                )
                assert st == 204
                frame = json.loads(await ws.get_message())
                assert [v[1] for s in frame["streams"] for v in s["values"]] == ["before 2"]
                assert frame["streams"][0]["stream"] == {"source": "web", "level": "info"}

        # Past the first backward window (4096 records): the newest 5000, then the oldest.
        base = t0 + 1000
        for k in range(3):
            lines = [(base + k * 3000 + i, f"bulk {k * 3000 + i}") for i in range(3000)]
            st, _, _ = await http_request(
                port,
                "POST",
                "/loki/api/v1/push",
                loki_json({"source": "bulk"}, lines),
                {"content-type": "application/json"},
            )
            assert st == 204
        for direction, want in [("backward", range(8999, 3999, -1)), ("forward", range(5000))]:
            st, ans = await loki_get(
                port,
                "/loki/api/v1/query_range",
                query='{source="bulk"}',
                limit="5000",
                direction=direction,
            )
            assert st == 200
            values = [v for s in ans["data"]["result"] for v in s["values"]]
            assert [v[1] for v in values] == [f"bulk {i}" for i in want]


def _ld(field: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    n, out = len(payload), bytearray([field << 3 | 2])
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out) + payload


def nested_otlp(depth: int) -> bytes:
    """An ExportLogsServiceRequest whose one record's body nests ``depth`` maps deep (by hand:
    protobuf itself refuses to build it)."""
    v = b""
    for _ in range(depth):  # AnyValue.kvlist_value(6) > KeyValueList.values(1) > KeyValue.value(2)
        v = _ld(6, _ld(1, _ld(1, b"k") + _ld(2, v)))
    record = _ld(5, v)  # LogRecord.body
    return _ld(1, _ld(2, _ld(2, record)))  # resource_logs > scope_logs > log_records


async def test_pushes_cannot_hurt_a_node(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    c = Cluster(tmp_path, http=True)
    async with started(c, request):
        lead = await c.leader()
        port = c.http_ports[lead]
        pb = {"content-type": "application/x-protobuf"}
        bomb = gzip.compress(bytes(200 << 20))  # 200 MiB of zeros in about 200 KB
        st, _, body = await http_request(
            port, "POST", "/v1/logs", bomb, {**pb, "content-encoding": "gzip"}
        )
        assert st == 413, body
        assert protos.Status.FromString(body).message.startswith("the body inflates past")
        st, _, body = await http_request(port, "POST", "/v1/logs", nested_otlp(5000), pb)
        assert st == 400, body
        st, _, _ = await http_request(port, "POST", "/v1/logs", b"\x0a\xff\xff\xff\xff\x0f", pb)
        assert st == 400
        with trio.fail_after(10):  # over the body limit: refused from its Content-Length
            s = await trio.open_tcp_stream("127.0.0.1", port)
            async with s:
                await s.send_all(
                    b"POST /v1/logs HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\n"
                )
                assert (await s.receive_some(1024)).startswith(b"HTTP/1.1 413")
        snappy_lie = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + b"x" * 10  # declares 4 GiB
        st, _, body = await http_request(port, "POST", "/loki/api/v1/push", snappy_lie, pb)
        assert st == 413, body
        many = {f"l{i}": "v" for i in range(300)}  # more fields than a record may carry
        st, _, body = await http_request(
            port,
            "POST",
            "/loki/api/v1/push",
            loki_json(many, [(time.time_ns(), "x")]),
            {"content-type": "application/json"},
        )
        assert st == 400
        assert b"fields" in body
        # A regex that backtracking engines take exponential time over: RE2 is linear.
        long_line = loki_json({"source": "re"}, [(time.time_ns(), "a" * 5000 + "!")])
        st, _, _ = await http_request(
            port, "POST", "/loki/api/v1/push", long_line, {"content-type": "application/json"}
        )
        assert st == 204
        # (http_request bounds the wait at 15 s; Python's re would not finish in a lifetime.)
        st, ans = await loki_get(
            port, "/loki/api/v1/query_range", query='{source="re"} |~ "(a+)+$"'
        )
        assert st == 200
        assert ans["data"]["result"] == []
        st, msg = await loki_get(port, "/loki/api/v1/query_range", query='{source="re"} |~ "("')
        assert st == 400
        assert "regex" in msg
        assert (await c.status(lead))["role"] == "leader"  # every node still serves
        for nid in c.ids:
            assert (await http_request(c.http_ports[nid], "GET", "/healthz"))[0] == 200


async def test_no_leader_is_a_503_with_retry_after(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    c = Cluster(tmp_path, http=True)
    async with started(c, request):
        lone, *others = c.ids
        port = c.http_ports[lone]
        body = ExportLogsServiceRequest()
        lr = (
            body.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=time.time_ns())
        )
        lr.body.string_value = "while cut off"
        raw = body.SerializeToString()
        pb = {"content-type": "application/x-protobuf"}
        for nid in others:
            c.kill(nid, signal.SIGSTOP)
        try:
            with trio.fail_after(20):
                while (await http_request(port, "GET", "/readyz"))[0] != 503:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            st, headers, reply = await http_request(port, "POST", "/v1/logs", raw, pb)
            assert st == 503, reply
            assert headers["retry-after"] == "1"
            assert protos.Status.FromString(reply).code == 14  # UNAVAILABLE
        finally:
            for nid in others:
                c.kill(nid, signal.SIGCONT)
        with trio.fail_after(30):  # what the exporter does next: the same request, until taken
            while (st := (await http_request(port, "POST", "/v1/logs", raw, pb))[0]) != 200:
                assert st == 503
                await trio.sleep(0.2)
        await c.wait_converged(c.ids)
        got = [r for r in await c.query_all(lone) if r["msg"] == "while cut off"]
        assert len(got) == 1
