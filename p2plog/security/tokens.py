"""Client tokens: made once, shown once, stored only as a hash, each with one role.

Roles: ``write`` (submit), ``read`` (query, tail), ``admin`` (both, and the full ``status``
with peers and addresses). Every connection may ask ``status`` (without peers) and ``time``.

A token is ``p2p_`` + 43 characters (32 random bytes, URL-safe base64): far too many to guess,
so the file keeps a plain SHA-256 of it (as GitHub keeps its tokens) and a stolen tokens file
lets nobody in. The tokens file is TOML the ``token`` command writes::

    [[token]]
    name = "shipper-web1"
    role = "write"
    sha256 = "9f86d081..."
    created = "2026-12-03T08:00:00Z"

A node re-reads the file when it changes (checked at most once a second), so adding or
revoking a token needs no restart. A token never appears in a log line or an error message:
only its name does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from p2plog.errors import ConfigError

ROLES = ("write", "read", "admin")
PREFIX = "p2p_"
RELOAD_CHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class Grant:
    """Who a connection is: a token's name and role (``name`` None: anonymous)."""

    name: str | None
    role: str | None

    def can(self, what: str) -> bool:
        """May this connection ``submit`` (write), ``read`` (query, tail) or ``admin``?"""
        if self.role == "admin":
            return True
        return (what == "submit" and self.role == "write") or (
            what == "read" and self.role == "read"
        )


ANONYMOUS = Grant(None, None)
OPEN = Grant("open access", "admin")  # no tokens file: every connection may do everything


def new_token() -> str:
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse(text: str, where: str) -> dict[str, Grant]:
    """Token hash -> grant, from a tokens file's text; ``ConfigError`` naming the entry."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    entries = raw.get("token", [])
    if set(raw) - {"token"} or not isinstance(entries, list):
        raise ConfigError(f"{where}: only [[token]] entries belong here")
    out: dict[str, Grant] = {}
    names: set[str] = set()
    for i, t in enumerate(entries):
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: token #{i + 1} must be a [[token]] table")
        name, role, digest = t.get("name"), t.get("role"), t.get("sha256")
        if not isinstance(name, str) or not name or name in names:
            raise ConfigError(f"{where}: token #{i + 1} needs a unique name, got {name!r}")
        if role not in ROLES:
            raise ConfigError(f"{where}: token {name!r} role {role!r} is not one of {ROLES}")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ConfigError(f"{where}: token {name!r} needs sha256 = 64 hex characters")
        names.add(name)
        out[digest.lower()] = Grant(name, role)
    return out


class TokenStore:
    """The grants of one tokens file, re-read when the file changes."""

    def __init__(self, path: Path, clock: Any = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._version: tuple[int, int, int] | None = None
        self._checked = -float("inf")
        self._grants: dict[str, Grant] = {}
        self.reload()
        self._checked = clock()

    def reload(self) -> None:
        try:
            st = self.path.stat()
            text = self.path.read_text()
        except OSError as e:
            raise ConfigError(
                f"{self.path}: cannot read the tokens file ({e.strerror or e}); create it with "
                f"python -m p2plog token add NAME --role write"
            ) from None
        self._grants = parse(text, str(self.path))
        self._version = _version(st)

    def maybe_reload(self) -> str | None:
        """Re-read the file if it changed since the last look (at most once a second);
        returns what went wrong if the new file is bad (the old grants stay in force)."""
        now = self._clock()
        if now - self._checked < RELOAD_CHECK_S:
            return None
        self._checked = now
        try:
            if _version(self.path.stat()) == self._version:
                return None
            self.reload()
        except (OSError, ConfigError) as e:
            return str(e)
        return None

    def lookup(self, token: str) -> Grant | None:
        return self._grants.get(token_hash(token))

    def __len__(self) -> int:
        return len(self._grants)


def _version(st: os.stat_result) -> tuple[int, int, int]:
    """What tells a changed file: the inode (the command replaces the file), the mtime in ns
    and the size (an edit within the file system's mtime granularity still shows in one)."""
    return st.st_ino, st.st_mtime_ns, st.st_size


# ----------------------------------------------------------------- the token command


def add(path: Path, name: str, role: str) -> str:
    """Append a new token to the file (created 0600 if missing); returns the token itself,
    which is shown once and never stored."""
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
    existing = path.read_text() if path.exists() else ""
    if any(g.name == name for g in parse(existing, str(path)).values()):
        raise ConfigError(f"{path}: a token named {name!r} exists; revoke it first or pick a name")
    token = new_token()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = (
        f"\n[[token]]\nname = {json.dumps(name)}\nrole = {json.dumps(role)}\n"
        f'sha256 = "{token_hash(token)}"\ncreated = "{created}"\n'
    )
    _write(path, existing + entry)
    return token


def revoke(path: Path, name: str) -> bool:
    """Drop the token called ``name``; False if there was none."""
    text = path.read_text() if path.exists() else ""
    raw = tomllib.loads(text) if text else {}
    kept = [t for t in raw.get("token", []) if t.get("name") != name]
    if len(kept) == len(raw.get("token", [])):
        return False
    out = "".join(
        "\n[[token]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items()) for t in kept
    )
    _write(path, out)
    return True


def listing(path: Path) -> list[tuple[str, str]]:
    """(name, role) of every token in the file."""
    text = path.read_text() if path.exists() else ""
    return [(g.name or "", g.role or "") for g in parse(text, str(path)).values()]


def _write(path: Path, text: str) -> None:
    """Replace the file atomically (write a temporary file, fsync, rename), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
