"""What a node enforces, decided once at start from ``[security]`` and ``[tls]``.

The rule: a node that listens on, or talks to, an address other than loopback runs with TLS,
a cluster secret and client tokens, or with ``insecure = true`` (warned about at start). On
loopback each may be left out: the default demo cluster is reachable only from this host.

- no ``[tls]``: plain ``ws://``; records and tokens cross the network in the clear;
- no ``secret_file``: peer links are not authenticated (the handshake runs with an empty key),
  so anyone who can reach the port can join the Raft group as a member;
- no ``tokens_file``: every client may write, read and see the full status.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from p2plog.config import Config, NodeConfig
from p2plog.errors import ConfigError
from p2plog.security.tls import client_context, server_context
from p2plog.security.tokens import TokenStore

log = logging.getLogger("p2plog.node")

SECRET_MIN_CHARS = 32


@dataclass(frozen=True, slots=True)
class NodeSecurity:
    secret: bytes = field(repr=False)  # b"": peers are not authenticated
    tokens: TokenStore | None  # None: no client authentication
    server_ssl: ssl.SSLContext | None  # None: ws://
    client_ssl: ssl.SSLContext | None  # for dialing peers
    exposed: bool  # some address is not loopback
    warnings: tuple[str, ...] = ()

    @property
    def scheme(self) -> str:
        return "wss" if self.server_ssl is not None else "ws"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_node_security(cfg: Config, me: NodeConfig) -> NodeSecurity:
    """Read the secret, the tokens and the TLS files this node needs; ``ConfigError`` naming
    the file and the fix when one is missing, or when an exposed node lacks one without
    ``insecure = true``."""
    sec, f = cfg.security, cfg.path.name
    exposed = any(not is_loopback(n.host) for n in cfg.nodes) or any(
        n.http is not None and not is_loopback(n.http[0]) for n in cfg.nodes
    )  # the HTTP port (metrics, console) counts: it shows the cluster and its records
    missing = [
        what
        for what, present in (
            ("TLS ([tls] ca, cert, key)", cfg.tls is not None),
            ("a cluster secret ([security] secret_file)", sec.secret_file is not None),
            ("client tokens ([security] tokens_file)", sec.tokens_file is not None),
        )
        if not present
    ]
    if exposed and missing and not sec.insecure:
        raise ConfigError(
            f"{f}: node {me.id} is reachable beyond this host ({me.address} or a peer is not "
            f"a loopback address) but has no {', '.join(missing)}; make them with "
            f"python -m p2plog certs --config {f} and python -m p2plog token add NAME "
            f"--role write --config {f} (README, Security), or set [security] insecure = true "
            f"to run exposed"
        )
    warnings: list[str] = []
    if missing and (exposed or sec.insecure):
        warnings.append(
            f"INSECURE: running without {', '.join(missing)}; anyone who reaches "
            f"{me.address} can read, write or join the cluster"
        )
    secret = read_secret(sec.secret_file) if sec.secret_file else b""
    tokens = TokenStore(sec.tokens_file) if sec.tokens_file else None
    server = client = None
    if cfg.tls is not None:
        server = server_context(cfg.tls.cert_for(me.id), cfg.tls.key_for(me.id))
        client = client_context(cfg.tls.ca)
    return NodeSecurity(secret, tokens, server, client, exposed, tuple(warnings))


def read_secret(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
        mode = path.stat().st_mode
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read the cluster secret ({e.strerror or e}); create it once with "
            f"python -m p2plog certs and copy the same file to every node"
        ) from None
    if len(text) < SECRET_MIN_CHARS:
        raise ConfigError(
            f"{path}: the cluster secret has {len(text)} characters; it needs at least "
            f"{SECRET_MIN_CHARS} (python -m p2plog certs writes 64 random hex digits)"
        )
    if mode & 0o077:
        log.warning("%s: the cluster secret is readable by others (chmod 600 it)", path)
    return text.encode()


def describe(sec: NodeSecurity) -> str:
    """One line for the start-up log: what this node enforces."""
    parts = [
        "TLS" if sec.server_ssl else "no TLS",
        "peers authenticated" if sec.secret else "peers NOT authenticated",
        f"client tokens ({len(sec.tokens)})" if sec.tokens is not None else "no client tokens",
    ]
    return ", ".join(parts)
