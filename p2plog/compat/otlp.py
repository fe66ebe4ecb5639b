"""OTLP/HTTP logs (``POST /v1/logs``) into p2plog records, and the answers OTLP senders expect.

The mapping (OpenTelemetry logs data model -> a p2plog record):

- ``severity_number`` -> ``level`` by its range (TRACE and DEBUG: debug, INFO: info, WARN:
  warning, ERROR: error, FATAL: critical); unset: ``severity_text`` if it names a level, else
  info;
- ``body`` -> ``msg`` (a string as is; any other value as JSON text);
- the resource's attributes, then the record's (which win on a clash) -> ``fields``, plus
  ``trace_id``/``span_id`` (hex), ``otel.scope.name`` and ``event.name`` when set. Arrays and
  maps become JSON text, bytes base64: p2plog fields are flat;
- ``time_unix_nano`` -> ``ts``; ``observed_time_unix_nano`` when the former is 0; neither: the
  node's time of receipt;
- the resource's ``service.name`` -> ``source``.

Ids: the record's ``log.record.uid`` attribute (OTel semantic conventions) when it has one,
else a hash of the record's content and time (``common.Ids``). Encodings: binary protobuf
(``application/x-protobuf``) and OTLP's JSON (``application/json``, whose trace and span ids
are hex, not protobuf-JSON's base64); unknown fields are ignored, as the OTLP spec requires.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from p2plog.compat import protos
from p2plog.compat.common import (
    MAX_PUSH_RECORDS,
    Ids,
    IngestError,
    count_fields,
    level_named,
    named_id,
    too_many,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
UID_ATTRIBUTE = "log.record.uid"
_BY_SEVERITY = ("debug", "debug", "info", "warning", "error", "critical")  # per 4 numbers


@dataclass(frozen=True, slots=True)
class Converted:
    """One OTLP record as a p2plog record map (with its id), or why it could not be."""

    record: dict[str, Any] | None
    error: str | None = None


def is_json(content_type: str | None) -> bool:
    """Is this request JSON (else protobuf)? ``IngestError`` 415 for anything else."""
    ct = (content_type or PROTOBUF).split(";")[0].strip().lower()
    if ct == JSON:
        return True
    if ct in (PROTOBUF, "application/protobuf", "application/octet-stream"):
        return False
    raise IngestError(f"Content-Type {ct!r}: OTLP/HTTP takes {PROTOBUF} or {JSON}", 415)


def parse(body: bytes, as_json: bool) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    try:
        if as_json:
            doc = json.loads(body)
            _hex_ids_to_base64(doc)  # (and counts the records: ``too_many`` past the bound)
            json_format.ParseDict(doc, req, ignore_unknown_fields=True)
        else:
            count_fields(body, (1, 2, 2))  # resource_logs > scope_logs > log_records
            req.ParseFromString(body)
    except (
        DecodeError,
        json_format.ParseError,
        ValueError,
        TypeError,
        RecursionError,
        OverflowError,
    ) as e:
        if isinstance(e, IngestError):
            raise
        kind = "OTLP JSON" if as_json else "an OTLP protobuf ExportLogsServiceRequest"
        raise IngestError(f"the body is not {kind}: {str(e)[:200]}") from None
    return req


def records(req: ExportLogsServiceRequest, body: bytes) -> list[Converted]:
    """Every log record of ``req`` (``body``: its bytes as sent, for the ids), in order."""
    ids = Ids("otlp", body)
    out: list[Converted] = []
    for rl in req.resource_logs:
        res = {kv.key: _value(kv.value) for kv in rl.resource.attributes}
        source = res.pop("service.name", "")
        for sl in rl.scope_logs:
            scope = sl.scope.name
            for lr in sl.log_records:
                out.append(
                    _convert(
                        lr, res, source if isinstance(source, str) else str(source), scope, ids
                    )
                )
    return out


def _convert(lr: Any, res: dict[str, Any], source: str, scope: str, ids: Ids) -> Converted:
    fields = dict(res)
    uid: Any = None
    for kv in lr.attributes:
        if kv.key == UID_ATTRIBUTE:
            uid = _value(kv.value)
        else:
            fields[kv.key] = _value(kv.value)
    if lr.trace_id:
        fields["trace_id"] = lr.trace_id.hex()
    if lr.span_id:
        fields["span_id"] = lr.span_id.hex()
    if scope:
        fields["otel.scope.name"] = scope
    if lr.event_name:
        fields["event.name"] = lr.event_name
    ts = lr.time_unix_nano or lr.observed_time_unix_nano or None
    body = _value(lr.body) if lr.HasField("body") else ""
    rec: dict[str, Any] = {
        "ts": ts,
        "level": _level(lr.severity_number, lr.severity_text),
        "source": source,
        "msg": body if isinstance(body, str) else json.dumps(body),
        "fields": fields,
    }
    if rec["ts"] is None:
        del rec["ts"]
    rec["id"] = named_id("otlp", str(uid)) if uid is not None else ids.content_id(rec)
    return Converted(rec)


def _level(number: int, text: str) -> str:
    if 1 <= number <= 24:
        return _BY_SEVERITY[(number - 1) // 4]
    return level_named(text) or "info"


def _value(v: Any) -> Any:
    """An AnyValue as a flat field value: text, int, float or bool (the rest as JSON text)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        d = v.double_value
        return d if math.isfinite(d) else str(d)
    if kind is None:
        return ""
    return json.dumps(_plain(v))


def _plain(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_plain(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind == "double_value" and not math.isfinite(v.double_value):
        return str(v.double_value)
    return None if kind is None else getattr(v, kind)


def _hex_ids_to_base64(doc: Any) -> None:
    """OTLP JSON writes trace and span ids as hex (the OTLP spec, "JSON Protobuf Encoding"),
    protobuf's JSON as base64: rewrite them so ``json_format`` reads them."""
    if not isinstance(doc, dict):
        return
    n = 0
    for rl in _items(doc, "resourceLogs", "resource_logs"):
        for sl in _items(rl, "scopeLogs", "scope_logs"):
            n += len(sl.get("logRecords") or sl.get("log_records") or ())
            if n > MAX_PUSH_RECORDS:
                raise too_many(n)
            for lr in _items(sl, "logRecords", "log_records"):
                for key in ("traceId", "trace_id", "spanId", "span_id"):
                    v = lr.get(key)
                    if isinstance(v, str) and v:
                        try:
                            lr[key] = base64.b64encode(bytes.fromhex(v)).decode()
                        except (ValueError, binascii.Error):
                            raise IngestError(f"{key} {v[:40]!r} is not hex") from None


def _items(d: Any, *keys: str) -> list[Any]:
    if not isinstance(d, dict):
        return []
    for k in keys:
        v = d.get(k)
        if isinstance(v, list):
            return [x for x in v if isinstance(x, dict)]
    return []


def response(rejected: int, message: str, as_json: bool) -> bytes:
    """ExportLogsServiceResponse: empty on full success, else its ``partial_success``."""
    resp = ExportLogsServiceResponse()
    if rejected or message:
        resp.partial_success.rejected_log_records = rejected
        resp.partial_success.error_message = message
    if as_json:
        return json.dumps(json_format.MessageToDict(resp)).encode()
    return bytes(resp.SerializeToString())


def status(code: int, message: str, as_json: bool) -> bytes:
    """A google.rpc.Status body for a failed request (the OTLP/HTTP spec's error body); codes
    are gRPC's (3 invalid argument, 8 resource exhausted, 14 unavailable)."""
    if as_json:
        return json.dumps({"code": code, "message": message}).encode()
    return bytes(protos.Status(code=code, message=message).SerializeToString())
