"""What the node's HTTP port serves (``http_address`` in ``peers.toml``; off by default):

- ``GET /healthz``: 200 while the process serves (liveness: restart it if this fails).
- ``GET /readyz``: 200 when the node is ready for traffic, else 503 naming every reason: a
  leader is known, this node applied everything it knows committed, and its storage takes
  writes (not failed, disk not full). A node cut off from the majority loses its leader within
  an election timeout and turns 503; it turns 200 again once it hears from a leader and
  caught up.
- ``GET /metrics``: Prometheus text format (``service.metrics``).
- ``POST /v1/logs`` (OTLP/HTTP) and ``POST /loki/api/v1/push`` (Loki): records in
  (``service.push_http``); ``GET /loki/api/v1/...``: Loki's read API, the subset Grafana's
  Loki data source and logcli use (``service.loki_api``).

With a tokens file, ``/metrics``, ``/api/*`` and the Loki reads need a token with the read role
or better, the pushes one with the write role (``Authorization: Bearer ...``, as Prometheus'
``authorization``, the OTLP exporters' ``headers`` and Grafana's data source settings send
it); the health endpoints need none (probes).

Anything else is a 404 that lists these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from p2plog.net.http import HttpRequest, HttpResponse, Site, text
from p2plog.net.listener import bearer_token
from p2plog.security.tokens import Grant
from p2plog.service import metrics
from p2plog.service.api import NodeApi
from p2plog.service.console import Console, page
from p2plog.service.loki_api import LokiApi
from p2plog.service.push_http import MAX_PUSH_BODY, Push

ENDPOINTS = (
    "GET / (the console), /healthz, /readyz, /metrics, /api/cluster, /api/tail, /api/query, "
    "/loki/api/v1/{query_range,query,labels,label/NAME/values,series,tail}; "
    "POST /v1/logs (OTLP), /loki/api/v1/push"
)
PUSH_PATHS = ("/v1/logs", "/loki/api/v1/push")
MAX_BODY = 1 << 20  # any other request's body (none of them reads one)

GrantOf = Callable[[str | None], Grant | None]


def not_ready(st: dict[str, Any]) -> list[str]:
    """Why this node is not ready for traffic (empty: it is)."""
    why = []
    if st["leader"] is None:
        why.append("no leader known")
    if st["applied_index"] < st["commit_index"]:
        why.append(f"applied {st['applied_index']} of {st['commit_index']} committed")
    if st["storage_failed"]:
        why.append("storage failed: writes refused until a restart")
    if st["disk_full"]:
        why.append("disk full: writes wait for space")
    return why


def body_limit(method: str, path: str) -> int:
    return MAX_PUSH_BODY if method == "POST" and path in PUSH_PATHS else MAX_BODY


def handler_for(node: NodeApi, grant_of: GrantOf) -> Site:
    """What ``node``'s HTTP port serves; ``grant_of(token)`` is who a bearer token is (None:
    not valid)."""
    console = Console(node)
    push = Push(node)
    registry = metrics.registry_for(node, (push.stats, push.gate))
    loki = LokiApi(node)

    async def handle(req: HttpRequest) -> HttpResponse:
        if req.method == "POST" and req.path in PUSH_PATHS:
            grant = _grant(req, grant_of, "submit")
            if isinstance(grant, HttpResponse):
                return push.refused(req, grant)
            return await (push.otlp(req) if req.path == "/v1/logs" else push.loki(req))
        if req.method not in ("GET", "HEAD"):
            return text(405, f"{req.method} {req.path} is not served here; {ENDPOINTS}")
        if req.path == "/healthz":
            return text(200, "ok")
        if req.path == "/readyz":
            why = not_ready(node.status())
            return text(503, "not ready: " + "; ".join(why)) if why else text(200, "ready")
        if req.path in ("/", "/console"):
            return HttpResponse(200, page(), "text/html; charset=utf-8")
        if req.path == "/metrics" or req.path.startswith(("/api/", "/loki/")):
            grant = _grant(req, grant_of, "read")
            if isinstance(grant, HttpResponse):
                return grant
            if req.path == "/metrics":
                return HttpResponse(200, metrics.render(registry), metrics.CONTENT_TYPE)
            if req.path.startswith("/loki/"):
                return await loki.handle(req)
            return await console.handle(req, grant)
        return text(404, f"no {req.path} here; {ENDPOINTS}")

    return Site(handle, body_limit)


def _grant(req: HttpRequest, grant_of: GrantOf, what: str) -> Grant | HttpResponse:
    grant = grant_of(bearer_token(req.headers.get("authorization")))
    if grant is None:
        return text(401, "this token is not valid here (unknown or revoked)")
    if not grant.can(what):
        role = "write" if what == "submit" else what
        need = f"{req.method} {req.path} needs a token with the {role} role"
        return text(401 if grant.role is None else 403, need)
    return grant
