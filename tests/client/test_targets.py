"""Which nodes a client command talks to: address parsing, the order of --addr, --config,
P2PLOG_ADDR and ./peers.toml, and the messages for bad values and unreachable nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2plog.client.targets import (
    ADDR_ENV,
    AddressError,
    Targets,
    parse_address,
    parse_addresses,
    resolve,
    unreachable_hint,
)
from p2plog.errors import ConfigError

from .cluster import write_config


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:7001", "127.0.0.1:7001"),
        ("  logs.example.com:7001 ", "logs.example.com:7001"),
        ("h:0070", "h:70"),
        ("[::1]:7001", "[::1]:7001"),
        ("[fe80::1]:1", "[fe80::1]:1"),
        ("ws://h:7001", "ws://h:7001"),
        ("wss://h:7001/client", "wss://h:7001"),
        ("wss://[::1]:7001/", "wss://[::1]:7001"),
        ("h:7001/client", "h:7001"),
    ],
)
def test_parse_address(text: str, address: str) -> None:
    assert parse_address(text) == address
    assert parse_address(address) == address  # a parsed address parses to itself


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "it has no port"),
        ("127.0.0.1", "it has no port"),
        ("h:", "the port must be a number from 1 to 65535, not ''"),
        ("h:0", "the port must be a number from 1 to 65535, not '0'"),
        ("h:65536", "not '65536'"),
        ("h:x", "not 'x'"),
        (":7001", "the host is missing"),
        ("::1:7001", r"an IPv6 address needs brackets: \[::1\]:7001"),
        ("[::1]", r"an IPv6 address is written \[IPV6\]:PORT"),
        ("[::1]7001", r"an IPv6 address is written \[IPV6\]:PORT"),
        ("[db1]:7001", "'db1' is not an IPv6 address"),
        ("http://h:7001", "the scheme must be ws:// or wss://, not http://"),
        ("user@h:7001", "holds a character no host name has"),
        ("h/x:7001", "holds a character no host name has"),
    ],
)
def test_bad_address_names_the_value_and_the_form(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=why) as info:
        parse_address(text)
    assert str(info.value).startswith(f"address {text!r}: ")
    assert str(info.value).endswith(
        "give HOST:PORT, [IPV6]:PORT or wss://HOST:PORT, e.g. 127.0.0.1:7001"
    )


def test_parse_addresses_splits_commas_keeps_order_drops_repeats() -> None:
    values = ["b:2, a:1", "[::1]:3,", "a:1"]
    assert parse_addresses(values) == ["b:2", "a:1", "[::1]:3"]
    with pytest.raises(AddressError, match="--addr names no node"):
        parse_addresses([" , "])
    with pytest.raises(AddressError, match="address 'oops'"):
        parse_addresses(["a:1,oops"])


@pytest.fixture
def client_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no peers.toml in it."""
    home = tmp_path / "client-host"
    home.mkdir()
    monkeypatch.chdir(home)
    return home


def test_addr_beats_the_environment(client_host: Path) -> None:
    t = resolve(["127.0.0.1:7001"], None, None, {ADDR_ENV: "127.0.0.1:7002"})
    assert (t.addresses, t.origin, t.labels) == (["127.0.0.1:7001"], "--addr", {})
    assert t.named() == [("?", "127.0.0.1:7001")]


def test_environment_needs_no_peers_toml(client_host: Path) -> None:
    t = resolve(None, None, None, {ADDR_ENV: "127.0.0.1:7001,127.0.0.1:7002"})
    assert (t.addresses, t.origin) == (["127.0.0.1:7001", "127.0.0.1:7002"], ADDR_ENV)
    with pytest.raises(ConfigError, match=r"peers\.toml"):
        resolve(None, None, None, {ADDR_ENV: "  "})  # empty: as if unset


def test_explicit_config_or_node_beats_the_environment(client_host: Path) -> None:
    path = client_host / "peers.toml"
    write_config(path, [7101, 7102])
    env = {ADDR_ENV: "127.0.0.1:9"}
    t = resolve(None, path, None, env)
    assert t.addresses == ["127.0.0.1:7101", "127.0.0.1:7102"]
    assert t.named() == [("n1", "127.0.0.1:7101"), ("n2", "127.0.0.1:7102")]
    t = resolve(None, None, "n2", env)  # --node picks from ./peers.toml
    assert (t.addresses, t.origin, t.node) == (["127.0.0.1:7102"], "peers.toml", "n2")
    assert resolve(None, None, None, {}).addresses == ["127.0.0.1:7101", "127.0.0.1:7102"]


def test_addr_with_config_is_refused(client_host: Path) -> None:
    with pytest.raises(AddressError, match="give --addr or --config/--node"):
        resolve(["h:1"], Path("peers.toml"), None, {})
    with pytest.raises(AddressError, match="give --addr or --config/--node"):
        resolve(["h:1"], None, "n1", {})


def test_bad_environment_value_is_named(client_host: Path) -> None:
    with pytest.raises(AddressError, match=rf"^{ADDR_ENV}: address 'h:99999': the port"):
        resolve(None, None, None, {ADDR_ENV: "h:1,h:99999"})


def test_unreachable_hint_for_addresses() -> None:
    t = Targets(["127.0.0.1:1", "127.0.0.1:2"], "--addr")
    tried = [("127.0.0.1:1", "connection refused"), ("127.0.0.1:2", "connection refused")]
    assert unreachable_hint("query", t, tried) == (
        "p2plog query: no node of --addr is reachable (tried 127.0.0.1:1, 127.0.0.1:2: "
        "connection refused); check the addresses and that a node listens there"
    )
    t = Targets(["127.0.0.1:1"], ADDR_ENV)
    assert unreachable_hint("send", t, tried[:1]).startswith(
        f"p2plog send: no node of {ADDR_ENV} is reachable (tried 127.0.0.1:1: connection refused)"
    )
