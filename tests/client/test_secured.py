"""The client library and the CLI against an in-process cluster with TLS on every link, a
cluster secret and client tokens: a token's role is what it may do, a wrong token is refused
at the handshake with a clear error (not retried), and a token never shows in a repr."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from p2plog.client import ClientOptions, RecordsRejected, ServerError, SubmitFailed, open_client
from p2plog.client.errors import AuthError
from p2plog.client.records import make_record
from p2plog.config import Config, load
from p2plog.testing.ports import free_ports
from p2plog.testing.proc import Secured, make_security

from .cluster import LocalCluster, write_config
from .test_cli import run_cli


def secured_config(tmp_path: Path) -> tuple[Config, dict[str, str]]:
    roles = {"write": "write", "read": "read"}  # a token per role, named after it
    sec = make_security(tmp_path, ["n1", "n2", "n3"], Secured(tls=True, tokens=roles))
    path = write_config(tmp_path / "peers.toml", free_ports(3), "sec", sections=sec.sections)
    return load(path), {role: sec.tokens[role] for role in roles}


@pytest.fixture
async def secured(
    tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[tuple[LocalCluster, dict[str, str]]]:
    logging.getLogger("p2plog").setLevel(logging.WARNING)
    cfg, made = secured_config(tmp_path)
    c = LocalCluster(cfg, nursery)
    for n in cfg.nodes:
        await c.start(n.id)
    await c.wait_leader()
    yield c, made
    nursery.cancel_scope.cancel()


async def test_roles_over_tls(secured: tuple[LocalCluster, dict[str, str]]) -> None:
    c, made = secured
    with trio.fail_after(20):
        async with open_client(c.config, token=made["write"]) as w:
            acks = await w.submit([make_record("over tls")])
            assert acks[0].index >= 1
            with pytest.raises(ServerError) as info:
                await w.query()
            assert info.value.code == "forbidden"
        async with open_client(c.config, token=made["read"]) as r:
            assert [x["msg"] for x in await r.query()] == ["over tls"]
            with pytest.raises(SubmitFailed) as sf:
                await r.submit([make_record("no")])
            assert sf.value.code == "forbidden"
        async with open_client(c.config) as anon:  # no token: status and time only
            st = await anon.status()
            assert "peers" not in st
            assert "leader" not in st
            with pytest.raises(SubmitFailed) as sf:
                await anon.submit([make_record("no")])
            assert sf.value.code == "unauthorized"
            assert "P2PLOG_TOKEN" in str(sf.value)


async def test_the_token_may_come_from_the_environment(
    secured: tuple[LocalCluster, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, made = secured
    monkeypatch.setenv("P2PLOG_TOKEN", made["write"])
    with trio.fail_after(20):
        async with open_client(c.config) as w:
            await w.submit([make_record("from env")])


async def test_a_wrong_token_is_refused_at_once_and_named(
    secured: tuple[LocalCluster, dict[str, str]],
) -> None:
    c, _ = secured
    with trio.fail_after(10), pytest.raises(AuthError) as info:
        async with open_client(c.config, token="p2p_not-a-token"):
            pass
    assert "refused the token" in str(info.value)
    assert "p2p_not-a-token" not in str(info.value)


async def test_plain_ws_to_a_tls_node_fails(
    secured: tuple[LocalCluster, dict[str, str]],
) -> None:
    c, made = secured
    opts = ClientOptions(connect_timeout_s=1.0, token=made["write"])
    with trio.fail_after(20), pytest.raises(Exception) as info:  # noqa: PT011
        async with open_client([n.address for n in c.config.nodes], opts):
            pass
    assert "Unreachable" in type(info.value).__name__


def test_a_token_never_shows_in_a_repr() -> None:
    opts = ClientOptions(token="p2p_secret-value")
    assert "p2p_secret-value" not in repr(opts)


async def test_the_cli_takes_a_token(
    secured: tuple[LocalCluster, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    c, made = secured
    cfg = str(c.config.path)
    code, out, err = await run_cli(capsys, "send", "--config", cfg, "--token", made["write"], "hi")
    assert code == 0, err
    assert out.startswith("ok index=")
    code, out, err = await run_cli(capsys, "send", "--config", cfg, "--token", "p2p_x", "hi")
    assert code == 1
    assert "refused the token" in err
    code, out, err = await run_cli(capsys, "query", "--config", cfg, "--token", made["read"])
    assert code == 0, err
    assert "hi" in out
    code, out, err = await run_cli(capsys, "status", "--config", cfg)
    assert code == 0, err  # anonymous status still prints the table
    assert "n1" in out


async def test_bad_records_and_the_rest(secured: tuple[LocalCluster, dict[str, str]]) -> None:
    c, made = secured
    with trio.fail_after(20):
        async with open_client(c.config, token=made["write"]) as w:
            with pytest.raises(RecordsRejected) as info:
                await w.submit([make_record("ok"), {**make_record("x"), "level": "LOUD"}])
    assert info.value.acks[0] is not None
