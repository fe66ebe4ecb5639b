"""``python -m p2plog certs`` and ``python -m p2plog token``: an operator's security files.

``certs`` creates what ``peers.toml`` names and is missing: the cluster CA (``[tls] ca``, its
key beside it as ``.key``), each node's certificate and key (``[tls] cert``/``key``, for the
node's address; loopback nodes also for ``localhost``), and the cluster secret
(``[security] secret_file``). It never overwrites a file, so it is safe to run again after
adding a node. ``token add NAME --role ROLE`` appends a token to ``[security] tokens_file`` and
prints it, the only time it is shown; ``token list`` and ``token revoke NAME`` do the rest.
Nodes pick up a changed tokens file within a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p2plog.config import Config, load
from p2plog.errors import ConfigError
from p2plog.security import certs, tokens
from p2plog.security.policy import is_loopback


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("certs", help="create the cluster CA, node certificates and secret")
    c.add_argument("--config", type=Path, default=Path("peers.toml"), help="peers.toml")
    t = sub.add_parser("token", help="add, list or revoke client tokens")
    t.add_argument("--config", type=Path, default=Path("peers.toml"), help="peers.toml")
    ts = t.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = ts.add_parser("add", help="make a token (printed once)")
    a.add_argument("name", help="who uses it, e.g. shipper-web1")
    a.add_argument("--role", choices=tokens.ROLES, required=True)
    ts.add_parser("list", help="names and roles")
    r = ts.add_parser("revoke", help="remove a token")
    r.add_argument("name")


def cmd_certs(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    if cfg.tls is None and cfg.security.secret_file is None:
        raise ConfigError(
            f"{cfg.path.name}: nothing to create: add a [tls] table (ca, cert, key) and/or "
            f"[security] secret_file (README, Security)"
        )
    lines: list[str] = []
    if cfg.tls is not None:
        plans = [
            certs.NodePlan(n.id, _hosts(n.host), cfg.tls.cert_for(n.id), cfg.tls.key_for(n.id))
            for n in cfg.nodes
        ]
        ca_key = cfg.tls.ca.with_suffix(".key")
        lines = certs.create_cluster_files(
            cfg.cluster.name, cfg.tls.ca, ca_key, plans, cfg.security.secret_file
        )
    else:
        lines = _secret_only(cfg)
    for line in lines:
        print(line)
    return 0


def _hosts(host: str) -> tuple[str, ...]:
    if is_loopback(host):
        return tuple(dict.fromkeys((host, "localhost", "127.0.0.1")))
    return (host,)


def _secret_only(cfg: Config) -> list[str]:
    path = cfg.security.secret_file
    assert path is not None
    if path.exists():
        return [f"kept {path} (exists)"]
    certs.write_new(path, certs.new_secret(), private=True)
    return [f"wrote {path} (cluster secret, mode 0600; copy it to every node)"]


def cmd_token(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    path = cfg.security.tokens_file
    if path is None:
        raise ConfigError(
            f'{cfg.path.name}: no [security] tokens_file; add tokens_file = "secrets/tokens.toml"'
        )
    if args.action == "add":
        token = tokens.add(path, args.name, args.role)
        print(token)
        print(
            f"token {args.name!r} ({args.role}) added to {path}; it is shown only now. Give it "
            f"to the client as P2PLOG_TOKEN (or --token); nodes pick it up within a second.",
            file=sys.stderr,
        )
        return 0
    if args.action == "list":
        for name, role in tokens.listing(path):
            print(f"{name}\t{role}")
        return 0
    if tokens.revoke(path, args.name):
        print(f"token {args.name!r} revoked; nodes refuse it within a second", file=sys.stderr)
        return 0
    print(f"p2plog token: no token named {args.name!r} in {path}", file=sys.stderr)
    return 1
