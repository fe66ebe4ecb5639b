"""peers.toml -> frozen dataclasses. One file serves every host; ``--node ID`` (or
``self = "ID"``) picks this host's entry.

Every error names the file, the key and the fix, e.g.
``peers.toml: node "n3" has no address; add address = "host:port"``. Unknown keys are errors: a
typo must not be silently ignored.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2plog.errors import ConfigError
from p2plog.raft.types import NodeId

LEVELS = ("debug", "info", "warning", "error", "critical")
# Every node id travels on the wire, where wire.peer.PeerId admits no other.
NODE_ID = re.compile(r"(?=.*[A-Za-z0-9])[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    id: NodeId
    host: str
    port: int
    data_dir: Path
    # Not in the bootstrap configuration: a host that joins a running cluster and waits to be
    # added (``p2plog member add``). The log, not this file, holds who the members are.
    join: bool = False
    # The operator's HTTP port (/metrics, /healthz, /readyz, the console); None: off.
    http: tuple[str, int] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str = "p2plog"
    reorder_window_ms: int = 1000
    max_offset_ms: int = 250
    tick_ms: int = 20
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    dedup_window_records: int = 250_000  # ~100-150 B of memory per id (see README)
    dedup_window_s: int = 3600
    segment_bytes: int = 64 << 20
    disk_budget_bytes: int = 0  # 0: no budget beyond the volume
    max_inflight_records: int = 100_000
    max_conn_inflight_records: int = 20_000
    reorder_max_records: int = 200_000
    reorder_max_bytes: int = 64 << 20
    max_connections: int = 1024  # client connections (and peers') a node keeps open at once
    client_idle_timeout_s: int = 300  # a client connection with nothing in flight is closed
    max_conn_requests: int = 256  # requests in flight per connection (tails count)
    max_conn_unread_bytes: int = 16 << 20  # replies a client has not read; over: disconnected


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """``[retention]``: how much of the log every node keeps (0: no bound). Whole sealed
    segments go, oldest first, once a snapshot stands in for them (README, Retention)."""

    max_age_s: int = 0  # a sealed segment whose last write is older than this goes
    max_bytes: int = 0  # the oldest sealed segments go while the log is larger

    @property
    def enabled(self) -> bool:
        return bool(self.max_age_s or self.max_bytes)


@dataclass(frozen=True, slots=True)
class NtpConfig:
    servers: tuple[str, ...] = ()
    poll_interval_s: int = 64


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """``[security]``: who may speak to a node (see README, Security)."""

    secret_file: Path | None = None  # peers prove they hold it; the same file on every node
    tokens_file: Path | None = None  # client tokens (hashed) and roles; None: no client auth
    insecure: bool = False  # allow a non-loopback node without TLS, secret or tokens


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``[tls]``: every link is ``wss://``; ``cert``/``key`` may name ``{id}``."""

    ca: Path
    cert: str
    key: str

    def cert_for(self, node_id: str) -> Path:
        return Path(self.cert.replace("{id}", node_id))

    def key_for(self, node_id: str) -> Path:
        return Path(self.key.replace("{id}", node_id))


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    cluster: ClusterConfig
    ntp: NtpConfig
    nodes: tuple[NodeConfig, ...]
    self_id: NodeId | None = None
    security: SecurityConfig = SecurityConfig()
    tls: TlsConfig | None = None
    by_id: dict[NodeId, NodeConfig] = field(default_factory=dict, compare=False)
    retention: RetentionConfig = RetentionConfig()

    def bootstrap_voters(self) -> list[NodeId]:
        """The voters before any membership change is in the log: every node not marked
        ``join``. Every host's file must agree on them (a new host's file may add nodes)."""
        return [n.id for n in self.nodes if not n.join]

    def node(self, node_id: str | None) -> NodeConfig:
        """This host's entry: ``node_id``, else ``self = ...`` from the file."""
        nid = node_id or self.self_id
        if nid is None:
            raise ConfigError(
                f"{self.path.name}: which node is this host? pass --node ID or add "
                f'self = "ID" at the top of the file (ids: {", ".join(self.by_id)})'
            )
        if nid not in self.by_id:
            raise ConfigError(
                f'{self.path.name}: no [[node]] with id = "{nid}"; the ids are '
                f"{', '.join(self.by_id)}"
            )
        return self.by_id[NodeId(nid)]


_CLUSTER_INTS = {
    "reorder_window_ms": (0, 600_000),
    "max_offset_ms": (1, 3_600_000),
    "tick_ms": (1, 10_000),
    "election_ticks": (2, 10_000),
    "heartbeat_ticks": (1, 10_000),
    "dedup_window_records": (1, 100_000_000),
    "dedup_window_s": (1, 30 * 86_400),
    "segment_bytes": (1 << 16, 1 << 32),
    "disk_budget_bytes": (0, 1 << 60),
    "max_inflight_records": (1, 10_000_000),
    "max_conn_inflight_records": (1, 10_000_000),
    "reorder_max_records": (1, 100_000_000),
    "reorder_max_bytes": (1 << 20, 1 << 40),
    "max_connections": (16, 1_000_000),
    "client_idle_timeout_s": (1, 7 * 86_400),
    "max_conn_requests": (1, 100_000),
    "max_conn_unread_bytes": (1 << 16, 1 << 32),
}


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file; pass --config FILE or create peers.toml (see README)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory; pass --config with the peers.toml file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read it: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p.name}: not valid TOML: {e}") from None
    return parse(raw, p)


def parse(raw: dict[str, Any], path: Path) -> Config:
    f = path.name
    top = {"self", "cluster", "ntp", "node", "security", "tls", "retention"}
    _no_unknown(raw, top, f, "top level")
    cluster = _cluster(raw.get("cluster", {}), f)
    retention = _retention(raw.get("retention", {}), f)
    ntp = _ntp(raw.get("ntp", {}), f)
    security = _security(raw.get("security", {}), f, path.parent)
    tls = _tls(raw["tls"], f, path.parent) if "tls" in raw else None
    nodes_raw = raw.get("node")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise ConfigError(f"{f}: no nodes; add at least one [[node]] with id and address")
    nodes = tuple(_node(n, i, f, path.parent) for i, n in enumerate(nodes_raw))
    by_id: dict[NodeId, NodeConfig] = {}
    addresses: dict[str, NodeId] = {}
    for n in nodes:
        if n.id in by_id:
            raise ConfigError(f'{f}: two [[node]] entries have id = "{n.id}"; ids must be unique')
        if n.address in addresses:
            raise ConfigError(
                f'{f}: nodes "{addresses[n.address]}" and "{n.id}" share address '
                f'"{n.address}"; give each node its own port'
            )
        by_id[n.id] = n
        addresses[n.address] = n.id
    if all(n.join for n in nodes):
        raise ConfigError(
            f"{f}: every [[node]] has join = true; the nodes that start the cluster must not "
            f"(join is for a host added later with `p2plog member add`)"
        )
    self_id = raw.get("self")
    if self_id is not None and (not isinstance(self_id, str) or self_id not in by_id):
        raise ConfigError(f"{f}: self = {self_id!r} names no [[node]]; use one of {list(by_id)}")
    if cluster.heartbeat_ticks >= cluster.election_ticks:
        raise ConfigError(
            f"{f}: [cluster] heartbeat_ticks ({cluster.heartbeat_ticks}) must be below "
            f"election_ticks ({cluster.election_ticks})"
        )
    self_nid = NodeId(self_id) if self_id else None
    return Config(path, cluster, ntp, nodes, self_nid, security, tls, by_id, retention)


def _no_unknown(table: dict[str, Any], allowed: set[str], f: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{f}: unknown key {key!r} in {where}; allowed: {', '.join(sorted(allowed))}"
            )


def _cluster(t: Any, f: str) -> ClusterConfig:
    if not isinstance(t, dict):
        raise ConfigError(f"{f}: [cluster] must be a table")
    _no_unknown(t, {"name", *_CLUSTER_INTS}, f, "[cluster]")
    kw: dict[str, Any] = {}
    if "name" in t:
        if not isinstance(t["name"], str) or not t["name"]:
            raise ConfigError(f'{f}: [cluster] name must be a non-empty string, like "prod"')
        kw["name"] = t["name"]
    for key, (lo, hi) in _CLUSTER_INTS.items():
        if key in t:
            v = t[key]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"{f}: [cluster] {key} = {v!r}; use a whole number {lo}..{hi}")
            kw[key] = v
    return ClusterConfig(**kw)


def _retention(t: Any, f: str) -> RetentionConfig:
    if not isinstance(t, dict):
        raise ConfigError(f"{f}: [retention] must be a table")
    _no_unknown(t, {"max_age_s", "max_bytes"}, f, "[retention]")
    kw: dict[str, int] = {}
    for key, lo, hi, example in (
        ("max_age_s", 60, 100 * 365 * 86_400, "604800 (a week)"),
        ("max_bytes", 1 << 20, 1 << 60, "2_000_000_000 (2 GB)"),
    ):
        v = t.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or not (v == 0 or lo <= v <= hi):
            raise ConfigError(
                f"{f}: [retention] {key} = {v!r}; use 0 (no bound) or {lo}..{hi}, like {example}"
            )
        kw[key] = v
    return RetentionConfig(**kw)


def _ntp(t: Any, f: str) -> NtpConfig:
    if not isinstance(t, dict):
        raise ConfigError(f"{f}: [ntp] must be a table")
    _no_unknown(t, {"servers", "poll_interval_s"}, f, "[ntp]")
    servers = t.get("servers", [])
    if not isinstance(servers, list) or not all(isinstance(s, str) and s for s in servers):
        raise ConfigError(f'{f}: [ntp] servers must be a list of "host" or "host:port" strings')
    poll = t.get("poll_interval_s", 64)
    if not isinstance(poll, int) or isinstance(poll, bool) or not 1 <= poll <= 86_400:
        raise ConfigError(f"{f}: [ntp] poll_interval_s = {poll!r}; use seconds 1..86400")
    return NtpConfig(tuple(servers), poll)


def _path(t: dict[str, Any], key: str, f: str, where: str, base: Path) -> Path | None:
    v = t.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise ConfigError(f'{f}: {where} {key} must be a path string, like "secrets/{key}"')
    return (base / v).resolve()


def _security(t: Any, f: str, base: Path) -> SecurityConfig:
    if not isinstance(t, dict):
        raise ConfigError(f"{f}: [security] must be a table")
    _no_unknown(t, {"secret_file", "tokens_file", "insecure"}, f, "[security]")
    insecure = t.get("insecure", False)
    if not isinstance(insecure, bool):
        raise ConfigError(f"{f}: [security] insecure must be true or false")
    return SecurityConfig(
        _path(t, "secret_file", f, "[security]", base),
        _path(t, "tokens_file", f, "[security]", base),
        insecure,
    )


def _tls(t: Any, f: str, base: Path) -> TlsConfig:
    if not isinstance(t, dict):
        raise ConfigError(f"{f}: [tls] must be a table")
    _no_unknown(t, {"ca", "cert", "key"}, f, "[tls]")
    ca = _path(t, "ca", f, "[tls]", base)
    cert, key = t.get("cert"), t.get("key")
    if ca is None or not isinstance(cert, str) or not isinstance(key, str) or not cert or not key:
        raise ConfigError(
            f'{f}: [tls] needs ca, cert and key, like ca = "certs/ca.pem", cert = '
            f'"certs/{{id}}.pem", key = "certs/{{id}}.key" (python -m p2plog certs makes them)'
        )
    return TlsConfig(ca, str((base / cert).resolve()), str((base / key).resolve()))


def _node(t: Any, i: int, f: str, base: Path) -> NodeConfig:
    if not isinstance(t, dict):
        raise ConfigError(f"{f}: [[node]] #{i + 1} must be a table")
    _no_unknown(t, {"id", "address", "data_dir", "join", "http_address"}, f, f"[[node]] #{i + 1}")
    nid = t.get("id")
    if not isinstance(nid, str) or not NODE_ID.fullmatch(nid):
        raise ConfigError(
            f'{f}: [[node]] #{i + 1} needs id = "name" (1 to 64 ASCII letters, digits, - and '
            f"_), got {nid!r}"
        )
    address = t.get("address")
    if address is None:
        raise ConfigError(f'{f}: node "{nid}" has no address; add address = "host:port"')
    host, port = _address(address, nid, f)
    data_dir = t.get("data_dir", f"p2plog-data/{nid}")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError(f'{f}: node "{nid}" data_dir must be a path string')
    join = t.get("join", False)
    if not isinstance(join, bool):
        raise ConfigError(f'{f}: node "{nid}" join must be true or false, got {join!r}')
    http = t.get("http_address")
    http_hp = None if http is None else _address(http, nid, f)
    return NodeConfig(NodeId(nid), host, port, (base / data_dir).resolve(), join, http_hp)


def _address(address: Any, nid: str, f: str) -> tuple[str, int]:
    try:
        if not isinstance(address, str):
            raise ValueError(address)
        return split_address(address)
    except ValueError:
        raise ConfigError(
            f'{f}: node "{nid}" address = {address!r} is not "host:port"; use e.g. "127.0.0.1:7001"'
        ) from None


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as host and port; ``ValueError`` if it is not one (the
    one parser of addresses: peers.toml, the client's targets, the live configuration)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} is not host:port, e.g. 127.0.0.1:7001")
    return host, int(port)
