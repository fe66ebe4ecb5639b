"""python -m p2plog send/query/tail/status against an in-process cluster (``main`` runs in a
worker thread with its own trio loop), plus the pure helpers: time parsing, record format."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from p2plog.cli import main
from p2plog.client.commands import format_record, parse_time
from p2plog.testing.ports import free_ports

from .cluster import LocalCluster, write_config

TIMEOUT_S = 10.0
NOW = 1_795_000_000_000_000_000
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z n\d [A-Z]+ .* #\d+$")
RECORD_KEYS = {"id", "index", "term", "ts", "ts_corrected", "ingest_ts", "level", "source"}
RECORD_KEYS |= {"msg", "fields", "late", "node"}


def peers_file(cluster: LocalCluster, tmp_path: Path, extra_dead: int = 0) -> str:
    ports = [n.port for n in cluster.config.nodes] + free_ports(extra_dead)
    path = tmp_path / "cli-peers.toml"
    write_config(path, ports)
    return str(path)


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with trio.fail_after(TIMEOUT_S):
        code = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_send_query_status(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = peers_file(cluster, tmp_path)
    code, out, err = await run_cli(capsys, "send", "--config", cfg, "hello", "world")
    assert (code, err) == (0, "")
    assert re.fullmatch(r"ok index=\d+ term=\d+ id=[0-9a-f-]{36} node=n1\n", out)
    code, out, _ = await run_cli(
        capsys,
        "send",
        "--config",
        cfg,
        "--level",
        "error",
        "--source",
        "web",
        "--ack",
        "leader",
        "x",
    )
    assert code == 0
    code, out, _ = await run_cli(capsys, "query", "--config", cfg)
    lines = out.splitlines()
    assert code == 0
    assert len(lines) == 2
    assert all(LINE.match(x) for x in lines), lines
    assert lines[0].endswith(" INFO cli: hello world #1")
    assert " ERROR web: x #" in lines[1]
    code, out, _ = await run_cli(capsys, "query", "--config", cfg, "--json", "--level", "error")
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["msg"] for r in rows] == ["x"]
    assert set(rows[0]) >= RECORD_KEYS
    code, out, _ = await run_cli(capsys, "query", "--config", cfg, "--since", "-5m", "--json")
    assert len(out.splitlines()) == 2
    code, out, _ = await run_cli(capsys, "query", "--config", cfg, "--until", "-5m")
    assert (code, out) == (0, "")
    code, out, _ = await run_cli(capsys, "status", "--config", cfg)
    table = out.splitlines()
    assert code == 0
    assert table[0].split()[:4] == ["ID", "ADDRESS", "ROLE", "TERM"]
    assert sorted(x.split()[0] for x in table[1:]) == ["n1", "n2", "n3"]
    assert sum(" leader " in x for x in table) == 1


async def test_send_stdin_lines(
    cluster: LocalCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = peers_file(cluster, tmp_path)
    data = b"first line\nsecond line\r\n\n  \nthird, no newline"
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))
    code, out, err = await run_cli(capsys, "send", "--config", cfg, "--node", "n2")
    assert (code, err) == (0, "")
    assert re.fullmatch(r"ok 3 record\(s\) acked, index \d+\.\.\d+\n", out)
    code, out, _ = await run_cli(capsys, "query", "--config", cfg, "--json", "--node", "n3")
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["msg"] for r in rows] == ["first line", "second line", "third, no newline"]
    assert {r["node"] for r in rows} == {"n2"}


async def test_tail_prints_and_stops_at_limit(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = peers_file(cluster, tmp_path)
    for m in ("a", "b", "c"):
        assert (await run_cli(capsys, "send", "--config", cfg, m))[0] == 0
    code, out, _ = await run_cli(
        capsys, "tail", "--config", cfg, "--from-index", "1", "--limit", "2", "--json"
    )
    assert code == 0
    assert [json.loads(x)["msg"] for x in out.splitlines()] == ["a", "b"]


async def test_status_lists_unreachable_nodes(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = peers_file(cluster, tmp_path, extra_dead=1)
    code, out, _ = await run_cli(capsys, "status", "--config", cfg, "--json")
    nodes = json.loads(out)["nodes"]
    assert code == 0
    assert [n["id"] for n in nodes] == ["n1", "n2", "n3", "n4"]
    assert [n["reachable"] for n in nodes] == [True, True, True, False]
    assert "refused" in nodes[3]["error"]
    for n in nodes[:3]:
        assert {"role", "term", "leader", "commit_index", "applied_index"} <= set(n)
    code, out, _ = await run_cli(capsys, "status", "--config", cfg)
    assert re.search(r"^n4 +127\.0\.0\.1:\d+ +unreachable: connection refused$", out, re.M)


async def test_no_reachable_node_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "peers.toml"
    write_config(path, free_ports(2))
    for cmd in ("send", "query", "status"):
        argv = [cmd, "--config", str(path)] + (["hi"] if cmd == "send" else [])
        code, _, err = await run_cli(capsys, *argv)
        assert code == 1
        assert re.search(
            rf"^p2plog {cmd}: no node of {re.escape(str(path))} is reachable \(tried "
            r"127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+: connection refused\); is the cluster running\? "
            rf"start it with python -m p2plog local --config {re.escape(str(path))}$",
            err,
            re.M,
        ), err


async def test_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        await run_cli(capsys, "query", "--since", "yesterday")
    assert info.value.code == 2
    assert "neither ISO-8601" in capsys.readouterr().err
    code, _, err = await run_cli(capsys, "send", "--config", str(tmp_path / "none.toml"), "x")
    assert code == 1
    assert "no such file" in err


def test_parse_time() -> None:
    assert parse_time("-5m", NOW) == NOW - 300 * 10**9
    assert parse_time("-2h", NOW) == NOW - 7200 * 10**9
    assert parse_time("-30s", NOW) == NOW - 30 * 10**9
    assert parse_time("-1d", NOW) == NOW - 86400 * 10**9
    assert parse_time("+1.5s", NOW) == NOW + 1_500_000_000
    assert parse_time("now", NOW) == NOW
    assert parse_time("2026-11-24T22:27:16.359Z") == 1795559236359000000
    assert parse_time("2026-11-24T22:27:16.359") == 1795559236359000000  # naive = UTC
    assert parse_time("2026-11-24T23:27:16.359+01:00") == 1795559236359000000
    assert parse_time(str(NOW)) == NOW
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("soon")


def test_format_record() -> None:
    rec = {
        "ts_corrected": 1795559236359123456,
        "ingest_ts": 1,
        "node": "n2",
        "level": "info",
        "source": "source",
        "msg": "msg",
        "fields": {"k": 1},
        "index": 42,
    }
    assert format_record(rec) == '2026-11-24T22:27:16.359Z n2 INFO source: msg {"k": 1} #42'
    bare = {**rec, "ts_corrected": None, "ingest_ts": 1795559236000000000, "source": ""}
    assert format_record({**bare, "fields": {}}) == "2026-11-24T22:27:16.000Z n2 INFO msg #42"


def test_argv_negative_time_values_are_not_options() -> None:
    from p2plog.cli import _fix_negative_times

    argv = ["query", "--since", "-5m", "--until", "-1m", "--grep", "-x"]
    assert _fix_negative_times(argv) == ["query", "--since=-5m", "--until=-1m", "--grep", "-x"]


def test_json_lines_stay_json_for_non_finite_values() -> None:
    import json
    import math

    from p2plog.client.commands import to_json

    line = to_json({"msg": "m", "fields": {"a": math.nan, "b": math.inf, "c": 1.5}})
    assert json.loads(line)["fields"] == {"a": "nan", "b": "inf", "c": 1.5}
    assert "NaN" not in line


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import entry_points, version

    import p2plog

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"p2plog {version('p2plog')}\n"
    assert version("p2plog") == p2plog.__version__  # one version, written once
    (script,) = entry_points(group="console_scripts", name="p2plog")
    assert script.value == "p2plog.cli:main"


async def test_addr_needs_no_peers_toml(
    cluster: LocalCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "client-host"
    home.mkdir()
    monkeypatch.chdir(home)  # no peers.toml here
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    a1, a2, a3 = cluster.addresses
    code, out, err = await run_cli(capsys, "send", "--addr", f"{dead},{a2}", "via", "addr")
    assert (code, err) == (0, "")
    assert out.endswith(f" node={a2}\n")  # failed over past the dead address
    code, out, _ = await run_cli(capsys, "query", "--addr", dead, "--addr", a3, "--json")
    assert (code, [json.loads(x)["msg"] for x in out.splitlines()]) == (0, ["via addr"])
    monkeypatch.setenv("P2PLOG_ADDR", f"{dead}, {a1}")
    code, out, _ = await run_cli(capsys, "query")
    assert code == 0
    assert out.endswith(" INFO cli: via addr #1\n")
    code, out, _ = await run_cli(capsys, "status", "--json")
    rows = json.loads(out)["nodes"]
    assert [(r["address"], r["reachable"]) for r in rows] == [(dead, False), (a1, True)]
    assert [r["id"] for r in rows] == ["?", "n1"]  # the node says who it is
    code, _, err = await run_cli(capsys, "query", "--addr", dead)  # --addr beats P2PLOG_ADDR
    assert code == 1
    assert err == (
        f"p2plog query: no node of --addr is reachable (tried {dead}: connection refused); "
        "check the address and that a node listens there\n"
    )


async def test_bad_addr_is_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as info:
        await run_cli(capsys, "query", "--addr", "::1:7001")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --addr: address '::1:7001': an IPv6 address needs brackets" in err
    assert "Traceback" not in err
    monkeypatch.setenv("P2PLOG_ADDR", "localhost")
    code, out, err = await run_cli(capsys, "status")
    assert (code, out) == (2, "")
    assert err == (
        "p2plog status: P2PLOG_ADDR: address 'localhost': it has no port; give HOST:PORT, "
        "[IPV6]:PORT or wss://HOST:PORT, e.g. 127.0.0.1:7001\n"
    )
    code, _, err = await run_cli(capsys, "send", "--addr", "h:1", "--config", "p.toml", "x")
    assert code == 2
    assert "--addr names the nodes itself" in err


async def test_field_filters_from_the_command_line(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    from p2plog import open_client
    from p2plog.client.records import make_record

    async with open_client(cluster.addresses) as c:
        await c.submit(
            [make_record(f"m{i}", fields={"user": f"u{i % 2}", "n": i}) for i in range(6)]
        )
    addr = cluster.addresses[1]
    code, out, _ = await run_cli(capsys, "query", "--addr", addr, "--field", "user=u1", "--json")
    assert (code, [json.loads(x)["msg"] for x in out.splitlines()]) == (0, ["m1", "m3", "m5"])
    code, out, _ = await run_cli(
        capsys, "query", "--addr", addr, "--field", "user=u0", "--field", "n=4", "--json"
    )
    assert (code, [json.loads(x)["msg"] for x in out.splitlines()]) == (0, ["m4"])
    with pytest.raises(SystemExit) as info:
        await run_cli(capsys, "query", "--addr", addr, "--field", "user")
    assert info.value.code == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
