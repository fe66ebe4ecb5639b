"""peers.toml -> frozen dataclasses. One file serves every host; ``--node ID`` (or
``self = "ID"``) picks this host's entry.

Every error names the file, the key and the fix, e.g.
``peers.toml: node "n3" has no address; add address = "host:port"``. Unknown keys are errors: a
typo must not be silently ignored.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2plog.errors import ConfigError
from p2plog.raft.types import NodeId

LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    id: NodeId
    host: str
    port: int
    data_dir: Path

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


@dataclass(frozen=True, slots=True)
class NtpConfig:
    servers: tuple[str, ...] = ()
    poll_interval_s: int = 64


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    cluster: ClusterConfig
    ntp: NtpConfig
    nodes: tuple[NodeConfig, ...]
    self_id: NodeId | None = None
    by_id: dict[NodeId, NodeConfig] = field(default_factory=dict, compare=False)

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
    _no_unknown(raw, {"self", "cluster", "ntp", "node"}, f, "top level")
    cluster = _cluster(raw.get("cluster", {}), f)
    ntp = _ntp(raw.get("ntp", {}), f)
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
    self_id = raw.get("self")
    if self_id is not None and (not isinstance(self_id, str) or self_id not in by_id):
        raise ConfigError(f"{f}: self = {self_id!r} names no [[node]]; use one of {list(by_id)}")
    if cluster.heartbeat_ticks >= cluster.election_ticks:
        raise ConfigError(
            f"{f}: [cluster] heartbeat_ticks ({cluster.heartbeat_ticks}) must be below "
            f"election_ticks ({cluster.election_ticks})"
        )
    return Config(path, cluster, ntp, nodes, NodeId(self_id) if self_id else None, by_id)


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


def _node(t: Any, i: int, f: str, base: Path) -> NodeConfig:
    if not isinstance(t, dict):
        raise ConfigError(f"{f}: [[node]] #{i + 1} must be a table")
    _no_unknown(t, {"id", "address", "data_dir"}, f, f"[[node]] #{i + 1}")
    nid = t.get("id")
    if not isinstance(nid, str) or not nid or not nid.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(
            f'{f}: [[node]] #{i + 1} needs id = "name" (letters, digits, - and _), got {nid!r}'
        )
    address = t.get("address")
    if address is None:
        raise ConfigError(f'{f}: node "{nid}" has no address; add address = "host:port"')
    host, port = _address(address, nid, f)
    data_dir = t.get("data_dir", f"p2plog-data/{nid}")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError(f'{f}: node "{nid}" data_dir must be a path string')
    return NodeConfig(NodeId(nid), host, port, (base / data_dir).resolve())


def _address(address: Any, nid: str, f: str) -> tuple[str, int]:
    bad = ConfigError(
        f'{f}: node "{nid}" address = {address!r} is not "host:port"; use e.g. "127.0.0.1:7001"'
    )
    if not isinstance(address, str) or ":" not in address:
        raise bad
    host, _, port_s = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise bad
    return host, int(port_s)
