"""How a client reaches its nodes: ``ws://`` or ``wss://`` (and which CA it trusts), and the
token it shows.

Decided once per client from, in order: ``ClientOptions`` (``token``, ``ca``, ``tls``), the
environment (``P2PLOG_TOKEN``, ``P2PLOG_CA``), the addresses (a ``wss://`` address means TLS)
and, when the client was given a peers.toml or ``Config``, its ``[tls] ca``. With TLS but no CA
the system's trust store is used. The token goes in the websocket handshake's
``Authorization: Bearer`` header; it is never logged (``ClientOptions`` leaves it out of its
repr, and so does ``Dial``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p2plog.client.errors import ClientError
from p2plog.client.options import ClientOptions
from p2plog.config import Config, load, split_address
from p2plog.security.policy import is_loopback

TOKEN_ENV = "P2PLOG_TOKEN"
CA_ENV = "P2PLOG_CA"


@dataclass(frozen=True, slots=True)
class Dial:
    ssl_context: ssl.SSLContext | None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list, repr=False)

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context is not None else "ws"


def dial_for(
    nodes: str | Path | Config | Sequence[str], opts: ClientOptions, addresses: Sequence[str] = ()
) -> Dial:
    """``addresses``: the ``host:port`` the client will dial (to refuse sending a token in the
    clear to a host that is not this one)."""
    cfg = _config_of(nodes)
    if isinstance(nodes, str):
        items: list[str] = [nodes]
    elif isinstance(nodes, Path | Config):
        items = []
    else:
        items = [str(a) for a in nodes]
    wss = any(a.startswith("wss://") for a in items)
    ca = opts.ca or os.environ.get(CA_ENV) or (cfg.tls.ca if cfg and cfg.tls else None)
    ctx = None
    if opts.tls or wss or ca is not None:
        ctx = _context(Path(ca) if ca is not None else None)
    token = opts.token or os.environ.get(TOKEN_ENV) or None
    if token and ctx is None and not opts.insecure:
        remote = [a for a in addresses if not is_loopback(split_address(a)[0])]
        if remote:
            raise ClientError(
                f"refusing to send a token unencrypted to {', '.join(remote)}: use wss:// "
                f"addresses or a CA (--ca, P2PLOG_CA, [tls] in the config), or set "
                f"ClientOptions(insecure=True) if the network is trusted"
            )
    headers = [(b"authorization", b"Bearer " + token.encode())] if token else []
    return Dial(ctx, headers)


def _config_of(nodes: str | Path | Config | Sequence[str]) -> Config | None:
    if isinstance(nodes, Config):
        return nodes
    if isinstance(nodes, Path) or (isinstance(nodes, str) and nodes.endswith(".toml")):
        return load(nodes)
    return None


def _context(ca: Path | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as e:
        raise ClientError(
            f"cannot use {ca} as the cluster CA ({e}); pass the CA certificate file that "
            f"python -m p2plog certs wrote ([tls] ca), e.g. with --ca or {CA_ENV}"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
