"""Multi-process test harness: 3 x ``python -m p2plog run`` on 127.0.0.1 and a raw client.

Independent of ``p2plog.client`` on purpose: ``RawClient`` speaks the wire protocol of
``p2plog/wire/client.py`` directly (trio-websocket + cbor2), so these tests check the node, not a
client library written by the same people.

Rules this module keeps (FAULTS.md section 9):

- every network wait is under ``trio.fail_after``/``move_on_after``; every loop is bounded by
  count or time;
- the node processes are ``p2plog.testing.proc.ProcCluster``'s: it ends them by pid only
  (SIGTERM, a bounded wait, then SIGKILL), never by name, and each node writes stdout/stderr
  to its own log file in ``tmp_path`` (appended across restarts, with a marker line), so a
  failing test can show what every node said; ``Cluster`` adds the waits that talk to nodes.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import ssl
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cbor2
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket

from p2plog.testing.ports import HOST
from p2plog.testing.proc import Credentials, ProcCluster, Secured

VERSION = 1
MAX_REPLY_BYTES = 64 << 20
CONNECT_TIMEOUT_S = 2.0
DISCONNECT_TIMEOUT_S = 1.0


class RequestTimeout(Exception):
    """No reply to a request within its timeout (the node may still act on it)."""


class NotConnected(Exception):
    """The connection closed before the reply arrived."""


# ---------------------------------------------------------------------------- raw client


def encode(kind: str, fields: dict[str, Any]) -> bytes:
    return cbor2.dumps({**fields, "v": VERSION, "kind": kind})


class RawClient:
    """One ``/client`` websocket; many requests in flight, replies matched by ``req``.

    A reader task owns ``get_message``; each request waits on its own event. Replies to
    requests nobody waits for any more (timed out) are dropped.
    """

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._reqs = itertools.count(1)
        self._waiting: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self.closed: ConnectionClosed | None = None
        self.dropped_replies = 0

    async def _read(self) -> None:
        try:
            while True:
                raw = await self.ws.get_message()
                assert isinstance(raw, bytes), f"node sent a text frame: {raw!r}"
                msg = cbor2.loads(raw)
                assert isinstance(msg, dict), f"node sent a non-map frame: {msg!r}"
                slot = self._waiting.pop(msg.get("req", -1), None)
                if slot is None:
                    self.dropped_replies += 1
                    continue
                slot[1].append(msg)
                slot[0].set()
        except ConnectionClosed as e:
            self.closed = e
        finally:
            for ev, _ in self._waiting.values():
                ev.set()

    async def request(
        self, kind: str, fields: dict[str, Any] | None = None, *, timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Send one request and return its reply (``ack``, ``error``, ``batch``, ...)."""
        if self.closed is not None:
            raise NotConnected(f"connection closed: {self.closed.reason}")
        req = next(self._reqs)
        done = trio.Event()
        box: list[dict[str, Any]] = []
        self._waiting[req] = (done, box)
        try:
            with trio.move_on_after(timeout_s):
                await self.ws.send_message(encode(kind, {**(fields or {}), "req": req}))
                await done.wait()
        except ConnectionClosed as e:
            raise NotConnected(f"connection closed: {e.reason}") from None
        finally:
            self._waiting.pop(req, None)
        if box:
            return box[0]
        if self.closed is not None:
            raise NotConnected(f"connection closed: {self.closed.reason}")
        raise RequestTimeout(f"no reply to {kind} req={req} within {timeout_s} s")

    async def submit(
        self, records: Sequence[dict[str, Any]], *, ack: str = "quorum", timeout_s: float = 5.0
    ) -> dict[str, Any]:
        return await self.request(
            "submit", {"ack": ack, "records": list(records)}, timeout_s=timeout_s
        )

    async def status(self, *, timeout_s: float = 2.0) -> dict[str, Any]:
        reply = await self.request("status", timeout_s=timeout_s)
        assert reply["kind"] == "status", reply
        node: dict[str, Any] = reply["node"]
        return node

    async def query_all(
        self, from_index: int = 1, *, page: int = 5000, timeout_s: float = 30.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Every matching committed record from ``from_index``, following ``next_index``."""
        out: list[dict[str, Any]] = []
        with trio.fail_after(timeout_s):
            for _ in range(100_000):
                reply = await self.request(
                    "query", {"from_index": from_index, "limit": page, **filters}
                )
                assert reply["kind"] == "batch", reply
                out.extend(reply["records"])
                if reply["done"]:
                    return out
                assert reply["next_index"] > from_index, reply
                from_index = reply["next_index"]
        raise AssertionError("query paging did not finish")


# Credentials by port, filled by ``Cluster`` for the clusters it secures, so helpers and
# tests that talk to a node as its operator need not pass them; attack tests pass their own.
CREDENTIALS: dict[int, Credentials] = {}
AS_OPERATOR = Credentials(token="<the cluster's admin token>")  # sentinel: look up the port


@contextlib.asynccontextmanager
async def open_raw_ws(
    port: int,
    path: str = "/client",
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    creds: Credentials = AS_OPERATOR,
    max_message_size: int = MAX_REPLY_BYTES,
) -> AsyncIterator[WebSocketConnection]:
    """A websocket to a node: by default with the cluster's TLS context and admin token;
    ``creds=Credentials()`` for a stranger (plain ``ws://``, no token)."""
    if creds is AS_OPERATOR:
        creds = CREDENTIALS.get(port, Credentials())
    headers = [(b"authorization", f"Bearer {creds.token}".encode())] if creds.token else []
    async with open_websocket(
        HOST,
        port,
        path,
        use_ssl=creds.ssl_context or False,
        extra_headers=headers,
        max_message_size=max_message_size,
        connect_timeout=connect_timeout_s,
        disconnect_timeout=DISCONNECT_TIMEOUT_S,
    ) as ws:
        yield ws


@contextlib.asynccontextmanager
async def open_client(
    port: int, *, connect_timeout_s: float = CONNECT_TIMEOUT_S, creds: Credentials = AS_OPERATOR
) -> AsyncIterator[RawClient]:
    """A ``RawClient`` on ``ws://127.0.0.1:port/client`` with its reader task.

    An exception from the body comes out as itself, not wrapped in the ExceptionGroup of the
    reader's nursery, so callers (and pytest) can catch and read it."""
    try:
        async with open_raw_ws(port, connect_timeout_s=connect_timeout_s, creds=creds) as ws:
            client = RawClient(ws)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._read)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as eg:
        raise _single(eg) from None


def _single(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one leaf exception of a (nested) group of one, else the group itself."""
    exc: BaseException = eg
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


# ---------------------------------------------------------------------------- records


def make_records(n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` valid records with fresh ids (text UUIDs, as a client would make them)."""
    now = time.time_ns()
    return [
        {
            "id": str(uuid.uuid4()),
            "ts": now + i,
            "level": "info",
            "source": f"test.{tag}",
            "msg": f"{tag} record {i}",
            "fields": {"seq": i, "tag": tag},
        }
        for i in range(n)
    ]


def log_key(records: Iterable[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """What must be identical on every node: (id, index, term) in log order."""
    return [(r["id"], r["index"], r["term"]) for r in records]


def duplicates(ids: Iterable[str]) -> dict[str, int]:
    return {k: v for k, v in Counter(ids).items() if v > 1}


@dataclass(slots=True)
class WriterStats:
    acked: dict[str, tuple[int, int, bool]] = field(default_factory=dict)  # id: index, term, dup
    submitted: set[str] = field(default_factory=set)
    batches_acked: int = 0
    attempts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    max_batch_s: float = 0.0
    stuck: list[str] = field(default_factory=list)


async def submit_batches(
    port: int,
    batches: Iterator[list[dict[str, Any]]],
    stats: WriterStats,
    *,
    ack: str = "quorum",
    attempt_timeout_s: float = 2.0,
    batch_deadline_s: float = 20.0,
) -> bool:
    """Submit each batch through one node until all its records are acked, retrying with the
    SAME ids on an ``error`` reply, a timeout or a dropped connection (then reconnecting), so
    each id is stored once (the node dedups retries) and every acked id lands in
    ``stats.acked``. Returns False, noting it in ``stats.stuck``, if one batch takes longer
    than ``batch_deadline_s``."""
    pending: list[dict[str, Any]] = []
    size = 0
    t0 = 0.0

    def next_batch() -> bool:
        nonlocal pending, size, t0
        got = next(batches, None)
        if got is None:
            return False
        stats.submitted.update(r["id"] for r in got)
        pending, size, t0 = list(got), len(got), time.monotonic()
        return True

    def overdue() -> bool:
        if time.monotonic() - t0 <= batch_deadline_s:
            return False
        stats.stuck.append(
            f"{len(pending)} of {size} records unacked after {batch_deadline_s} s "
            f"(errors so far: {dict(stats.errors)})"
        )
        return True

    if not next_batch():
        return True
    for _ in range(10_000):  # connections; each failed one costs >= 50 ms
        try:
            async with open_client(port) as client:
                for _ in range(1_000_000):  # attempts on this connection
                    if overdue():
                        return False
                    stats.attempts += 1
                    try:
                        reply = await client.submit(pending, ack=ack, timeout_s=attempt_timeout_s)
                    except RequestTimeout:
                        stats.errors["RequestTimeout"] += 1
                        continue
                    if reply["kind"] == "error":
                        stats.errors[reply["code"]] += 1
                        await trio.sleep(reply.get("retry_after_ms", 50) / 1000)
                        continue
                    assert reply["kind"] == "ack", reply
                    done = set()
                    for a in reply["acks"]:
                        assert a["id"] == pending[a["i"]]["id"], (a, pending[a["i"]])
                        assert isinstance(a["index"], int), a
                        assert a["index"] >= 1, a
                        assert isinstance(a["term"], int), a
                        assert a["term"] >= 1, a
                        stats.acked[a["id"]] = (a["index"], a["term"], a["dup"])
                        done.add(a["i"])
                    for err in reply["errors"]:
                        stats.errors["record error: " + err["error"][:60]] += 1
                    pending = [r for i, r in enumerate(pending) if i not in done]
                    if pending:
                        continue
                    stats.batches_acked += 1
                    stats.max_batch_s = max(stats.max_batch_s, time.monotonic() - t0)
                    if not next_batch():
                        return True
        except (NotConnected, OSError, HandshakeError, ConnectionClosed) as e:
            stats.errors[type(e).__name__] += 1
        if overdue():
            return False
        await trio.sleep(0.05)
    raise AssertionError("submit_batches: too many reconnects")


async def run_writer(
    port: int,
    stats: WriterStats,
    stop: trio.Event,
    *,
    batch: int = 20,
    tag: str = "w",
    ack: str = "quorum",
    max_batches: int = 100_000,
) -> None:
    """Steady load: fresh batches of ``batch`` records through one node until ``stop`` is set
    (or a batch gets stuck, which ``stats.stuck`` reports)."""

    def fresh() -> Iterator[list[dict[str, Any]]]:
        for n in range(max_batches):
            if stop.is_set():
                return
            yield make_records(batch, f"{tag}{n}")

    await submit_batches(port, fresh(), stats, ack=ack)


async def write_records(
    port: int,
    records: Sequence[dict[str, Any]],
    stats: WriterStats,
    *,
    batch: int = 500,
    concurrency: int = 4,
    ack: str = "quorum",
) -> None:
    """Write ``records`` in batches through one node, ``concurrency`` connections at once."""
    queue = iter([list(records[i : i + batch]) for i in range(0, len(records), batch)])
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(partial(submit_batches, port, queue, stats, ack=ack))


# ---------------------------------------------------------------------------- cluster


class Cluster(ProcCluster):
    """``ProcCluster`` (p2plog/testing/proc: processes, peers.toml, logs) plus the waits of
    the tests, which reach the nodes through ``RawClient``; a secured cluster's credentials
    go into ``CREDENTIALS`` so helpers reach its nodes as the operator."""

    def __init__(
        self,
        root: Path,
        *,
        n: int = 3,
        name: str = "ptest",
        tick_ms: int = 20,
        log_level: str = "INFO",
        secured: Secured | None = None,
        cluster_keys: dict[str, int] | None = None,
        sections: Sequence[str] = (),
        joining: int = 0,
        http: bool = False,
    ) -> None:
        super().__init__(
            root,
            n=n,
            joining=joining,
            http=http,
            name=name,
            tick_ms=tick_ms,
            cluster_keys=cluster_keys,
            sections=sections,
            secured=secured,
            log_level=log_level,
        )
        for nd in self.nodes.values():
            CREDENTIALS[nd.port] = self.credentials

    @property
    def client_ssl(self) -> ssl.SSLContext | None:
        return self.security.client_ssl

    async def restart(self, nid: str, *, wait_serving_s: float = 10.0) -> None:
        """Start a stopped node again (same data dir) and wait until it answers ``status``."""
        await super().restart(nid)
        await self.wait_serving(nid, timeout_s=wait_serving_s)

    async def verify_data_dir(self, nid: str, *, timeout_s: float = 30.0) -> tuple[int, str]:
        """``python -m p2plog verify`` on a stopped node's data dir: (exit code, output)."""
        assert not self.nodes[nid].alive, f"{nid} is running; verify reads a stopped node"
        cmd = [sys.executable, "-m", "p2plog", "verify", "--no-progress"]
        with trio.fail_after(timeout_s):
            done = await trio.run_process(
                [*cmd, str(self.nodes[nid].data_dir)],
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                check=False,
            )
        return done.returncode, done.stdout.decode(errors="replace")

    # --------------------------------------------------------------- status

    async def status(self, nid: str, *, timeout_s: float = 2.0) -> dict[str, Any]:
        with trio.fail_after(timeout_s):
            async with open_client(self.port(nid), connect_timeout_s=timeout_s) as c:
                return await c.status(timeout_s=timeout_s)

    async def try_status(self, nid: str, *, timeout_s: float = 1.0) -> dict[str, Any] | None:
        try:
            return await self.status(nid, timeout_s=timeout_s)
        except (
            OSError,
            HandshakeError,  # the node is starting or stopping
            ConnectionClosed,
            NotConnected,
            RequestTimeout,
            trio.TooSlowError,
        ):
            return None

    async def statuses(self, nids: Iterable[str], *, timeout_s: float = 1.0) -> dict[str, Any]:
        out: dict[str, Any] = {}

        async def one(nid: str) -> None:
            out[nid] = await self.try_status(nid, timeout_s=timeout_s)

        async with trio.open_nursery() as nursery:
            for nid in nids:
                nursery.start_soon(one, nid)
        return out

    async def wait_serving(self, nid: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
        with trio.move_on_after(timeout_s):
            for _ in range(100_000):  # bounded by count, and by the move_on_after above
                st = await self.try_status(nid, timeout_s=1.0)
                if st is not None:
                    return st
                await trio.sleep(0.05)
        raise AssertionError(
            f"{nid} does not answer status within {timeout_s} s\n{self.log_tail(nid)}"
        )

    async def leader(self, *, timeout_s: float = 10.0, exclude: Iterable[str] = ()) -> str:
        """The leader every live node agrees on (one node reports itself leader, the others
        name it, all in the same term); waits for that, bounded."""
        excluded = set(exclude)
        last: dict[str, Any] = {}
        try:
            with trio.fail_after(timeout_s):
                for _ in range(100_000):  # bounded by count, and by the fail_after above
                    live = self.live()
                    last = await self.statuses(live)
                    got = [s for s in last.values() if s is not None]
                    leaders = {s["leader"] for s in got}
                    terms = {s["term"] for s in got}
                    if len(got) == len(live) and len(leaders) == 1 and len(terms) == 1:
                        (lead,) = leaders
                        if (
                            lead is not None
                            and lead not in excluded
                            and last.get(lead) is not None
                            and last[lead]["role"] == "leader"
                        ):
                            return str(lead)
                    await trio.sleep(0.02)
                raise trio.TooSlowError
        except trio.TooSlowError:
            summary = {k: (v and (v["role"], v["term"], v["leader"])) for k, v in last.items()}
            raise AssertionError(
                f"no agreed leader within {timeout_s} s; last statuses {summary}\n"
                + self.log_tails()
            ) from None

    async def wait_converged(
        self, nids: Sequence[str], *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Wait until the nodes agree on last/commit/applied index; return their statuses."""
        last: dict[str, Any] = {}
        try:
            with trio.fail_after(timeout_s):
                for _ in range(100_000):  # bounded by count, and by the fail_after above
                    last = await self.statuses(nids)
                    got = [s for s in last.values() if s is not None]
                    if len(got) == len(nids):
                        keys = {
                            (s["last_index"], s["commit_index"], s["applied_index"]) for s in got
                        }
                        if len(keys) == 1:
                            (k,) = keys
                            if k[0] == k[1] == k[2]:
                                return last
                    await trio.sleep(0.05)
                raise trio.TooSlowError
        except trio.TooSlowError:
            summary = {
                k: v
                and (v["role"], v["term"], v["last_index"], v["commit_index"], v["applied_index"])
                for k, v in last.items()
            }
            raise AssertionError(
                f"nodes {list(nids)} did not converge within {timeout_s} s: "
                f"(role, term, last, commit, applied) = {summary}\n" + self.log_tails()
            ) from None

    async def query_all(self, nid: str, *, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        with trio.fail_after(timeout_s):
            async with open_client(self.port(nid)) as c:
                return await c.query_all(1, timeout_s=timeout_s)


def fmt_s(seconds: float) -> str:
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:.0f} ms"
