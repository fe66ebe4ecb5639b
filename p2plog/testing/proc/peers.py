"""The one ``peers.toml`` writer of every local cluster (tests, benchmarks, scripts), and the
security material a secured test cluster needs: a cluster secret, client tokens, a trustme CA.

Why one writer: the file is the node's configuration contract (``p2plog/config.py`` reads it),
and hand-written copies drift apart (a section left out, ``data_dir`` relative in one and
absolute in another). Invariants: every value is written as a valid TOML value (``toml_value``:
strings as JSON strings, which TOML basic strings accept), ``[cluster]`` comes first, then the
extra sections in the order given, then one ``[[node]]`` table per node in the order given.

The certificates come from trustme, not from ``p2plog.security.certs``: the code under test does
not make the certificates it is tested with. trustme is imported only when TLS is asked for
(it is in the ``test`` extra).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
ADMIN = "admin"  # the token the harness itself uses on a cluster with tokens

TomlValue = str | int | float | bool | Path | Sequence[str] | Sequence[int]


def toml_value(v: TomlValue) -> str:
    """``v`` as a TOML value; bool before int (``True`` is an int in Python)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def section(name: str, keys: Mapping[str, TomlValue]) -> list[str]:
    """The lines of one ``[name]`` table (then a blank line)."""
    return [f"[{name}]", *_pairs(keys)]


def _pairs(keys: Mapping[str, TomlValue]) -> list[str]:
    return [*(f"{k} = {toml_value(v)}" for k, v in keys.items()), ""]


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One ``[[node]]`` table; ``data_dir`` None leaves the node's default."""

    id: str
    address: str  # host:port
    data_dir: str | Path | None = None
    join: bool = False  # outside the bootstrap configuration: added later with `member add`
    http_address: str | None = None  # the node's HTTP port (/metrics ...), None: off


def peers_toml(
    cluster: Mapping[str, TomlValue], nodes: Sequence[NodeEntry], sections: Sequence[str] = ()
) -> str:
    """The text of a ``peers.toml``: ``[cluster]`` with ``cluster``, the ``sections`` lines
    (``[security]``, ``[tls]``, ``[ntp]`` ..., see ``section``), one ``[[node]]`` per node."""
    lines = section("cluster", cluster)
    lines += [*sections]
    if lines[-1] != "":
        lines.append("")
    for n in nodes:
        keys: dict[str, TomlValue] = {"id": n.id, "address": n.address}
        if n.data_dir is not None:
            keys["data_dir"] = n.data_dir
        if n.join:
            keys["join"] = True
        if n.http_address is not None:
            keys["http_address"] = n.http_address
        lines += ["[[node]]", *_pairs(keys)]
    return "\n".join(lines)


def write_peers_toml(
    path: Path,
    cluster: Mapping[str, TomlValue],
    nodes: Sequence[NodeEntry],
    sections: Sequence[str] = (),
) -> Path:
    """Write ``peers_toml(...)`` to ``path``; returns ``path``."""
    path.write_text(peers_toml(cluster, nodes, sections))
    return path


def local_nodes(ports: Iterable[int], data_root: str | Path | None = "data") -> list[NodeEntry]:
    """Nodes ``n1``, ``n2`` ... on 127.0.0.1 at ``ports``, data in ``data_root/nX`` (relative
    paths are relative to the config file's directory)."""
    return [
        NodeEntry(f"n{i}", f"{HOST}:{p}", None if data_root is None else Path(data_root) / f"n{i}")
        for i, p in enumerate(ports, start=1)
    ]


# ---------------------------------------------------------------------------- security


@dataclass(frozen=True, slots=True)
class Credentials:
    """How a client reaches the nodes of one cluster: its TLS client context and a token."""

    ssl_context: ssl.SSLContext | None = None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Secured:
    """What a cluster enforces: a cluster secret, TLS (a trustme CA), client tokens (name ->
    role; an ``admin`` token is always added for the harness itself)."""

    secret: bool = True
    tls: bool = False
    tokens: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Security:
    """What ``make_security`` wrote: the config lines naming it, the tokens made (name ->
    token), a client TLS context trusting the CA and the CA file."""

    sections: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    client_ssl: ssl.SSLContext | None = None
    ca_path: Path | None = None

    @property
    def admin(self) -> Credentials:
        """The harness's own way in: the TLS context and the admin token (if any)."""
        return Credentials(self.client_ssl, self.tokens.get(ADMIN))


def make_security(root: Path, node_ids: Iterable[str], sec: Secured) -> Security:
    """Write the secret, tokens and certificates of ``sec`` into ``root``, with the names the
    returned config lines use (relative to a config file in ``root``)."""
    from p2plog.security import tokens
    from p2plog.security.certs import new_secret

    lines = ["[security]"]
    if sec.secret:
        (root / "cluster.secret").write_bytes(new_secret())
        (root / "cluster.secret").chmod(0o600)
        lines.append('secret_file = "cluster.secret"')
    made: dict[str, str] = {}
    if sec.tokens is not None:
        for name, role in {ADMIN: "admin", **sec.tokens}.items():
            made[name] = tokens.add(root / "tokens.toml", name, role)
        lines.append('tokens_file = "tokens.toml"')
    lines.append("")
    if not sec.tls:
        return Security(lines, made)
    import trustme

    ca = trustme.CA()
    ca_path = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    for nid in node_ids:
        cert = ca.issue_cert(HOST, "localhost", common_name=nid)
        cert.private_key_pem.write_to_path(str(root / f"{nid}.key"))
        cert.cert_chain_pems[0].write_to_path(str(root / f"{nid}.pem"))
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    lines += section("tls", {"ca": "ca.pem", "cert": "{id}.pem", "key": "{id}.key"})
    return Security(lines, made, client_ssl, ca_path)
