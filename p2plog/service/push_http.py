"""The push endpoints of the HTTP port: OTLP/HTTP ``POST /v1/logs`` and Loki's
``POST /loki/api/v1/push`` (the conversions are ``compat.otlp`` and ``compat.loki_push``; the
storing is ``service.ingest``).

Answers, as each protocol's senders act on them:

- OTLP (spec "OTLP/HTTP Response"): 200 with an ``ExportLogsServiceResponse`` in the request's
  encoding; records that can never be taken are counted in its ``partial_success`` with the
  first reasons. 429 (backpressure) or 503 (no leader, a timeout, storage trouble) with
  ``Retry-After``: the exporter retries the request, and what was stored dedups. 400/413/415
  for a request that cannot be read: not retried. Error bodies are ``google.rpc.Status``.
- Loki: 204 when every entry is stored; 400 naming the entries refused (the rest are stored;
  Loki's own distributor does the same); 429/503 with ``Retry-After`` as above.

``ack``: quorum unless the request says ``X-P2plog-Ack: leader`` (or ``?ack=leader``).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from p2plog.compat import loki_push, otlp
from p2plog.compat.common import (
    MAX_DECODED_BYTES,
    MAX_DECODED_JSON_BYTES,
    IngestError,
    decompress,
)
from p2plog.compat.otlp import Converted
from p2plog.net.http import HttpRequest, HttpResponse, text
from p2plog.service.api import NodeApi
from p2plog.service.ingest import (
    RETRY_AFTER_S,
    IngestGate,
    IngestStats,
    Outcome,
    Prepared,
    prepare,
    store,
)

MAX_PUSH_BODY = 8 << 20  # bytes as sent (compressed); the decoded size is bounded apart
SHOWN_REASONS = 5
# gRPC codes (google.rpc.Code): invalid argument, resource exhausted, unavailable,
# unauthenticated, permission denied.
_GRPC = {400: 3, 413: 3, 415: 3, 429: 8, 503: 14, 401: 16, 403: 7}


class Push:
    def __init__(self, node: NodeApi) -> None:
        self.node = node
        self.gate = IngestGate()
        self.decoders = trio.CapacityLimiter(1)
        self.stats = IngestStats()

    async def otlp(self, req: HttpRequest) -> HttpResponse:
        return self.stats.answered("otlp", await self._otlp(req))

    def refused(self, req: HttpRequest, r: HttpResponse) -> HttpResponse:
        """A push refused before it was read (no valid token, the wrong role), in its
        protocol's error shape: OTLP's is a ``google.rpc.Status``."""
        if req.path != "/v1/logs":
            return self.stats.answered("loki", r)
        as_json = "json" in (req.headers.get("content-type") or "")
        msg = r.body.decode(errors="replace").strip()
        return self.stats.answered("otlp", _otlp_error(r.status, msg, as_json))

    async def loki(self, req: HttpRequest) -> HttpResponse:
        return self.stats.answered("loki", await self._loki(req))

    async def _otlp(self, req: HttpRequest) -> HttpResponse:
        as_json = False
        try:
            as_json = otlp.is_json(req.headers.get("content-type"))
            ack = _ack(req)
            out = await self._push(
                req, ack, lambda raw: otlp.records(otlp.parse(raw, as_json), raw), "otlp"
            )
        except IngestError as e:
            return _otlp_error(e.status, str(e), as_json)
        if out.retry is not None:
            return _otlp_error(*out.retry, as_json)
        body = otlp.response(len(out.rejected), _reasons(out), as_json)
        return HttpResponse(200, body, otlp.JSON if as_json else otlp.PROTOBUF)

    async def _loki(self, req: HttpRequest) -> HttpResponse:
        ct = req.headers.get("content-type")
        try:
            ack = _ack(req)
            out = await self._push(req, ack, lambda raw: loki_push.entries(raw, ct), "loki")
        except IngestError as e:
            return text(e.status, str(e))
        if out.retry is not None:
            return _retry(text(*out.retry))
        if out.rejected:
            n = len(out.rejected)
            return text(
                400,
                f"{n} of {n + out.stored} entries refused (the rest are stored): " + _reasons(out),
            )
        return HttpResponse(204)

    async def _push(
        self,
        req: HttpRequest,
        ack: str,
        convert: Callable[[bytes], list[Converted]],
        protocol: str,
    ) -> Outcome:
        """Decode, validate and store the request's records within the node's ingest bound.

        The decoding runs in a worker thread, one push at a time per node (``decoders``): on
        the event loop, eight 1000-record pushes arriving together held it past an election
        timeout, and the leader lost its term."""
        enc = req.headers.get("content-encoding")
        snappy_body = protocol == "loki" and "protobuf" in (req.headers.get("content-type") or "")
        node, body = self.node, req.body
        received, uncertain = node.corrected_now(), node.clock_uncertain()

        is_json = "json" in (req.headers.get("content-type") or "")
        limit = MAX_DECODED_JSON_BYTES if is_json else MAX_DECODED_BYTES

        def decode() -> Prepared:
            raw = body if snappy_body and enc in (None, "snappy") else decompress(body, enc, limit)
            try:
                return prepare(convert(raw), node.id, received, uncertain)
            except (ValueError, TypeError, OverflowError, RecursionError) as e:
                if isinstance(e, IngestError):
                    raise
                # A sender's bytes that a converter did not foresee: that request's 400.
                raise IngestError(f"the body cannot be read: {type(e).__name__}: {e}"[:200]) from e

        if not self.gate.try_take(len(body)):
            return Outcome(retry=(429, "this node is busy storing other pushes; retry"))
        try:
            prep = await trio.to_thread.run_sync(decode, limiter=self.decoders)
            if not self.gate.try_take(prep.bytes):
                return Outcome(retry=(429, "this node is busy storing other pushes; retry"))
            try:
                out = await store(node, prep, ack)
            finally:
                self.gate.give(prep.bytes)
            self.stats.records[protocol, "stored"] += out.stored
            self.stats.records[protocol, "rejected"] += len(out.rejected)
            return out
        finally:
            self.gate.give(len(body))


def _ack(req: HttpRequest) -> str:
    ack = req.headers.get("x-p2plog-ack") or req.arg("ack") or "quorum"
    if ack not in ("quorum", "leader"):
        raise IngestError(f"ack {ack[:20]!r}: quorum (the default) or leader")
    return ack


def _reasons(out: Outcome) -> str:
    shown = "; ".join(out.rejected[:SHOWN_REASONS])
    more = len(out.rejected) - SHOWN_REASONS
    return shown + (f"; and {more} more" if more > 0 else "")


def _retry(r: HttpResponse) -> HttpResponse:
    if r.status in (429, 503):
        r.headers.append(("retry-after", str(RETRY_AFTER_S)))
    return r


def _otlp_error(status: int, msg: str, as_json: bool) -> HttpResponse:
    body = otlp.status(_GRPC.get(status, 2), msg, as_json)
    return _retry(HttpResponse(status, body, otlp.JSON if as_json else otlp.PROTOBUF))
