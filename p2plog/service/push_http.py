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

from p2plog.compat import loki_push, otlp
from p2plog.compat.common import IngestError, decompress
from p2plog.compat.otlp import Converted
from p2plog.net.http import HttpRequest, HttpResponse, text
from p2plog.service.api import NodeApi
from p2plog.service.ingest import RETRY_AFTER_S, IngestGate, Outcome, store

MAX_PUSH_BODY = 8 << 20  # bytes as sent (compressed); the decoded size is bounded apart
SHOWN_REASONS = 5
DECODED_FACTOR = 4  # what decoded records and their bodies cost, per byte as decompressed
_GRPC = {400: 3, 413: 3, 415: 3, 429: 8, 503: 14}  # invalid argument, exhausted, unavailable


class Push:
    def __init__(self, node: NodeApi) -> None:
        self.node = node
        self.gate = IngestGate()

    async def otlp(self, req: HttpRequest) -> HttpResponse:
        as_json = False
        try:
            as_json = otlp.is_json(req.headers.get("content-type"))
            ack = _ack(req)
            out = await self._push(
                req, ack, lambda raw: otlp.records(otlp.parse(raw, as_json), raw)
            )
        except IngestError as e:
            return _otlp_error(e.status, str(e), as_json)
        if out.retry is not None:
            return _otlp_error(*out.retry, as_json)
        body = otlp.response(len(out.rejected), _reasons(out), as_json)
        return HttpResponse(200, body, otlp.JSON if as_json else otlp.PROTOBUF)

    async def loki(self, req: HttpRequest) -> HttpResponse:
        ct = req.headers.get("content-type")
        try:
            ack = _ack(req)
            out = await self._push(req, ack, lambda raw: loki_push.entries(raw, ct), loki=True)
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
        loki: bool = False,
    ) -> Outcome:
        """Decode and store the request's records, within the node's ingest bound (which
        holds until they are stored: the decoded records are the bulk of what a push costs)."""
        enc = req.headers.get("content-encoding")
        snappy_body = loki and "protobuf" in (req.headers.get("content-type") or "")
        # (Nothing yields between the decompression and the gate: one unchecked body at most.)
        raw = req.body if snappy_body and enc in (None, "snappy") else decompress(req.body, enc)
        size = (len(req.body) + len(raw)) * DECODED_FACTOR
        if not self.gate.try_take(size):
            return Outcome(retry=(429, "this node is busy storing other pushes; retry"))
        try:
            taken = convert(raw)
            del raw
            return await store(self.node, taken, ack)
        finally:
            self.gate.give(size)


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
