"""OTLP and Loki push bodies into p2plog records (compat/), and how a push is stored and
answered (service/ingest.py, service/push_http.py), against a fake node."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from p2plog.compat import loki_push, otlp, protos
from p2plog.compat.common import MAX_PUSH_RECORDS, IngestError, decompress, level_named, unsnappy
from p2plog.net.http import HttpRequest
from p2plog.record import MAX_BATCH_RECORDS
from p2plog.replica.proposals import SubmitResult
from p2plog.service.ingest import prepare, store
from p2plog.service.push_http import Push
from p2plog.testing.pushes import loki_proto

T = 1_764_800_000_000_000_000


def otlp_request(n: int = 1, **kw: Any) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    a = rl.resource.attributes.add(key="service.name")
    a.value.string_value = "checkout"
    h = rl.resource.attributes.add(key="host.name")
    h.value.string_value = "web-1"
    sl = rl.scope_logs.add()
    sl.scope.name = "app.orders"
    for i in range(n):
        lr = sl.log_records.add(time_unix_nano=T + i, severity_number=kw.get("sev", 9))
        lr.body.string_value = kw.get("msg", f"order {i}")
        x = lr.attributes.add(key="seq")
        x.value.int_value = i
    return req


def test_otlp_mapping() -> None:
    req = otlp_request()
    lr = req.resource_logs[0].scope_logs[0].log_records[0]
    for key, setter in [
        ("ok", lambda v: setattr(v, "bool_value", True)),
        ("ratio", lambda v: setattr(v, "double_value", 0.5)),
        ("raw", lambda v: setattr(v, "bytes_value", b"\x00\x01")),
        ("host.name", lambda v: setattr(v, "string_value", "override")),
    ]:
        setter(lr.attributes.add(key=key).value)
    arr = lr.attributes.add(key="tags").value.array_value
    arr.values.add().string_value = "a"
    arr.values.add().int_value = 2
    lr.trace_id = bytes(range(16))
    lr.span_id = bytes(range(8))
    body = req.SerializeToString()
    (c,) = otlp.records(otlp.parse(body, False), body)
    r = c.record
    assert r is not None
    assert r["source"] == "checkout"
    assert r["level"] == "info"
    assert r["msg"] == "order 0"
    assert r["ts"] == T
    f = r["fields"]
    assert f["seq"] == 0
    assert f["ok"] is True
    assert f["ratio"] == 0.5
    assert f["host.name"] == "override"  # the record's attribute wins over the resource's
    assert f["tags"] == '["a", 2]'
    assert f["raw"] == '"AAE="'
    assert f["trace_id"] == bytes(range(16)).hex()
    assert f["span_id"] == bytes(range(8)).hex()
    assert f["otel.scope.name"] == "app.orders"
    assert "service.name" not in f
    assert uuid.UUID(bytes=r["id"]).version == 8


@pytest.mark.parametrize(
    ("number", "text", "level"),
    [
        (1, "", "debug"),
        (5, "", "debug"),
        (9, "", "info"),
        (13, "", "warning"),
        (16, "", "warning"),
        (17, "", "error"),
        (21, "", "critical"),
        (24, "", "critical"),
        (0, "WARN", "warning"),
        (0, "Fatal", "critical"),
        (0, "", "info"),
        (0, "chatty", "info"),
    ],
)
def test_otlp_severity(number: int, text: str, level: str) -> None:
    req = otlp_request(sev=number)
    req.resource_logs[0].scope_logs[0].log_records[0].severity_text = text
    body = req.SerializeToString()
    assert otlp.records(otlp.parse(body, False), body)[0].record["level"] == level  # type: ignore[index]


def test_otlp_time_falls_back_to_observed_then_none() -> None:
    req = otlp_request()
    lr = req.resource_logs[0].scope_logs[0].log_records[0]
    lr.time_unix_nano = 0
    lr.observed_time_unix_nano = T + 7
    body = req.SerializeToString()
    assert otlp.records(otlp.parse(body, False), body)[0].record["ts"] == T + 7  # type: ignore[index]
    lr.observed_time_unix_nano = 0
    body = req.SerializeToString()
    assert "ts" not in otlp.records(otlp.parse(body, False), body)[0].record  # type: ignore[operator]


def ids_of(req: ExportLogsServiceRequest) -> list[bytes]:
    body = req.SerializeToString()
    return [c.record["id"] for c in otlp.records(otlp.parse(body, False), body)]  # type: ignore[index]


def test_otlp_ids_are_stable_and_repeats_stay_apart() -> None:
    req = otlp_request(3)
    assert ids_of(req) == ids_of(otlp_request(3))  # a retry: the same ids
    for lr in req.resource_logs[0].scope_logs[0].log_records:  # three identical records
        lr.time_unix_nano = T
        lr.attributes[0].value.int_value = 0
        lr.body.string_value = "same"
    ids = ids_of(req)
    assert len(set(ids)) == 3
    # The same record in another request (re-batched by a collector) keeps its id.
    assert ids_of(otlp_request(1, msg="same"))[0] == ids[0]
    # log.record.uid names the record: its id follows the uid alone.
    for lr in req.resource_logs[0].scope_logs[0].log_records:
        lr.attributes.add(key="log.record.uid").value.string_value = "01JABCDEF"
    assert len(set(ids_of(req))) == 1


def test_untimed_records_only_merge_within_an_identical_request() -> None:
    a = otlp_request(1, msg="heartbeat")
    a.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano = 0
    b = otlp_request(2, msg="heartbeat")
    for lr in b.resource_logs[0].scope_logs[0].log_records:
        lr.time_unix_nano = 0
    assert ids_of(a) == ids_of(a)
    assert ids_of(a)[0] not in ids_of(b)


def test_otlp_json_reads_hex_ids_and_ignores_unknown_fields() -> None:
    req = otlp_request()
    lr = req.resource_logs[0].scope_logs[0].log_records[0]
    lr.trace_id = bytes(range(16))
    doc = json_format.MessageToDict(req)
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["traceId"] = bytes(range(16)).hex()
    doc["resourceLogs"][0]["futureField"] = 1
    body = json.dumps(doc).encode()
    (c,) = otlp.records(otlp.parse(body, True), body)
    assert c.record is not None
    assert c.record["fields"]["trace_id"] == bytes(range(16)).hex()
    assert c.record["ts"] == T


@pytest.mark.parametrize(
    ("body", "as_json"), [(b"\xff\xff\xff", False), (b"{", True), (b'{"resourceLogs": 3}', True)]
)
def test_otlp_garbage_is_a_400(body: bytes, as_json: bool) -> None:
    with pytest.raises(IngestError) as e:
        otlp.parse(body, as_json)
    assert e.value.status == 400


def test_content_types_and_encodings() -> None:
    assert otlp.is_json("application/json; charset=utf-8")
    assert not otlp.is_json(None)
    assert not otlp.is_json("application/x-protobuf")
    with pytest.raises(IngestError) as e:
        otlp.is_json("text/plain")
    assert e.value.status == 415
    assert decompress(gzip.compress(b"abc"), "gzip") == b"abc"
    with pytest.raises(IngestError) as e:
        decompress(gzip.compress(bytes(3 << 20)), "gzip", limit=1 << 20)  # a small bomb
    assert e.value.status == 413
    with pytest.raises(IngestError) as e:
        decompress(b"x", "br")
    assert e.value.status == 415
    with pytest.raises(IngestError) as e:
        decompress(b"not gzip", "gzip")
    assert e.value.status == 400
    with pytest.raises(IngestError) as e:  # declares 2**35 bytes: refused before allocating
        unsnappy(bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]) + b"x")
    assert e.value.status == 413
    assert level_named("WARN2") == "warning"
    assert level_named("nope") is None


def test_loki_json_and_protobuf_give_the_same_records() -> None:
    labels = {"job": "api", "env": "prod", "level": "warn"}
    body = json.dumps(
        {
            "streams": [
                {"stream": labels, "values": [[str(T), "a", {"trace": "t1"}], [str(T + 1), "b"]]}
            ]
        }
    ).encode()
    js = loki_push.entries(body, "application/json")
    pb = loki_push.entries(
        loki_proto(
            '{job="api", env="prod", level="warn"}', [(T, "a", {"trace": "t1"}), (T + 1, "b", {})]
        ),
        "application/x-protobuf",
    )
    assert [c.record for c in js] != []
    assert all(c.record for c in js)
    strip = [{k: v for k, v in c.record.items() if k != "id"} for c in js]  # type: ignore[union-attr]
    assert strip == [{k: v for k, v in c.record.items() if k != "id"} for c in pb]  # type: ignore[union-attr]
    r = js[0].record
    assert r is not None
    assert r["source"] == "api"
    assert r["level"] == "warning"
    assert r["ts"] == T
    assert r["msg"] == "a"
    assert r["fields"] == {"job": "api", "env": "prod", "trace": "t1"}


def test_loki_bad_entries_are_named_and_the_rest_taken() -> None:
    body = json.dumps(
        {
            "streams": [
                {
                    "stream": {"source": "x"},
                    "values": [["12x", "bad time"], [str(T), 5], [str(T), "good"], "junk"],
                }
            ]
        }
    ).encode()
    got = loki_push.entries(body, "application/json")
    assert [c.record is None for c in got] == [True, True, False, True]
    assert "nanoseconds" in (got[0].error or "")
    with pytest.raises(IngestError):
        loki_push.entries(b'{"nope": 1}', "application/json")
    with pytest.raises(IngestError):
        loki_push.entries(b"\x00garbage", "application/x-protobuf")
    bad = loki_push.entries(loki_proto('{job=~"x"}', [(T, "l", {})]), "application/x-protobuf")
    assert bad[0].record is None
    assert "labels" in (bad[0].error or "")


class FakeNode:
    """What ``service.ingest`` uses of a node; ``script`` answers submits in turn."""

    id = "n1"

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.submits: list[int] = []
        self.stored: list[bytes] = []
        self.rejected: Counter[str] = Counter()

    def corrected_now(self) -> int:
        return T

    def clock_uncertain(self) -> bool:
        return False

    async def submit(self, ids: list[bytes], bodies: list[bytes], ack: str) -> SubmitResult:
        self.submits.append(len(ids))
        how = self.script.pop(0) if self.script else "ok"
        if how in ("overloaded", "unavailable"):
            return SubmitResult.failed(how, "test says so")
        n = len(ids) - (1 if how == "short" else 0)
        self.stored += ids[:n]
        return SubmitResult(len(ids), runs=[[0, n, 1, 1]])


async def test_store_splits_big_pushes_and_names_refusals() -> None:
    node = FakeNode()
    body = otlp_request(MAX_BATCH_RECORDS + 5).SerializeToString()
    conv = otlp.records(otlp.parse(body, False), body)
    conv[3].record["fields"] = {"bad": [1]}  # type: ignore[index]
    out = await store(node, prepare(conv, "n1", T, False), "quorum")  # type: ignore[arg-type]
    assert out.retry is None
    assert out.stored == MAX_BATCH_RECORDS + 4
    assert out.rejected == [out.rejected[0]]
    assert out.rejected[0].startswith("record 3:")
    assert len(node.submits) == 2
    assert sum(node.submits) == MAX_BATCH_RECORDS + 4


@pytest.mark.parametrize(
    ("how", "status"), [("overloaded", 429), ("unavailable", 503), ("short", 503)]
)
async def test_store_asks_for_a_retry(how: str, status: int) -> None:
    body = otlp_request(10).SerializeToString()
    prep = prepare(otlp.records(otlp.parse(body, False), body), "n1", T, False)
    out = await store(FakeNode(how), prep, "quorum")  # type: ignore[arg-type]
    assert out.retry is not None
    assert out.retry[0] == status


def request(path: str, body: bytes, **headers: str) -> HttpRequest:
    return HttpRequest("POST", path, {}, headers, body, "127.0.0.1:1")


async def test_otlp_answers() -> None:
    push = Push(FakeNode("ok", "unavailable"))  # type: ignore[arg-type]
    req = otlp_request(3)
    req.resource_logs[0].scope_logs[0].log_records[1].attributes.add(
        key="x"
    ).value.kvlist_value.SetInParent()
    req.resource_logs[0].scope_logs[0].log_records[2].body.string_value = "y" * (70 << 10)
    r = await push.otlp(
        request("/v1/logs", gzip.compress(req.SerializeToString()), **{"content-encoding": "gzip"})
    )
    assert r.status == 200
    assert r.content_type == "application/x-protobuf"
    ps = ExportLogsServiceResponse.FromString(r.body).partial_success
    assert ps.rejected_log_records == 1
    assert "record 2:" in ps.error_message
    r = await push.otlp(request("/v1/logs", req.SerializeToString()))
    assert r.status == 503
    assert ("retry-after", "1") in r.headers
    assert protos.Status.FromString(r.body).code == 14
    r = await push.otlp(request("/v1/logs", b"{}", **{"content-type": "application/json"}))
    assert r.status == 200
    assert json.loads(r.body) == {}
    r = await push.otlp(request("/v1/logs", b"x", **{"content-type": "text/plain"}))
    assert r.status == 415
    push.gate.bytes = push.gate.max_bytes  # the node is full of other pushes
    r = await push.otlp(request("/v1/logs", req.SerializeToString()))
    assert r.status == 429
    assert ("retry-after", "1") in r.headers


async def test_loki_answers() -> None:
    push = Push(FakeNode())  # type: ignore[arg-type]
    ok = loki_proto('{job="a"}', [(T, "l", {})])
    r = await push.loki(
        request("/loki/api/v1/push", ok, **{"content-type": "application/x-protobuf"})
    )
    assert r.status == 204
    body = json.dumps(
        {"streams": [{"stream": {"a": "b"}, "values": [[str(T), "ok"], ["x", "no"]]}]}
    )
    r = await push.loki(
        request("/loki/api/v1/push", body.encode(), **{"content-type": "application/json"})
    )
    assert r.status == 400
    assert b"1 of 2 entries refused" in r.body
    assert b"record 1:" in r.body
    r = await push.loki(request("/loki/api/v1/push", b"{}", **{"x-p2plog-ack": "all"}))
    assert r.status == 400
    assert b"quorum" in r.body


def test_a_push_over_the_record_bound_is_refused_whole() -> None:
    body = otlp_request(1).SerializeToString()
    one = otlp.records(otlp.parse(body, False), body)
    with pytest.raises(IngestError) as e:
        prepare(one * (MAX_PUSH_RECORDS + 1), "n1", T, False)
    assert e.value.status == 413
    assert "smaller" in str(e.value)


def test_an_id_does_not_depend_on_the_order_of_fields() -> None:
    from p2plog.compat.common import Ids

    a = {"ts": T, "level": "info", "source": "s", "msg": "m", "fields": {"x": 1, "y": "2"}}
    b = {"ts": T, "level": "info", "source": "s", "msg": "m", "fields": {"y": "2", "x": 1}}
    assert Ids("otlp", b"r1").content_id(a) == Ids("otlp", b"r2").content_id(b)
    c = {**a, "fields": {"x": 1, "y": 2}}  # the same text, another type: another record
    assert Ids("otlp", b"r1").content_id(a) != Ids("otlp", b"r1").content_id(c)


def _ld(field: int, payload: bytes) -> bytes:
    n, out = len(payload), bytearray([field << 3 | 2])
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out) + payload


def test_records_are_counted_before_they_are_built() -> None:
    # A million empty LogRecords in one ScopeLogs: 2 KB of gzip, refused before it is parsed.
    body = _ld(1, _ld(2, b"\x12\x00" * 1_000_000))
    assert len(gzip.compress(body)) < 4096
    with pytest.raises(IngestError) as e:
        otlp.parse(body, False)
    assert e.value.status == 413
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{}] * (MAX_PUSH_RECORDS + 1)}]}]}
    with pytest.raises(IngestError) as e:
        otlp.parse(json.dumps(doc).encode(), True)
    assert e.value.status == 413
    loki = {"streams": [{"stream": {}, "values": [[]] * (MAX_PUSH_RECORDS + 1)}]}
    with pytest.raises(IngestError) as e:
        loki_push.entries(json.dumps(loki).encode(), "application/json")
    assert e.value.status == 413


def test_gzip_members_are_read_whole() -> None:
    assert decompress(gzip.compress(b"abc") + gzip.compress(b"def"), "gzip") == b"abcdef"
    with pytest.raises(IngestError, match="cut short"):
        decompress(gzip.compress(b"abc" * 100)[:-4], "gzip")


def test_odd_text_is_a_refused_entry_not_a_crash() -> None:
    values = [["\u00b2", "a superscript two is a digit to isdigit"], ["1", "\ud800"], ["2", "ok"]]
    body = json.dumps({"streams": [{"stream": {"a": "b"}, "values": values}]}).encode()
    got = loki_push.entries(body, "application/json")
    assert [c.record is not None for c in got] == [False, False, True]
    assert "UTF-8" in (got[1].error or "")
    doc = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":1e400}]}]}]}'
    with pytest.raises(IngestError) as e:
        otlp.parse(doc, True)
    assert e.value.status == 400
