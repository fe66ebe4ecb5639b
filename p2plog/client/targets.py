"""Which nodes a client command (``send``, ``query``, ``tail``, ``status``) talks to.

In order: ``--addr`` (repeated or comma-separated), else ``--config``/``--node`` when given,
else ``$P2PLOG_ADDR``, else ``./peers.toml``. An explicit flag beats the environment, and the
environment beats the default file, so a client host needs no peers.toml at all.

An address is ``HOST:PORT`` or ``[IPV6]:PORT``, optionally behind ``ws://`` or ``wss://``
(``wss://`` means TLS, as for ``open_client``). The client tries them in the order given and
fails over between them. A bad value raises ``AddressError`` naming the value and the form.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p2plog.config import load

ADDR_ENV = "P2PLOG_ADDR"
DEFAULT_CONFIG = Path("peers.toml")
ADDR_FORM = "HOST:PORT, [IPV6]:PORT or wss://HOST:PORT, e.g. 127.0.0.1:7001"
# Characters no host name or IPv4 address holds; a URL path or user part is a mistake here.
_NOT_IN_HOST = frozenset("/@?#[] \t")


class AddressError(ValueError):
    """A node address given on the command line or in ``P2PLOG_ADDR`` is malformed."""


@dataclass(frozen=True, slots=True)
class Targets:
    """The nodes to talk to and where they came from (for messages)."""

    addresses: list[str]
    origin: str  # "--addr", "P2PLOG_ADDR" or the config path
    labels: dict[str, str] = field(default_factory=dict)  # node id by address, from a config
    ca: str | None = None  # the config's [tls] ca
    node: str | None = None  # --node, if one node of the config was picked

    def named(self) -> list[tuple[str, str]]:
        """(node id, address) pairs; "?" where only the address is known."""
        return [(self.labels.get(a, "?"), a) for a in self.addresses]


def parse_address(text: str) -> str:
    """One address, checked, as ``open_client`` takes it (``[::1]:7001``, ``wss://h:7001``)."""
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "", raw
    elif scheme not in ("ws", "wss"):
        raise _bad(text, f"the scheme must be ws:// or wss://, not {scheme}://")
    rest = rest.removesuffix("/").removesuffix("/client")  # ws://host:port/client is fine too
    if rest.startswith("["):
        host, close, after = rest[1:].partition("]")
        if not close or not after.startswith(":"):
            raise _bad(text, "an IPv6 address is written [IPV6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(text, f"{host!r} is not an IPv6 address") from None
        port_text, shown = after[1:], f"[{host}]"
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise _bad(text, "it has no port")
        if ":" in host:
            raise _bad(text, f"an IPv6 address needs brackets: [{host}]:{port_text}")
        if not host or not _NOT_IN_HOST.isdisjoint(host):
            raise _bad(text, "the host is missing or holds a character no host name has")
        shown = host
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _bad(text, f"the port must be a number from 1 to 65535, not {port_text!r}")
    address = f"{shown}:{int(port_text)}"
    return f"{scheme}://{address}" if scheme else address


def parse_addresses(values: Sequence[str], origin: str = "--addr") -> list[str]:
    """Every address of ``values`` (each may be a comma-separated list), duplicates dropped."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            if item.strip() and (a := parse_address(item)) not in out:
                out.append(a)
    if not out:
        raise AddressError(f"{origin} names no node; give {ADDR_FORM}")
    return out


def _bad(text: str, why: str) -> AddressError:
    return AddressError(f"address {text!r}: {why}; give {ADDR_FORM}")


def resolve(
    addr: Sequence[str] | None,
    config: Path | None,
    node: str | None,
    environ: Mapping[str, str],
) -> Targets:
    """The targets of one command (see the module docstring for the order). Raises
    ``AddressError`` for a bad address and ``ConfigError`` for a bad or missing config."""
    if addr and (config is not None or node is not None):
        raise AddressError("--addr names the nodes itself: give --addr or --config/--node")
    if addr:
        return Targets(parse_addresses(addr), "--addr")
    env = environ.get(ADDR_ENV, "")
    if config is None and node is None and env.strip():
        try:
            return Targets(parse_addresses([env], ADDR_ENV), ADDR_ENV)
        except AddressError as e:
            raise AddressError(f"{ADDR_ENV}: {e}") from None
    path = config or DEFAULT_CONFIG
    cfg = load(path)
    nodes = [cfg.node(node)] if node else list(cfg.nodes)
    ca = str(cfg.tls.ca) if cfg.tls is not None else None
    labels = {n.address: str(n.id) for n in nodes}
    return Targets([n.address for n in nodes], str(path), labels, ca, node)


def unreachable_hint(command: str, targets: Targets, tried: Sequence[tuple[str, str]]) -> str:
    """What to tell the user when no node answered: what was tried, and what to check."""
    reasons = {r for _, r in tried if r}
    why = f": {reasons.pop()}" if len(reasons) == 1 else ""
    addrs = ", ".join(a for a, _ in tried)
    head = f"p2plog {command}:"
    if targets.origin in ("--addr", ADDR_ENV):
        return (
            f"{head} no node of {targets.origin} is reachable (tried {addrs}{why}); check the "
            f"address{'es' if len(targets.addresses) > 1 else ''} and that a node listens there"
        )
    cfg = targets.origin
    flag = f" --config {cfg}" if cfg != str(DEFAULT_CONFIG) else ""
    who = f"node {targets.node} of {cfg} is not" if targets.node else f"no node of {cfg} is"
    return (
        f"{head} {who} reachable (tried {addrs}{why}); is the cluster running? start it with "
        f"python -m p2plog local{flag}"
    )
