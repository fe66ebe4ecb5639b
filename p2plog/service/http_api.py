"""What the node's HTTP port serves (``http_address`` in ``peers.toml``; off by default):

- ``GET /healthz``: 200 while the process serves (liveness: restart it if this fails).
- ``GET /readyz``: 200 when the node is ready for traffic, else 503 naming every reason: a
  leader is known, this node applied everything it knows committed, and its storage takes
  writes (not failed, disk not full). A node cut off from the majority loses its leader within
  an election timeout and turns 503; it turns 200 again once it hears from a leader and
  caught up.
- ``GET /metrics``: Prometheus text format (``service.metrics``). With a tokens file it needs
  a token with the read role or better (``Authorization: Bearer ...``, as Prometheus'
  ``authorization`` setting sends it); the health endpoints need none (probes).

Anything else is a 404 that lists these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from p2plog.net.http import HttpRequest, HttpResponse, text
from p2plog.net.listener import bearer_token
from p2plog.security.tokens import Grant
from p2plog.service import metrics
from p2plog.service.api import NodeApi
from p2plog.service.console import Console, page

ENDPOINTS = "GET / (the console), /healthz, /readyz, /metrics, /api/cluster, /api/tail, /api/query"

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


def handler_for(
    node: NodeApi, grant_of: GrantOf
) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
    """The request handler of ``node``'s HTTP port; ``grant_of(token)`` is who a bearer token
    is (None: not valid)."""
    registry = metrics.registry_for(node)
    console = Console(node)

    async def handle(req: HttpRequest) -> HttpResponse:
        if req.method not in ("GET", "HEAD"):
            return text(405, f"{req.method} is not served here; {ENDPOINTS}")
        if req.path == "/healthz":
            return text(200, "ok")
        if req.path == "/readyz":
            why = not_ready(node.status())
            return text(503, "not ready: " + "; ".join(why)) if why else text(200, "ready")
        if req.path in ("/", "/console"):
            return HttpResponse(200, page(), "text/html; charset=utf-8")
        if req.path == "/metrics" or req.path.startswith("/api/"):
            grant = _grant(req, grant_of)
            if isinstance(grant, HttpResponse):
                return grant
            if req.path == "/metrics":
                return HttpResponse(200, metrics.render(registry), metrics.CONTENT_TYPE)
            return await console.handle(req, grant)
        return text(404, f"no {req.path} here; {ENDPOINTS}")

    return handle


def _grant(req: HttpRequest, grant_of: GrantOf) -> Grant | HttpResponse:
    grant = grant_of(bearer_token(req.headers.get("authorization")))
    if grant is None:
        return text(401, "this token is not valid here (unknown or revoked)")
    if not grant.can("read"):
        need = f"{req.path} needs a token with the read role"
        return text(401 if grant.role is None else 403, need)
    return grant
