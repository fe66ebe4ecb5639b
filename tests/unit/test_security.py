"""Tokens (hashed, roles, reload), the start-up policy (what an exposed node must have), the
forward check (``record.revalidate``), peer reply matching, rate-limited logging."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio

from p2plog.config import parse
from p2plog.errors import ConfigError
from p2plog.net.listener import bearer
from p2plog.raft.types import NodeId
from p2plog.ratelog import RateLimitedLog
from p2plog.record import RecordError, revalidate, validate
from p2plog.runtime.replies import Replies
from p2plog.security import tokens
from p2plog.security.certs import new_secret
from p2plog.security.policy import is_loopback, load_node_security
from p2plog.security.tokens import ANONYMOUS, OPEN, Grant, TokenStore

# ------------------------------------------------------------------ tokens


def test_a_token_is_shown_once_and_stored_as_a_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    t = tokens.add(path, "shipper", "write")
    assert t.startswith("p2p_")
    assert len(t) == 47
    text = path.read_text()
    assert t not in text
    assert tokens.token_hash(t) in text
    assert os.stat(path).st_mode & 0o777 == 0o600
    store = TokenStore(path)
    assert store.lookup(t) == Grant("shipper", "write")
    assert store.lookup(t + "x") is None
    assert store.lookup("") is None


def test_roles() -> None:
    w, r, a = Grant("w", "write"), Grant("r", "read"), Grant("a", "admin")
    assert w.can("submit") and not w.can("read")  # noqa: PT018
    assert r.can("read") and not r.can("submit")  # noqa: PT018
    assert a.can("submit") and a.can("read")  # noqa: PT018
    assert not ANONYMOUS.can("submit") and not ANONYMOUS.can("read")  # noqa: PT018
    assert OPEN.can("submit") and OPEN.role == "admin"  # noqa: PT018


def test_add_list_revoke(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    a = tokens.add(path, "a", "write")
    b = tokens.add(path, "b b", "read")  # any name, quoted safely
    with pytest.raises(ConfigError, match="a token named 'a' exists"):
        tokens.add(path, "a", "read")
    with pytest.raises(ConfigError, match="role 'root' is not one of"):
        tokens.add(path, "c", "root")
    assert tokens.listing(path) == [("a", "write"), ("b b", "read")]
    assert tokens.revoke(path, "a")
    assert not tokens.revoke(path, "a")
    store = TokenStore(path)
    assert store.lookup(a) is None
    assert store.lookup(b) == Grant("b b", "read")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[token]]\nrole = 'write'\nsha256 = '" + "0" * 64 + "'\n", "unique name"),
        ("[[token]]\nname = 'x'\nrole = 'god'\nsha256 = '" + "0" * 64 + "'\n", "role 'god'"),
        ("[[token]]\nname = 'x'\nrole = 'read'\nsha256 = 'abc'\n", "64 hex"),
        ("[x]\n", "only \\[\\[token\\]\\]"),
        ("not toml =", "not valid TOML"),
    ],
)
def test_bad_tokens_files_are_refused_by_entry(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        TokenStore(path)


def test_the_store_follows_the_file_and_keeps_grants_over_a_bad_edit(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    t1 = tokens.add(path, "one", "read")
    now = [0.0]
    store = TokenStore(path, clock=lambda: now[0])
    t2 = tokens.add(path, "two", "write")
    os.utime(path, (1, 1))  # a new mtime, whatever the file system's resolution
    assert store.maybe_reload() is None
    assert store.lookup(t2) is None  # checked at most once a second
    now[0] = 2.0
    assert store.maybe_reload() is None
    assert store.lookup(t2) == Grant("two", "write")
    path.write_text("broken =")
    os.utime(path, (5, 5))
    now[0] = 4.0
    assert "not valid TOML" in (store.maybe_reload() or "")
    assert store.lookup(t1) == Grant("one", "read")  # the old grants stay in force


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ([], None),
        ([(b"authorization", b"Bearer p2p_x")], "p2p_x"),
        ([(b"Authorization", b"bearer  p2p_y ")], "p2p_y"),
        ([(b"authorization", b"Basic abc")], ""),  # a wrong scheme is a wrong token
        ([(b"authorization", b"Bearer")], ""),
        ([(b"x-other", b"1")], None),
    ],
)
def test_bearer(headers: list[tuple[bytes, bytes]], want: str | None) -> None:
    assert bearer(headers) == want


# ------------------------------------------------------------------ policy


def config(tmp_path: Path, host: str = "127.0.0.1", **security: object) -> object:
    raw: dict[str, object] = {
        "node": [{"id": "n1", "address": f"{host}:7001"}, {"id": "n2", "address": f"{host}:7002"}]
    }
    if security:
        raw["security"] = security
    return parse(raw, tmp_path / "peers.toml")


def test_loopback() -> None:
    for h in ("127.0.0.1", "127.3.2.1", "::1", "localhost"):
        assert is_loopback(h)
    for h in ("10.0.0.1", "0.0.0.0", "example.com", "::"):
        assert not is_loopback(h)


def test_a_loopback_demo_needs_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sec = load_node_security(cfg, cfg.nodes[0])  # type: ignore[attr-defined]
    assert (sec.secret, sec.tokens, sec.server_ssl, sec.exposed) == (b"", None, None, False)
    assert sec.warnings == ()


def test_an_exposed_node_needs_tls_a_secret_and_tokens(tmp_path: Path) -> None:
    cfg = config(tmp_path, host="10.0.0.1")
    with pytest.raises(ConfigError) as info:
        load_node_security(cfg, cfg.nodes[0])  # type: ignore[attr-defined]
    msg = str(info.value)
    for says in ("not a loopback address", "TLS", "secret_file", "tokens_file", "insecure = true"):
        assert says in msg, msg
    cfg = config(tmp_path, host="10.0.0.1", insecure=True)
    sec = load_node_security(cfg, cfg.nodes[0])  # type: ignore[attr-defined]
    assert sec.exposed
    assert sec.warnings[0].startswith("INSECURE: running without TLS")


def test_the_secret_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cluster.secret"
    cfg = config(tmp_path, secret_file="cluster.secret")
    with pytest.raises(ConfigError, match="cannot read the cluster secret"):
        load_node_security(cfg, cfg.nodes[0])  # type: ignore[attr-defined]
    path.write_text("short")
    with pytest.raises(ConfigError, match="needs at least 32"):
        load_node_security(cfg, cfg.nodes[0])  # type: ignore[attr-defined]
    path.write_bytes(new_secret())
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        sec = load_node_security(cfg, cfg.nodes[0])  # type: ignore[attr-defined]
    assert sec.secret == path.read_bytes().strip()
    assert "readable by others" in caplog.text


# ------------------------------------------------------------------ forwards


def body_of(node: str = "n2", **change: object) -> tuple[bytes, bytes]:
    raw = {"id": b"\x07" * 16, "ts": 1_000, "level": "warning", "msg": "m", "fields": {"a": 1}}
    raw.update(change)
    a = validate(raw, node=node, clock_offset_ns=5, received_ns=2_000)
    return a.id, a.body


@pytest.mark.parametrize("change", [{}, {"ts": None}, {"fields": {}}, {"level": "debug"}])
def test_a_genuine_forwarded_body_passes(change: dict[str, object]) -> None:
    rid, body = body_of(**change)
    assert revalidate(body, rid, "n2").body == body


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda b: b[:1], "shorter than its time prefix"),
        (lambda b: b[:8] + b"\xff\xff", "not CBOR"),
        (lambda b: b[:8] + b"\xa1\x61x\x01", "not a record map"),
        (lambda b: b + b"\x00", "not in the form validate writes"),  # trailing bytes
        (lambda b: b[:8] + b[8:].replace(b"\x62lv\x02", b"\x62lv\x09"), "level"),
    ],
)
def test_a_mangled_forwarded_body_is_refused(mangle: object, match: str) -> None:
    rid, body = body_of()
    with pytest.raises(RecordError, match=match):
        revalidate(mangle(body), rid, "n2")  # type: ignore[operator]


def test_a_forwarded_body_must_name_the_forwarder() -> None:
    rid, body = body_of(node="n3")
    with pytest.raises(RecordError, match="says 'n3' took it, not 'n2'"):
        revalidate(body, rid, "n2")


# ------------------------------------------------------------------ replies


async def test_replies_count_only_from_the_peer_asked() -> None:
    r = Replies()
    with r.expect(NodeId("n1"), str) as w, r.expect(NodeId("n1"), str) as w2:
        assert w.id != w2.id
        assert 0 <= w.id < 1 << 63
        assert abs(w.id - w2.id) > 1  # not sequential (a guessed next id answered a forward)
        assert not r.deliver(NodeId("n2"), w.id, "forged")
        assert not r.deliver(NodeId("n1"), w.id + 1, "guess")
        assert not r.deliver(NodeId("n1"), w.id, 7)  # another kind of reply
        assert r.deliver(NodeId("n1"), w.id, "real")
        assert not r.deliver(NodeId("n1"), w.id, "again")
        with trio.fail_after(1):
            await w.done.wait()
        assert w.reply == "real"
    assert len(r) == 0
    assert not r.deliver(NodeId("n1"), w.id, "late")


# ------------------------------------------------------------------ rate-limited log


def test_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t"), interval_s=1.0, burst=2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        sent = [rl.warning("line %d", i) for i in range(5)]
        now[0] = 1.5
        assert rl.warning("later")
    assert sent == [True, True, False, False, False]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["line 0", "line 1", "later (3 similar lines suppressed)"]
