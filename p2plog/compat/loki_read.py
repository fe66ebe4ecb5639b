"""p2plog records in the shapes of Loki's read API (``/loki/api/v1/...`` answers).

A record's Loki labels: its fields (values as ``--field`` writes them: text as is, others as
JSON), its ``source`` (when it has one) and its ``level`` (debug, info, warning, error,
critical: the names Grafana colours by), the last two winning over fields of those names. Names
that are not Prometheus label names (``code.lineno``) are rewritten as Loki rewrites them
(``code_lineno``), so a selector can name them. A record's time is its event time
(``ts_corrected``), its ingest time when it has none.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from p2plog.state.scans import field_text
from p2plog.state.stored import StoredRecord

_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_VECTOR = re.compile(r"\s*vector\(\s*([0-9]+(?:\.[0-9]+)?)\s*\)\s*")


@functools.lru_cache(maxsize=4096)
def label_name(key: str) -> str:
    name = _NOT_LABEL_CHAR.sub("_", key)
    return "_" + name if not name or name[0].isdigit() else name


def labels(source: str, level: str, fields: Mapping[str, Any]) -> dict[str, str]:
    out = {label_name(k): field_text(v) for k, v in fields.items()}
    if source:
        out["source"] = source
    out["level"] = level
    return out


def record_labels(r: StoredRecord) -> dict[str, str]:
    return labels(r.source, r.level, r.fields)


def record_time(r: StoredRecord) -> int:
    return r.ts_corrected if r.ts_corrected is not None else r.ingest_ts


Row = tuple[int, dict[str, str], str]  # (ns, labels, line)


def row_of(r: StoredRecord) -> Row:
    return record_time(r), record_labels(r), r.msg


def row_of_json(d: Mapping[str, Any]) -> Row:
    """A row from a record as the reads send it (``StoredRecord.to_json``)."""
    t = d["ts_corrected"] if d.get("ts_corrected") is not None else d["ingest_ts"]
    return t, labels(d["source"], d["level"], d["fields"]), d["msg"]


def streams(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Rows grouped into Loki streams (one per label set, in the order first seen), each
    stream's values in the rows' order."""
    by: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for t, lb, line in rows:
        key = tuple(sorted(lb.items()))
        s = by.get(key)
        if s is None:
            s = by[key] = {"stream": lb, "values": []}
        s["values"].append([str(t), line])
    return list(by.values())


def streams_answer(rows: Iterable[Row]) -> dict[str, Any]:
    """A ``query_range``/``query`` answer for log lines."""
    data = {"resultType": "streams", "result": streams(rows), "stats": {}}
    return {"status": "success", "data": data}


def list_answer(items: Iterable[Any]) -> dict[str, Any]:
    """A ``labels``, ``label/<name>/values`` or ``series`` answer."""
    return {"status": "success", "data": list(items)}


def constant_vector(query: str) -> float | None:
    """The value of a sum of constant vectors (``vector(1)+vector(1)``: the query Grafana's
    Loki data source sends to test a connection), None for any other query."""
    total = 0.0
    for part in query.split("+"):
        m = _VECTOR.fullmatch(part)
        if m is None:
            return None
        total += float(m.group(1))
    return total


def vector_answer(value: float, at_ns: int) -> dict[str, Any]:
    """An instant query's answer of one sample without labels."""
    sample = {"metric": {}, "value": [at_ns / 1e9, f"{value:g}"]}
    data = {"resultType": "vector", "result": [sample], "stats": {}}
    return {"status": "success", "data": data}
