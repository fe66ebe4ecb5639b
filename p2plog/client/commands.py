"""The client commands of ``python -m p2plog``: send, query, tail, status.

Output contract (scripts depend on it): records print as one readable line each, or one JSON
object per line with ``--json``; ``status --json`` prints one object with a ``nodes`` list.
Exit codes: 0 success; 1 the cluster could not do it (the reason is on stderr); 2 bad usage.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import trio

from p2plog.client.client import Client, open_client
from p2plog.client.errors import ClientError, RecordsRejected, SubmitError, Unreachable
from p2plog.client.options import ClientOptions
from p2plog.client.records import make_record

READ_CHUNK_BYTES = 1 << 16
STATUS_TIMEOUT_S = 3.0
_REL = re.compile(r"([+-]?)(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_NS = {
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
    "w": 7 * 86400 * 10**9,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(text: str, now_ns: int | None = None) -> int:
    """ns since the epoch from ISO-8601 (naive = UTC), a relative time (``-5m``, ``-2h``,
    ``-30s``, ``-1d``; no sign also means ago, ``+`` means ahead), ``now``, or raw ns."""
    t = text.strip()
    now = now_ns if now_ns is not None else time.time_ns()
    if t == "now":
        return now
    m = _REL.fullmatch(t)
    if m:
        delta = int(float(m[2]) * _UNIT_NS[m[3]])
        return now + delta if m[1] == "+" else now - delta
    if t.isdigit() and len(t) >= 16:
        return int(t)
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(
            f"time {text!r} is neither ISO-8601 (2026-11-24T22:27:16Z) nor relative "
            f"(-5m, -2h, -30s, -1d)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def format_time(ns: int) -> str:
    secs, rem = divmod(ns, 10**9)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{rem // 10**6:03d}Z"


def format_record(rec: dict[str, Any]) -> str:
    """``2026-11-24T22:27:16.359Z n2 INFO source: msg {fields} #index``"""
    t = rec.get("ts_corrected") or rec.get("ingest_ts") or 0
    head = f"{format_time(int(t))} {rec.get('node', '?')} {str(rec.get('level', '')).upper()}"
    src = f" {rec['source']}:" if rec.get("source") else ""
    fields = rec.get("fields") or {}
    f = " " + json.dumps(fields, ensure_ascii=False, default=str) if fields else ""
    return f"{head}{src} {rec.get('msg', '')}{f} #{rec.get('index')}"


def print_record(rec: dict[str, Any], as_json: bool, out: IO[str]) -> None:
    line = to_json(rec) if as_json else format_record(rec)
    out.write(line + "\n")


def to_json(rec: dict[str, Any]) -> str:
    """One JSON object; a NaN or infinite field value (refused at submit now, but a log written
    before may hold one) is written as the string JSON readers can take, not as bare NaN."""
    try:
        return json.dumps(rec, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        fields = {
            k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in (rec.get("fields") or {}).items()
        }
        return json.dumps({**rec, "fields": fields}, ensure_ascii=False, default=str)


def cli_options(token: str | None = None, ca: str | None = None) -> ClientOptions:
    """The CLI's client options; the token falls back to P2PLOG_TOKEN (``client.dial``)."""
    return ClientOptions(connect_timeout_s=2.0, token=token, ca=ca)


# ------------------------------------------------------------------------- send


async def send(
    addresses: Sequence[str],
    *,
    ack: str,
    level: str,
    source: str,
    msgs: Sequence[str],
    stdin: IO[bytes],
    out: IO[str],
    err: IO[str],
    labels: dict[str, str] | None = None,
    options: ClientOptions | None = None,
) -> int:
    """``labels``: node id by address, to say which node took the record."""
    async with open_client(addresses, options or cli_options()) as client:
        if msgs:
            rec = make_record(" ".join(msgs), level=level, source=source)
            try:
                a = (await client.submit([rec], ack))[0]
            except SubmitError as e:
                err.write(f"p2plog send: not stored: {_why(e)}\n")
                return 1
            dup = " (already stored: duplicate)" if a.dup else ""
            node = _node(client, labels or {})
            out.write(f"ok index={a.index} term={a.term} id={a.id} node={node}{dup}\n")
            return 0
        return await _send_lines(client, ack, level, source, stdin, out, err)


async def _send_lines(
    client: Client,
    ack: str,
    level: str,
    source: str,
    stdin: IO[bytes],
    out: IO[str],
    err: IO[str],
) -> int:
    """One record per stdin line, in order; frames go out as lines arrive."""
    read = getattr(stdin, "read1", stdin.read)
    rest = b""
    acked = failed = 0
    first: int | None = None
    last: int | None = None
    while True:
        chunk: bytes = await trio.to_thread.run_sync(read, READ_CHUNK_BYTES, abandon_on_cancel=True)
        if chunk:
            *lines, rest = (rest + chunk).split(b"\n")
        else:
            lines, rest = [rest], b""
        recs = [
            make_record(line.rstrip(b"\r").decode("utf-8", "replace"), level=level, source=source)
            for line in lines
            if line.strip()
        ]
        if recs:
            try:
                acks = await client.submit(recs, ack)
            except RecordsRejected as e:
                acks = [a for a in e.acks if a is not None]
                failed += len(e.errors)
                for x in e.errors[:5]:
                    err.write(f"p2plog send: line not stored: {x.error}\n")
            except SubmitError as e:
                stored = sum(a is not None for a in e.acks)
                err.write(
                    f"p2plog send: stopped after {acked + stored} acked record(s): {_why(e)}\n"
                )
                return 1
            acked += len(acks)
            if acks:
                first = acks[0].index if first is None else first
                last = acks[-1].index
        if not chunk:
            break
    span = f", index {first}..{last}" if first is not None else ""
    out.write(f"ok {acked} record(s) acked{span}\n")
    if failed:
        err.write(f"p2plog send: {failed} record(s) were refused and not stored\n")
        return 1
    return 0


def _why(e: SubmitError) -> str:
    if e.code == "unreachable":
        return f"no node answered ({e})"
    return str(e)


def _node(client: Client, labels: dict[str, str]) -> str:
    address = client.statistics().address or "?"
    return labels.get(address, address)


# ---------------------------------------------------------------- query / tail


async def query(
    addresses: Sequence[str],
    selectors: dict[str, Any],
    *,
    limit: int,
    as_json: bool,
    out: IO[str],
    options: ClientOptions | None = None,
) -> int:
    async with open_client(addresses, options or cli_options()) as client:
        for rec in await client.query(limit=limit, **selectors):
            print_record(rec, as_json, out)
    return 0


async def tail(
    addresses: Sequence[str],
    selectors: dict[str, Any],
    *,
    limit: int | None,
    as_json: bool,
    out: IO[str],
    options: ClientOptions | None = None,
) -> int:
    async with (
        open_client(addresses, options or cli_options()) as client,
        client.tail(limit=limit, **selectors) as stream,
    ):
        async for rec in stream:
            print_record(rec, as_json, out)
            out.flush()
    return 0


# ---------------------------------------------------------------------- status


async def node_status(
    nid: str, address: str, options: ClientOptions | None = None
) -> dict[str, Any]:
    opts = replace(options or cli_options(), request_timeout_s=STATUS_TIMEOUT_S, max_attempts=1)
    try:
        with trio.fail_after(STATUS_TIMEOUT_S + opts.connect_timeout_s):
            async with open_client([address], opts) as client:
                st = await client.status()
    except (ClientError, trio.TooSlowError) as e:
        if isinstance(e, Unreachable):
            reason = "; ".join(r for _, r in e.tried)
        else:
            reason = str(e) if isinstance(e, ClientError) else "no answer in time"
        return {"id": nid, "address": address, "reachable": False, "error": reason}
    return {**st, "id": st.get("id", nid), "address": address, "reachable": True}


async def status(
    nodes: Sequence[tuple[str, str]],
    *,
    as_json: bool,
    out: IO[str],
    options: ClientOptions | None = None,
) -> int:
    """Ask every node at once; print them all; raise ``Unreachable`` (after printing) if none
    answered."""
    results: list[dict[str, Any]] = [{} for _ in nodes]

    async def one(i: int, nid: str, address: str) -> None:
        results[i] = await node_status(nid, address, options)

    async with trio.open_nursery() as nursery:
        for i, (nid, address) in enumerate(nodes):
            nursery.start_soon(one, i, nid, address)
    if as_json:
        out.write(json.dumps({"nodes": results}, default=str) + "\n")
    else:
        out.write(status_table(results))
    if not any(r["reachable"] for r in results):
        out.flush()
        raise Unreachable([(r["address"], r["error"]) for r in results])
    return 0


def status_table(rows: Sequence[dict[str, Any]]) -> str:
    cols = ("ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "BEHIND", "RECORDS")
    top = max((r.get("applied_index", 0) for r in rows if r["reachable"]), default=0)
    table: list[tuple[str, ...]] = []
    for r in rows:
        if not r["reachable"]:
            table.append((r["id"], r["address"], f"unreachable: {r['error']}"))
            continue
        table.append(
            (
                str(r["id"]),
                str(r["address"]),
                str(r["role"]),
                str(r["term"]),
                str(r.get("leader") or "-"),
                str(r["commit_index"]),
                str(r["applied_index"]),
                str(top - int(r["applied_index"])),
                str(r.get("records", "")),
            )
        )
    return aligned(cols, table)


def aligned(cols: Sequence[str], table: Sequence[Sequence[str]]) -> str:
    """``cols`` and the rows as text columns; a short row (a note) does not widen them."""
    widths = [len(c) for c in cols]
    for row in table:
        if len(row) == len(cols):
            widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    lines = []
    for row in [cols, *table]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(lines) + "\n"
