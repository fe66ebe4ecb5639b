"""The HTTP ingest drivers of ``scripts/bench.py``: OTLP/HTTP logs (``POST /v1/logs``,
``ExportLogsServiceRequest`` protobuf) and Loki push (``POST /loki/api/v1/push``, a
``PushRequest`` protobuf hand-encoded here, snappy block format) to the target's HTTP port.

``Ingest.drive_otlp`` / ``drive_loki`` have ``bench.drive_raw``'s signature and return (bench.py
imports this module lazily and lends it its ``Meter`` & co: no import cycle). One HTTP/1.1
keep-alive connection (trio + h11) per request in flight, every wait under ``trio.fail_after``.
Records as the websocket bench's: level info, source ``bench/web-01``, a 99-character message
ending in a fixed-width counter unique within the run (the nodes derive ids from content and
time), fields ``host`` and ``status``. A body is the counters joined with the (per request:
time-patched) template bytes between two of them. 429/503: the same body after Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import cramjam
import h11
import trio
from benchlib import Bench
from benchwire import CONNECT_TIMEOUT_S, HOST, REQUEST_TIMEOUT_S, BenchFailed, RecordFactory
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO, LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

if TYPE_CHECKING:
    from bench import LoadSpec, LoadStats

    from p2plog.testing.proc import ProcCluster

DIGITS, COUNTER = 12, b"%012d"  # the counter that makes every record's text unique
MARK = b"@" * DIGITS  # where the counter goes in a template
T_MARK = (0x1122334455667788).to_bytes(8, "little")  # where the time goes (OTLP's fixed64)
SOURCE, HOST_FIELD, STATUS_FIELD = "bench/web-01", "web-01", 200
MSG_HEAD = RecordFactory.MSG_BASE[:83].rstrip() + " seq="  # + the counter: 99 characters
LOKI_LABELS = f'{{source="{SOURCE}", level="info", host="{HOST_FIELD}", status="200"}}'
PROTOBUF = (("content-type", "application/x-protobuf"),)
DEFAULT_RETRY_S = 0.1
Reply = tuple[int, dict[bytes, bytes], bytes]  # status, headers (lower-case names), body
Result = tuple[float, dict[str, float | None], dict[str, Any]]  # drive_raw's


def varint(v: int) -> bytes:
    out = bytearray()
    while v > 0x7F:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def fields_of(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, int or bytes) of a message of varint and length-delimited fields."""
    out: list[tuple[int, Any]] = []
    i = 0

    def read_varint() -> int:
        nonlocal i
        v = shift = 0
        while buf[i] & 0x80:
            v, shift, i = v | (buf[i] & 0x7F) << shift, shift + 7, i + 1
        v, i = v | buf[i] << shift, i + 1
        return v

    while i < len(buf):
        key = read_varint()
        assert key & 7 in (0, 2), f"wire type {key & 7}"
        v = read_varint()
        out.append((key >> 3, v if key & 7 == 0 else buf[i : i + v]))
        i += 0 if key & 7 == 0 else v
    return out


class Bodies:
    """Request bodies of ``n`` records each, numbered on from the last body's."""

    path, headers, ok = "", PROTOBUF, 200  # ok: the status of success

    def __init__(self, n: int) -> None:
        self.n, self.next = n, 0

    def make(self) -> bytes:
        k, self.next = self.next, self.next + self.n
        return self.build([COUNTER % c for c in range(k, k + self.n)], time.time_ns())

    def check(self) -> None:
        """A body decodes to the intended records (asserts)."""
        t, ks = time.time_ns(), range(10**9, 10**9 + self.n)
        got = self.decode(self.build([COUNTER % c for c in ks], t))
        assert got == [(MSG_HEAD + (COUNTER % c).decode(), t) for c in ks], got[:2]

    def build(self, counters: list[bytes], t_ns: int) -> bytes:
        raise NotImplementedError

    def decode(self, body: bytes) -> list[tuple[str, int]]:  # (message, time) per record
        raise NotImplementedError

    def rejected(self, reply: bytes) -> tuple[int, str]:  # (how many, why) in a success reply
        return 0, ""


class OtlpBodies(Bodies):
    path = "/v1/logs"

    def __init__(self, n: int) -> None:
        super().__init__(n)
        host, status = AnyValue(string_value=HOST_FIELD), AnyValue(int_value=STATUS_FIELD)
        rec = LogRecord(
            time_unix_nano=int.from_bytes(T_MARK, "little"),
            observed_time_unix_nano=int.from_bytes(T_MARK, "little"),
            severity_number=SEVERITY_NUMBER_INFO,
            severity_text="info",
            body=AnyValue(string_value=MSG_HEAD + MARK.decode()),
            attributes=[KeyValue(key="host", value=host), KeyValue(key="status", value=status)],
        )
        enc = ld(2, rec.SerializeToString())  # ScopeLogs.log_records
        at = enc.index(MARK)
        self.head, self.tail = enc[:at], enc[at + DIGITS :]
        assert enc.count(MARK) == self.head.count(T_MARK) == self.tail.count(T_MARK) == 1
        service = KeyValue(key="service.name", value=AnyValue(string_value=SOURCE))
        self.resource = ld(1, Resource(attributes=[service]).SerializeToString())

    def build(self, counters: list[bytes], t_ns: int) -> bytes:
        t = t_ns.to_bytes(8, "little")
        head, tail = self.head.replace(T_MARK, t), self.tail.replace(T_MARK, t)
        records = b"".join((head, (tail + head).join(counters), tail))
        # ExportLogsServiceRequest.resource_logs { resource, scope_logs { log_records } }
        return ld(1, self.resource + ld(2, records))

    def decode(self, body: bytes) -> list[tuple[str, int]]:
        (rl,) = ExportLogsServiceRequest.FromString(body).resource_logs
        assert rl.resource.attributes[0].value.string_value == SOURCE
        out = []
        for r in rl.scope_logs[0].log_records:
            assert (r.observed_time_unix_nano, r.severity_text) == (r.time_unix_nano, "info")
            kinds = [a.value.WhichOneof("value") for a in r.attributes]
            assert kinds == ["string_value", "int_value"], kinds
            out.append((r.body.string_value, r.time_unix_nano))
        return out

    def rejected(self, reply: bytes) -> tuple[int, str]:
        ps = ExportLogsServiceResponse.FromString(reply).partial_success
        return ps.rejected_log_records, ps.error_message


class LokiBodies(Bodies):
    path, ok = "/loki/api/v1/push", 204

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.labels = ld(1, LOKI_LABELS.encode())  # StreamAdapter.labels
        self.line = MSG_HEAD.encode()  # + the counter
        self.line_tag = b"\x12" + varint(len(self.line) + DIGITS)  # EntryAdapter.line

    def build(self, counters: list[bytes], t_ns: int) -> bytes:
        s, ns = divmod(t_ns, 1_000_000_000)
        ts = ld(1, b"\x08" + varint(s) + b"\x10" + varint(ns))  # EntryAdapter.timestamp
        entry = ts + self.line_tag + self.line
        head = b"\x12" + varint(len(entry) + DIGITS) + entry  # StreamAdapter.entries
        stream = self.labels + head + head.join(counters)
        return bytes(cramjam.snappy.compress_raw(ld(1, stream)))  # PushRequest.streams

    def decode(self, body: bytes) -> list[tuple[str, int]]:
        ((f, stream),) = fields_of(bytes(cramjam.snappy.decompress_raw(body)))
        (g, labels), *entries = fields_of(stream)
        assert (f, g, labels) == (1, 1, LOKI_LABELS.encode())
        assert {f for f, _ in entries} == {2}
        out = []
        for _, e in entries:
            (f, ts), (g, line) = fields_of(e)
            (_, s), (_, ns) = fields_of(ts)
            assert (f, g) == (1, 2)
            out.append((line.decode(), s * 1_000_000_000 + ns))
        return out


class HttpLost(Exception):
    """The HTTP connection broke (or the server broke HTTP) before a reply came."""


BROKEN = (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class HttpConn:
    """One HTTP/1.1 keep-alive connection (h11); reopened when the server closed it."""

    def __init__(self, port: int, name: str) -> None:
        self.port, self.name = port, name
        self.stream: trio.SocketStream | None = None
        self.h = h11.Connection(h11.CLIENT)
        self.connects = 0

    async def connect(self) -> None:
        await self.aclose()
        with trio.fail_after(CONNECT_TIMEOUT_S):
            self.stream = await trio.open_tcp_stream(HOST, self.port)
        self.h = h11.Connection(h11.CLIENT)
        self.connects += 1

    async def aclose(self) -> None:
        if self.stream is not None:
            await trio.aclose_forcefully(self.stream)
            self.stream = None

    async def post(self, path: str, headers: tuple[tuple[str, str], ...], body: bytes) -> Reply:
        """One request and its whole reply (the caller bounds it in time)."""
        head = [("host", f"{HOST}:{self.port}"), ("content-length", str(len(body))), *headers]
        status, got, parts = 0, dict[bytes, bytes](), list[bytes]()
        try:
            if self.stream is None or self.h.our_state is not h11.IDLE:
                await self.connect()
            assert self.stream is not None
            for out in (h11.Request(method="POST", target=path, headers=head), h11.Data(body)):
                for chunk in self.h.send_with_data_passthrough(out) or ():
                    await self.stream.send_all(chunk)  # the body as is, not copied
            await self.stream.send_all(self.h.send(h11.EndOfMessage()) or b"")
            while not isinstance(ev := self.h.next_event(), h11.EndOfMessage):
                if ev is h11.NEED_DATA:
                    self.h.receive_data(await self.stream.receive_some(1 << 16))
                elif isinstance(ev, h11.Response):
                    status, got = ev.status_code, dict(ev.headers)
                elif isinstance(ev, h11.Data):
                    parts.append(bytes(ev.data))
                elif isinstance(ev, h11.ConnectionClosed):
                    raise HttpLost(f"{self.name}: the server closed the connection")
        except BROKEN as e:
            await self.aclose()
            raise HttpLost(f"{self.name}: {e!r}") from e
        if self.h.our_state is h11.DONE and self.h.their_state is h11.DONE:
            self.h.start_next_cycle()  # keep-alive; else the next post reconnects
        return status, got, b"".join(parts)


class MeterLike(Protocol):  # bench.Meter
    t0: float

    def stop(self) -> tuple[float, dict[str, float | None]]: ...


@dataclass(frozen=True, slots=True)
class Ingest:
    """The drivers, with what bench.py lends them."""

    meter: Callable[[ProcCluster], MeterLike]  # bench.Meter
    load_bound_s: Callable[[Bench], float]  # the longest a timed window may take
    max_retry_sleep_s: float

    async def drive_otlp(
        self, bench: Bench, spec: LoadSpec, target: str, _a: list[str], st: LoadStats, _p: str
    ) -> Result:
        return await self._drive(bench, spec, target, st, OtlpBodies(spec.frame_records))

    async def drive_loki(
        self, bench: Bench, spec: LoadSpec, target: str, _a: list[str], st: LoadStats, _p: str
    ) -> Result:
        return await self._drive(bench, spec, target, st, LokiBodies(spec.frame_records))

    async def _drive(
        self, bench: Bench, spec: LoadSpec, target: str, st: LoadStats, bodies: Bodies
    ) -> Result:
        cluster = bench.cluster
        if cluster.credentials.ssl_context is not None or target not in cluster.http_ports:
            raise BenchFailed(f"{spec.key}: the ingest drivers need plain HTTP ports (http=True)")
        bodies.check()
        port = cluster.http_ports[target]
        conns = [HttpConn(port, f"{target}/http#{i}") for i in range(spec.inflight)]
        try:
            for c in conns:
                await c.connect()
            meter = self.meter(cluster)
            deadline = meter.t0 + bench.seconds
            with trio.fail_after(self.load_bound_s(bench)):
                async with trio.open_nursery() as workers:
                    for c in conns:
                        workers.start_soon(self._poster, bench, c, bodies, deadline, st)
            elapsed, cores = meter.stop()
        finally:
            for c in conns:
                await c.aclose()
        return elapsed, cores, {"http_connects": sum(c.connects for c in conns)}

    async def _poster(
        self, bench: Bench, conn: HttpConn, bodies: Bodies, deadline: float, st: LoadStats
    ) -> None:
        n = bodies.n
        while trio.current_time() < deadline:
            if st.sent + n > bench.max_records:
                st.stopped_by_count = True
                return
            b0 = time.perf_counter()
            body = bodies.make()
            st.build_s += time.perf_counter() - b0
            st.sent += n
            while True:  # this body until it is answered (a 429/503 resends it)
                t = trio.current_time()
                try:
                    with trio.fail_after(REQUEST_TIMEOUT_S):
                        status, headers, reply = await conn.post(bodies.path, bodies.headers, body)
                except trio.TooSlowError:
                    st.client_timeouts += 1
                    st.note(f"{conn.name}: no reply to a {n}-record POST in {REQUEST_TIMEOUT_S} s")
                    await conn.aclose()  # mid-request: the connection cannot be reused
                    break
                except HttpLost as e:
                    st.conn_lost += 1
                    st.note(f"connection lost: {e}")
                    return
                if status == bodies.ok:
                    st.latencies_s.append(trio.current_time() - t)
                    st.frames += 1
                    rejected, why = bodies.rejected(reply)
                    st.acked += n - rejected
                    if rejected:
                        st.record_errors += rejected
                        st.note(f"{rejected} of {n} records rejected: {why}"[:300])
                    break
                st.errors[f"http {status}"] += 1
                st.note(f"{conn.name}: {status} {headers.get(b'retry-after')!r}: {reply[:200]!r}")
                if status not in (429, 503):
                    break
                try:
                    wait = float(headers.get(b"retry-after", b""))
                except ValueError:
                    wait = DEFAULT_RETRY_S
                await trio.sleep(min(max(wait, 0.0), self.max_retry_sleep_s))
                if trio.current_time() >= deadline:
                    break
