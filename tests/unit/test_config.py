"""peers.toml loading: the repo's file, and one test per way a file can be wrong.

Every error must name the file, the key and the fix (config.py's contract), so the tests match
on the file name plus the key or the suggested fix, not only on the exception type.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from p2plog import config
from p2plog.config import ClusterConfig, Config, NtpConfig, load
from p2plog.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

NODES = """
[[node]]
id = "n1"
address = "127.0.0.1:7001"

[[node]]
id = "n2"
address = "127.0.0.1:7002"

[[node]]
id = "n3"
address = "127.0.0.1:7003"
"""


def write(tmp_path: Path, text: str, name: str = "peers.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def load_text(tmp_path: Path, text: str) -> Config:
    return load(write(tmp_path, text))


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        load_text(tmp_path, text)
    msg = str(ei.value)
    assert msg.startswith("peers.toml: "), msg  # every message names the file first
    return msg


# ------------------------------------------------------------------ good files


def test_repo_peers_toml_loads() -> None:
    cfg = load(REPO / "peers.toml")
    assert [n.id for n in cfg.nodes] == ["n1", "n2", "n3"]
    assert [n.address for n in cfg.nodes] == [f"127.0.0.1:{p}" for p in (7001, 7002, 7003)]
    assert cfg.cluster.name == "demo"
    assert cfg.cluster.reorder_window_ms == 1000
    assert cfg.cluster.max_offset_ms == 250
    assert cfg.ntp == NtpConfig((), 64)
    assert cfg.self_id is None
    for n in cfg.nodes:
        assert n.data_dir == (REPO / "p2plog-data" / n.id).resolve()
        assert cfg.node(n.id) is n


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, NODES)
    assert cfg.cluster == ClusterConfig()
    assert cfg.ntp == NtpConfig()
    assert cfg.path == tmp_path / "peers.toml"
    assert cfg.node("n2").port == 7002
    assert cfg.node("n2").host == "127.0.0.1"


def test_every_cluster_key_is_read(tmp_path: Path) -> None:
    text = (
        """
[cluster]
name = "prod"
reorder_window_ms = 0
max_offset_ms = 1
tick_ms = 50
election_ticks = 20
heartbeat_ticks = 3
dedup_window_records = 7
dedup_window_s = 60
segment_bytes = 65536
disk_budget_bytes = 123456789
max_inflight_records = 11
max_conn_inflight_records = 5

[ntp]
servers = ["0.pool.ntp.org", "127.0.0.1:11123"]
poll_interval_s = 16
"""
        + NODES
    )
    cfg = load_text(tmp_path, text)
    assert cfg.cluster == ClusterConfig(
        name="prod",
        reorder_window_ms=0,
        max_offset_ms=1,
        tick_ms=50,
        election_ticks=20,
        heartbeat_ticks=3,
        dedup_window_records=7,
        dedup_window_s=60,
        segment_bytes=65536,
        disk_budget_bytes=123456789,
        max_inflight_records=11,
        max_conn_inflight_records=5,
    )
    assert cfg.ntp == NtpConfig(("0.pool.ntp.org", "127.0.0.1:11123"), 16)


def test_data_dir_is_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "etc" / "p2plog"
    conf_dir.mkdir(parents=True)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    absolute = tmp_path / "abs-data"
    p = write(
        conf_dir,
        f"""
[[node]]
id = "n1"
address = "127.0.0.1:7001"
data_dir = "../data/n1"

[[node]]
id = "n2"
address = "127.0.0.1:7002"

[[node]]
id = "n3"
address = "127.0.0.1:7003"
data_dir = "{absolute}"
""",
    )
    cfg = load(p)
    assert cfg.node("n1").data_dir == (tmp_path / "etc" / "data" / "n1").resolve()
    assert cfg.node("n2").data_dir == (conf_dir / "p2plog-data" / "n2").resolve()
    assert cfg.node("n3").data_dir == absolute.resolve()


def test_load_accepts_a_str_path(tmp_path: Path) -> None:
    cfg = load(str(write(tmp_path, NODES)))
    assert len(cfg.nodes) == 3


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("127.0.0.1:7001", "127.0.0.1", 7001),
        ("localhost:1", "localhost", 1),
        ("db-1.example.com:65535", "db-1.example.com", 65535),
        ("[::1]:7001", "::1", 7001),
    ],
)
def test_good_address_forms(tmp_path: Path, address: str, host: str, port: int) -> None:
    cfg = load_text(tmp_path, f'[[node]]\nid = "n1"\naddress = "{address}"\n')
    n = cfg.node("n1")
    assert (n.host, n.port) == (host, port)


def test_ids_may_use_dash_and_underscore(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, '[[node]]\nid = "eu-west_1"\naddress = "h:1"\n')
    assert cfg.node("eu-west_1").id == "eu-west_1"


# ------------------------------------------------------------------ which node


def test_self_picks_this_hosts_node(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, 'self = "n2"\n' + NODES)
    assert cfg.self_id == "n2"
    assert cfg.node(None).id == "n2"
    assert cfg.node("n3").id == "n3"  # --node overrides self


def test_node_none_without_self_names_both_fixes(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, NODES)
    with pytest.raises(ConfigError) as ei:
        cfg.node(None)
    msg = str(ei.value)
    assert msg.startswith("peers.toml: ")
    assert "--node ID" in msg
    assert 'self = "ID"' in msg
    assert "n1, n2, n3" in msg


def test_unknown_node_id_lists_the_ids(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, NODES)
    with pytest.raises(ConfigError) as ei:
        cfg.node("n9")
    msg = str(ei.value)
    assert msg.startswith("peers.toml: ")
    assert 'no [[node]] with id = "n9"' in msg
    assert "n1, n2, n3" in msg


@pytest.mark.parametrize("value", ['"n9"', '""', "3", "true"])
def test_self_naming_no_node(tmp_path: Path, value: str) -> None:
    msg = error_of(tmp_path, f"self = {value}\n" + NODES)
    assert "self = " in msg
    assert "names no [[node]]" in msg
    assert "'n1', 'n2', 'n3'" in msg


# ------------------------------------------------------------------ nodes


def test_missing_address_exact_message(tmp_path: Path) -> None:
    text = NODES.replace('address = "127.0.0.1:7003"', "")
    msg = error_of(tmp_path, text)
    assert msg == 'peers.toml: node "n3" has no address; add address = "host:port"'


@pytest.mark.parametrize(
    "address",
    [
        '"127.0.0.1"',  # no port
        '"127.0.0.1:"',  # empty port
        '":7001"',  # empty host
        '"[]:7001"',  # empty bracketed host
        '"host:0"',  # port out of range
        '"host:65536"',
        '"host:-1"',
        '"host:http"',
        '"host:70 01"',
        "7001",  # not a string
        '["h", 1]',
    ],
)
def test_bad_address_forms(tmp_path: Path, address: str) -> None:
    msg = error_of(tmp_path, f'[[node]]\nid = "n1"\naddress = {address}\n')
    assert 'node "n1" address = ' in msg
    assert 'is not "host:port"' in msg
    assert '"127.0.0.1:7001"' in msg  # the example of the fix


@pytest.mark.parametrize("nid", ['""', '"a b"', '"n/1"', "1", '"-"', '"é1"', '"' + "n" * 65 + '"'])
def test_bad_node_id(tmp_path: Path, nid: str) -> None:
    msg = error_of(tmp_path, f'[[node]]\nid = {nid}\naddress = "h:1"\n')
    assert "[[node]] #1 needs id = " in msg
    assert "letters, digits, - and _" in msg


def test_missing_node_id(tmp_path: Path) -> None:
    msg = error_of(tmp_path, NODES + '\n[[node]]\naddress = "h:1"\n')
    assert "[[node]] #4 needs id = " in msg
    assert "got None" in msg


def test_duplicate_ids(tmp_path: Path) -> None:
    text = NODES + '\n[[node]]\nid = "n2"\naddress = "127.0.0.1:7004"\n'
    msg = error_of(tmp_path, text)
    assert msg == 'peers.toml: two [[node]] entries have id = "n2"; ids must be unique'


def test_duplicate_addresses(tmp_path: Path) -> None:
    text = NODES.replace("127.0.0.1:7003", "127.0.0.1:7001")
    msg = error_of(tmp_path, text)
    assert 'nodes "n1" and "n3" share address "127.0.0.1:7001"' in msg
    assert "give each node its own port" in msg


def test_duplicate_addresses_are_compared_after_parsing(tmp_path: Path) -> None:
    # "07001" and "7001" are the same port.
    text = NODES.replace("127.0.0.1:7003", "127.0.0.1:07001")
    msg = error_of(tmp_path, text)
    assert 'share address "127.0.0.1:7001"' in msg


@pytest.mark.parametrize(
    "text",
    [
        "",
        "node = []\n",
        '[node]\nid = "n1"\naddress = "h:1"\n',  # a table, not an array of tables
        "[cluster]\nname = 'x'\n",
    ],
)
def test_no_nodes(tmp_path: Path, text: str) -> None:
    msg = error_of(tmp_path, text)
    assert "no nodes; add at least one [[node]] with id and address" in msg


def test_node_entry_not_a_table(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "node = [1]\n")
    assert "[[node]] #1 must be a table" in msg


def test_bad_data_dir(tmp_path: Path) -> None:
    msg = error_of(tmp_path, '[[node]]\nid = "n1"\naddress = "h:1"\ndata_dir = 5\n')
    assert 'node "n1" data_dir must be a path string' in msg


# ------------------------------------------------------------------ unknown keys


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        ('slef = "n1"\n' + NODES, "slef", "top level"),
        ("[clustre]\n" + NODES, "clustre", "top level"),
        ("[cluster]\ntick_msec = 20\n" + NODES, "tick_msec", "[cluster]"),
        ("[ntp]\nserver = []\n" + NODES, "server", "[ntp]"),
        (NODES + "datadir = 'x'\n", "datadir", "[[node]] #3"),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, key: str, where: str) -> None:
    msg = error_of(tmp_path, text)
    assert f"unknown key {key!r} in {where}; allowed: " in msg


def test_unknown_key_message_lists_allowed_keys(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[ntp]\nserver = []\n" + NODES)
    assert msg.endswith("allowed: poll_interval_s, servers")


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    ("key", "value", "bounds"),
    [
        ("tick_ms", "0", "1..10000"),
        ("tick_ms", "10001", "1..10000"),
        ("reorder_window_ms", "-1", "0..600000"),
        ("max_offset_ms", "0", "1..3600000"),
        ("election_ticks", "1", "2..10000"),
        ("heartbeat_ticks", "0", "1..10000"),
        ("dedup_window_s", "2592001", "1..2592000"),
        ("segment_bytes", "65535", "65536..4294967296"),
        ("disk_budget_bytes", "-5", "0..1152921504606846976"),
    ],
)
def test_cluster_int_out_of_range(tmp_path: Path, key: str, value: str, bounds: str) -> None:
    msg = error_of(tmp_path, f"[cluster]\n{key} = {value}\n" + NODES)
    assert f"[cluster] {key} = {value}; use a whole number {bounds}" in msg


INT_KEYS = sorted(config._CLUSTER_INTS.items())


@pytest.mark.parametrize(
    ("key", "value"),
    [(k, lo - 1) for k, (lo, _) in INT_KEYS] + [(k, hi + 1) for k, (_, hi) in INT_KEYS],
)
def test_every_cluster_int_has_its_range_enforced(tmp_path: Path, key: str, value: int) -> None:
    lo, hi = config._CLUSTER_INTS[key]
    msg = error_of(tmp_path, f"[cluster]\n{key} = {value}\n" + NODES)
    assert msg == f"peers.toml: [cluster] {key} = {value}; use a whole number {lo}..{hi}"


@pytest.mark.parametrize(("key", "bounds"), INT_KEYS)
def test_every_cluster_int_accepts_its_bounds(
    tmp_path: Path, key: str, bounds: tuple[int, int]
) -> None:
    lo, hi = bounds
    extra = ""
    if key == "heartbeat_ticks":
        hi -= 1  # it must also stay below election_ticks, itself at most 10000
        extra = "election_ticks = 10000\n"
    elif key == "election_ticks":
        extra = "heartbeat_ticks = 1\n"
    for value in (lo, hi):
        cfg = load_text(tmp_path, f"[cluster]\n{key} = {value}\n{extra}" + NODES)
        assert getattr(cfg.cluster, key) == value


@pytest.mark.parametrize(("value", "shown"), [("true", "True"), ("2.5", "2.5"), ('"20"', "'20'")])
def test_cluster_int_wrong_type(tmp_path: Path, value: str, shown: str) -> None:
    msg = error_of(tmp_path, f"[cluster]\ntick_ms = {value}\n" + NODES)
    assert f"[cluster] tick_ms = {shown}; use a whole number 1..10000" in msg


@pytest.mark.parametrize("value", ["0", "86401", "true", "1.5"])
def test_ntp_poll_interval_bad(tmp_path: Path, value: str) -> None:
    msg = error_of(tmp_path, f"[ntp]\npoll_interval_s = {value}\n" + NODES)
    assert "[ntp] poll_interval_s = " in msg
    assert "use seconds 1..86400" in msg


@pytest.mark.parametrize("value", ['"pool.ntp.org"', '[""]', "[1]"])
def test_ntp_servers_bad(tmp_path: Path, value: str) -> None:
    msg = error_of(tmp_path, f"[ntp]\nservers = {value}\n" + NODES)
    assert '[ntp] servers must be a list of "host" or "host:port" strings' in msg


@pytest.mark.parametrize("value", ['""', "5"])
def test_cluster_name_bad(tmp_path: Path, value: str) -> None:
    msg = error_of(tmp_path, f"[cluster]\nname = {value}\n" + NODES)
    assert '[cluster] name must be a non-empty string, like "prod"' in msg


@pytest.mark.parametrize(
    ("table", "text"), [("[cluster]", "cluster = 5\n"), ("[ntp]", "ntp = 1\n")]
)
def test_section_not_a_table(tmp_path: Path, table: str, text: str) -> None:
    msg = error_of(tmp_path, text + NODES)
    assert f"{table} must be a table" in msg


@pytest.mark.parametrize(("election", "heartbeat"), [("10", "10"), ("5", "9"), ("2", None)])
def test_heartbeat_must_be_below_election(
    tmp_path: Path, election: str, heartbeat: str | None
) -> None:
    hb = f"heartbeat_ticks = {heartbeat}\n" if heartbeat else ""  # default heartbeat is 2
    msg = error_of(tmp_path, f"[cluster]\nelection_ticks = {election}\n{hb}" + NODES)
    assert re.search(
        r"\[cluster\] heartbeat_ticks \(\d+\) must be below election_ticks \(\d+\)", msg
    ), msg


def test_heartbeat_just_below_election_is_fine(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[cluster]\nelection_ticks = 3\nheartbeat_ticks = 2\n" + NODES)
    assert (cfg.cluster.election_ticks, cfg.cluster.heartbeat_ticks) == (3, 2)


# ------------------------------------------------------------------ the file itself


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope" / "peers.toml"
    with pytest.raises(ConfigError) as ei:
        load(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: no such file")
    assert "--config FILE" in msg


def test_invalid_toml(tmp_path: Path) -> None:
    msg = error_of(tmp_path, '[[node]]\nid = "n1\n')
    assert "not valid TOML" in msg
    assert "line 2" in msg  # tomllib's position tells the user where


def test_error_uses_the_files_own_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cluster-b\.toml: no nodes"):
        load(write(tmp_path, "", name="cluster-b.toml"))


def test_non_utf8_file(tmp_path: Path) -> None:
    p = tmp_path / "peers.toml"
    p.write_bytes(b'[cluster]\nname = "caf\xe9"\n' + NODES.encode())
    with pytest.raises(ConfigError) as ei:
        load(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: not UTF-8 text")
    assert "at byte 21" in msg  # where the bad byte is


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path)
    msg = str(ei.value)
    assert msg.startswith(f"{tmp_path}: is a directory")
    assert "--config" in msg


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, NODES)

    def denied(self: Path, *args: object, **kw: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)  # (root ignores chmod, so fake the error)
    with pytest.raises(ConfigError, match=re.escape(f"{p}: cannot read it: Permission denied")):
        load(p)


def test_join_marks_a_node_outside_the_bootstrap_configuration(tmp_path: Path) -> None:
    extra = '\n[[node]]\nid = "n4"\naddress = "127.0.0.1:7004"\njoin = true\n'
    cfg = load_text(tmp_path, NODES + extra)
    assert cfg.bootstrap_voters() == ["n1", "n2", "n3"]
    assert cfg.node("n4").join
    bad = error_of(tmp_path, NODES + extra.replace("true", '"yes"'))
    assert "join must be true or false" in bad
    only = NODES.replace('address = "127.0.0.1:7001"', 'address = "127.0.0.1:7001"\njoin = true')
    only = only.replace('address = "127.0.0.1:7002"', 'address = "127.0.0.1:7002"\njoin = true')
    only = only.replace('address = "127.0.0.1:7003"', 'address = "127.0.0.1:7003"\njoin = true')
    assert "every [[node]] has join = true" in error_of(tmp_path, only)
