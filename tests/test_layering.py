"""Import rules of ARCHITECTURE.md section 2, checked statically with `ast`.

Enforced on every module under p2plog/ (a failure names file, line and the forbidden import):

- `raft/` imports only the standard library and `p2plog.raft` itself.
- The pure packages (`raft/`, `state/`, `order/`, `clock/` except `clock/ntp_poller.py`, `wire/`,
  `compat/`)
  import no I/O, clock or scheduling module, use no module-level `random` function (a seeded
  `random.Random` instance is the only randomness) and never call `uuid4()`/`uuid1()`.
- `net/` never imports `p2plog.raft.node`, `p2plog.state`, `p2plog.runtime` or `p2plog.service`:
  it carries frames and connections, the runtime hands it what to do with them.
- `service/` never imports `p2plog.storage`, nor `p2plog.runtime` beyond the live streams it
  subscribes to (`runtime.tail_hub`) and, in `service/main.py` only (where a node is built
  whole), `runtime.node`: client sessions see their node only as `service.api.NodeApi`, and
  read the log only through it.
- `runtime/` never imports `p2plog.service`: the sessions sit above the node, so a record's
  path from a session to the disk only goes down.

Packages that do not exist yet pass vacuously, but `raft/` must exist and hold a module so the
scan can never silently check nothing. The checker tests itself on synthetic sources below.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PURE_PACKAGES = (
    "p2plog/raft/",
    "p2plog/replica/",
    "p2plog/state/",
    "p2plog/order/",
    "p2plog/clock/",
    "p2plog/wire/",
    "p2plog/compat/",
)
PURE_EXEMPT = frozenset({"p2plog/clock/ntp_poller.py"})
# The pure core gets time only through tick() and input only through step() (etcd-io/raft's
# shape); anything that reads a clock, touches a socket or schedules work belongs to runtime/.
IO_MODULES = frozenset({"trio", "trio_websocket", "socket", "asyncio", "select", "selectors"})
IMPURE_MODULES = IO_MODULES | {"time", "threading", "subprocess"}
# Only a seeded instance is deterministic; every other name in `random` is the global source
# (random.random, randint, choice, shuffle, seed...) or OS entropy (SystemRandom).
RANDOM_ALLOWED = frozenset({"Random"})
UUID_FORBIDDEN = frozenset({"uuid1", "uuid4"})  # global randomness / the wall clock
NET_FORBIDDEN = ("p2plog.raft.node", "p2plog.state", "p2plog.runtime", "p2plog.service")
SERVICE_FORBIDDEN = ("p2plog.runtime", "p2plog.storage")
SERVICE_MAY_USE = ("p2plog.runtime.tail_hub",)
SERVICE_ROOT = "p2plog/service/main.py"  # builds a node whole: the one place to name Node
SERVICE_ROOT_MAY_USE = ("p2plog.runtime.node",)
# The replica is the sans-I/O state machine the simulator drives whole: besides the standard
# library it may build only on the other pure parts (never on runtime/, net/, storage/...) and
# cbor2 (a pure codec, as state/ uses for record bodies: the snapshot's encoding).
REPLICA_ALLOWED = (
    "p2plog.replica",
    "cbor2",
    "p2plog.raft",
    "p2plog.state",
    "p2plog.order",
    "p2plog.clock.hlc",
    "p2plog.record",
    "p2plog.wire.client",
)


@dataclass(frozen=True, slots=True)
class Import:
    line: int
    module: str  # absolute module named by the statement (relative imports resolved)
    names: tuple[str, ...]  # `from module import a, b`; empty for `import module`
    bound: str  # name bound by `import module [as bound]`; empty for `from` imports

    def qualified(self) -> list[str]:
        """What the statement reaches: `module` itself, or `module.name` per imported name."""
        return [f"{self.module}.{name}" for name in self.names] if self.names else [self.module]


@dataclass(frozen=True, slots=True)
class Source:
    path: str  # repo-relative posix path, e.g. "p2plog/raft/node.py"
    module: str  # dotted module name, e.g. "p2plog.raft.node"
    tree: ast.Module

    @classmethod
    def parse(cls, path: str, text: str) -> Source:
        parts = path.removesuffix(".py").split("/")
        if parts[-1] == "__init__":
            parts.pop()
        return cls(path, ".".join(parts), ast.parse(text, filename=path))

    @property
    def package(self) -> str:
        """The package relative imports start from (PEP 328)."""
        if self.path.endswith("/__init__.py"):
            return self.module
        return self.module.rpartition(".")[0]


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def resolve(src: Source, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = src.package.split(".")
    assert node.level <= len(base), f"{src.path}:{node.lineno}: relative import leaves p2plog"
    parts = base[: len(base) - node.level + 1]
    return ".".join([*parts, node.module] if node.module else parts)


def imports(src: Source) -> list[Import]:
    found: list[Import] = []
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.partition(".")[0]
                found.append(Import(node.lineno, alias.name, (), bound))
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            found.append(Import(node.lineno, resolve(src, node), names, ""))
    return found


def check_raft_stdlib(src: Source) -> list[str]:
    out: list[str] = []
    for imp in imports(src):
        if imp.module.partition(".")[0] in sys.stdlib_module_names:
            continue
        if all(in_package(name, "p2plog.raft") for name in imp.qualified()):
            continue
        out.append(
            f"{src.path}:{imp.line}: imports {imp.module!r}; "
            "raft/ may import only the standard library and p2plog.raft"
        )
    return out


def check_replica(src: Source) -> list[str]:
    return [
        f"{src.path}:{imp.line}: imports {imp.module!r}; replica/ builds only on the standard "
        f"library and {', '.join(REPLICA_ALLOWED[1:])}"
        for imp in imports(src)
        if imp.module.partition(".")[0] not in sys.stdlib_module_names
        and not any(in_package(imp.module, ok) for ok in REPLICA_ALLOWED)
    ]


def check_pure(src: Source) -> list[str]:
    out: list[str] = []
    aliases: dict[str, str] = {}  # local name bound by `import random`/`import uuid` -> module
    for imp in imports(src):
        top = imp.module.partition(".")[0]
        where = f"{src.path}:{imp.line}"
        if top in IMPURE_MODULES:
            out.append(
                f"{where}: imports {imp.module!r}; pure packages do no I/O and read no clock"
            )
        elif imp.module in ("random", "uuid") and not imp.names:
            aliases[imp.bound] = imp.module
        elif imp.module == "random":
            out += [
                f"{where}: imports random.{name}; use a seeded random.Random instance"
                for name in imp.names
                if name not in RANDOM_ALLOWED
            ]
        elif imp.module == "uuid":
            out += [
                f"{where}: imports uuid.{name}; ids come from the client or a seeded source"
                for name in imp.names
                if name in UUID_FORBIDDEN or name == "*"
            ]
    for node in ast.walk(src.tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        module = aliases.get(node.value.id)
        if (module == "random" and node.attr not in RANDOM_ALLOWED) or (
            module == "uuid" and node.attr in UUID_FORBIDDEN
        ):
            out.append(
                f"{src.path}:{node.lineno}: uses {module}.{node.attr}; "
                "pure packages take randomness from a seeded random.Random"
            )
    return out


def reaches(src: Source, forbidden: tuple[str, ...]) -> Iterator[tuple[Import, str]]:
    """Each import of ``src`` that reaches into a ``forbidden`` package, with what it names."""
    for imp in imports(src):
        for name in dict.fromkeys([imp.module, *imp.qualified()]):
            if any(in_package(name, f) for f in forbidden):
                yield imp, name


def check_net(src: Source) -> list[str]:
    return [
        f"{src.path}:{imp.line}: imports {name!r}; net/ carries frames for the runtime, never "
        "imports raft.node, state/, runtime/ or service/"
        for imp, name in reaches(src, NET_FORBIDDEN)
    ]


def check_service(src: Source) -> list[str]:
    allowed = SERVICE_MAY_USE + (SERVICE_ROOT_MAY_USE if src.path == SERVICE_ROOT else ())
    return [
        f"{src.path}:{imp.line}: imports {name!r}; service/ talks to its node through "
        "service.api.NodeApi, never to runtime/ (but its tail hubs) or storage/"
        for imp, name in reaches(src, SERVICE_FORBIDDEN)
        if not any(in_package(name, ok) for ok in allowed)
    ]


def check_runtime(src: Source) -> list[str]:
    return [
        f"{src.path}:{imp.line}: imports {name!r}; runtime/ is below the client sessions and "
        "never imports service/ (they are plugged in by service.main.make_node)"
        for imp, name in reaches(src, ("p2plog.service",))
    ]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    applies: Callable[[str], bool]
    check: Callable[[Source], list[str]]
    must_exist: str = ""  # a package prefix that must hold at least one module


RULES = (
    Rule(
        "raft-stdlib-only",
        lambda path: path.startswith("p2plog/raft/"),
        check_raft_stdlib,
        must_exist="p2plog/raft/",
    ),
    Rule(
        "pure-no-io",
        lambda path: path.startswith(PURE_PACKAGES) and path not in PURE_EXEMPT,
        check_pure,
    ),
    Rule(
        "replica-pure-parts-only",
        lambda path: path.startswith("p2plog/replica/"),
        check_replica,
        must_exist="p2plog/replica/",
    ),
    Rule("net-transport-only", lambda path: path.startswith("p2plog/net/"), check_net),
    Rule("runtime-below-service", lambda path: path.startswith("p2plog/runtime/"), check_runtime),
    Rule(
        "service-through-node-api",
        lambda path: path.startswith("p2plog/service/"),
        check_service,
        must_exist="p2plog/service/",
    ),
)


def sources(root: Path) -> Iterator[Source]:
    for path in sorted((root / "p2plog").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        yield Source.parse(rel, path.read_text(encoding="utf-8"))


def run_rule(rule: Rule, root: Path) -> tuple[int, list[str]]:
    """Return (modules scanned, violations)."""
    scanned = [src for src in sources(root) if rule.applies(src.path)]
    return len(scanned), [line for src in scanned for line in rule.check(src)]


@pytest.mark.parametrize("rule", [pytest.param(rule, id=rule.name) for rule in RULES])
def test_import_rule(rule: Rule) -> None:
    scanned, violations = run_rule(rule, REPO)
    if rule.must_exist:
        assert scanned > 0, f"{rule.must_exist} has no modules: the layering scan checks nothing"
    assert not violations, f"rule {rule.name} broken:\n" + "\n".join(violations)


# --- the checker checks itself -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("import trio", True),
        ("import trio.lowlevel", True),
        ("from trio_websocket import open_websocket_url", True),
        ("from time import monotonic", True),
        ("import socket", True),
        ("import asyncio", True),
        ("import random\nrandom.random()", True),
        ("import random as rnd\nrnd.shuffle(xs)", True),
        ("from random import randint", True),
        ("from random import *", True),
        ("from uuid import uuid4", True),
        ("import uuid\nuuid.uuid4()", True),
        ("import random\nrng = random.Random(7)", False),
        ("from random import Random", False),
        ("from uuid import UUID", False),
        ("from dataclasses import dataclass\nfrom typing import NewType", False),
    ],
)
def test_pure_checker(text: str, flagged: bool) -> None:
    assert bool(check_pure(Source.parse("p2plog/raft/x.py", text))) is flagged


@pytest.mark.parametrize(
    ("path", "text", "flagged"),
    [
        ("p2plog/raft/node.py", "import cbor2", True),
        ("p2plog/raft/node.py", "from p2plog import errors", True),
        ("p2plog/raft/node.py", "from .. import errors", True),
        ("p2plog/raft/node.py", "from ..storage.memory import MemoryStore", True),
        ("p2plog/raft/node.py", "from . import types", False),
        ("p2plog/raft/node.py", "from .types import Term", False),
        ("p2plog/raft/node.py", "import p2plog.raft.log", False),
        ("p2plog/raft/node.py", "from __future__ import annotations", False),
        ("p2plog/raft/node.py", "from collections import deque", False),
        ("p2plog/raft/__init__.py", "from .node import RaftNode", False),
    ],
)
def test_raft_stdlib_checker(path: str, text: str, flagged: bool) -> None:
    assert bool(check_raft_stdlib(Source.parse(path, text))) is flagged


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("from p2plog.raft import node", True),
        ("from ..raft.node import RaftNode", True),
        ("import p2plog.state.dedup", True),
        ("from ..state import applier", True),
        ("from p2plog import state", True),
        ("from p2plog.runtime.node import Node", True),
        ("from ..service import session", True),
        ("from p2plog.raft.messages import Message", False),
        ("from ..wire import codec", False),
        ("from p2plog.security.tokens import Grant", False),
    ],
)
def test_net_checker(text: str, flagged: bool) -> None:
    assert bool(check_net(Source.parse("p2plog/net/peer_link.py", text))) is flagged


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("from p2plog.runtime.node import Node", True),
        ("from ..runtime import raft_loop", True),
        ("from p2plog import runtime", True),
        ("from p2plog.storage.segmented_log import SegmentedLog", True),
        ("from p2plog.service.api import NodeApi", False),
        ("from .api import NodeApi", False),
        ("from p2plog.state.scans import ScanLog", False),
        ("from p2plog.runtime.tail_hub import TailHub", False),
    ],
)
def test_service_checker(text: str, flagged: bool) -> None:
    assert bool(check_service(Source.parse("p2plog/service/session.py", text))) is flagged


def test_only_service_main_builds_a_node() -> None:
    text = "from p2plog.runtime.node import Node"
    assert not check_service(Source.parse("p2plog/service/main.py", text))
    assert check_service(Source.parse("p2plog/service/main.py", "from p2plog import runtime"))
    assert check_runtime(Source.parse("p2plog/runtime/node.py", "from p2plog.service import x"))
    assert not check_runtime(Source.parse("p2plog/runtime/node.py", "from p2plog.state import x"))


def test_scan_names_file_and_line_and_honours_exemption(tmp_path: Path) -> None:
    files = {
        "p2plog/raft/__init__.py": "",
        "p2plog/raft/node.py": '"""doc"""\nimport time\n',
        "p2plog/clock/hlc.py": "from time import time_ns\n",
        "p2plog/clock/ntp_poller.py": "import trio\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    pure = next(rule for rule in RULES if rule.name == "pure-no-io")
    scanned, violations = run_rule(pure, tmp_path)
    assert scanned == 3
    assert [v.split(": ")[0] for v in violations] == [
        "p2plog/clock/hlc.py:1",
        "p2plog/raft/node.py:2",
    ]
    assert "'time'" in violations[1]


def test_missing_packages_scan_nothing(tmp_path: Path) -> None:
    assert all(run_rule(rule, tmp_path) == (0, []) for rule in RULES)


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("from p2plog.raft.node import RaftNode", False),
        ("from p2plog.state.applier import Applier", False),
        ("import collections", False),
        ("from p2plog.runtime.raft_loop import RaftLoop", True),
        ("from p2plog.storage.segmented_log import SegmentedLog", True),
        ("import cbor2", False),
        ("import msgspec", True),
        ("import trio", True),
    ],
)
def test_replica_checker(text: str, flagged: bool) -> None:
    src = Source.parse("p2plog/replica/x.py", text)
    assert bool(check_replica(src)) is flagged
