"""``python -m p2plog``: the command line. ``verify`` works; the node commands say they are not
built yet and exit non-zero rather than pretending to work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from p2plog.errors import P2PLogError
from p2plog.storage.verify import describe_cut, repair, verify

NODE_COMMANDS = ("send", "query", "tail", "status")

NOT_YET = """p2plog {cmd}: not available yet: this build has the Raft core, its simulator and the
durable log, not the node runtime. What runs today:
  python -m p2plog.testing.sim --seed 1 --steps 200000   # one simulator seed
  python -m p2plog verify [--repair] DIR                  # check a data directory
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m p2plog", description="p2plog distributed log")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("run", help="run this host's node")
    r.add_argument("--config", type=Path, default=Path("peers.toml"), help="peers.toml to use")
    r.add_argument("--node", help="this host's node id (default: self = ... in the file)")
    r.add_argument("--data-dir", type=Path, help="override the node's data_dir")
    r.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    loc = sub.add_parser("local", help="run every node of the config on this host")
    loc.add_argument("--config", type=Path, default=Path("peers.toml"), help="peers.toml to use")
    loc.add_argument("--data-dir", type=Path, help="put node data under DIR/<id>")
    for cmd in NODE_COMMANDS:
        sub.add_parser(cmd, help="(not built yet)").add_argument("rest", nargs=argparse.REMAINDER)
    v = sub.add_parser("verify", help="check a node's data directory offline")
    v.add_argument("dir", type=Path, metavar="DIR", help="the node's data directory")
    v.add_argument(
        "--repair", action="store_true", help="cut the log at the first bad frame (says what first)"
    )
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def cmd_verify(directory: Path, *, do_repair: bool, progress: bool) -> int:
    if not directory.is_dir():
        print(f"p2plog verify: {directory} is not a directory", file=sys.stderr)
        return 2
    rep = verify(directory, progress=progress)
    print(
        f"{directory}: {rep.segments} segment(s), entries {rep.first_index}..{rep.last_index}, "
        f"{rep.bytes} bytes; hard state: {rep.hard_state}"
    )
    for w in rep.warnings:
        print(f"warning: {w}")
    for problem in rep.problems:
        print(f"problem: {problem}")
    if rep.cut is None:
        print("OK" if rep.ok else "FAILED")
        return 0 if rep.ok else 1
    plan = describe_cut(rep)
    if not do_repair:
        print("repair would do this (run again with --repair):")
        for line in plan:
            print(f"  {line}")
        return 1 if rep.problems else 0
    for line in plan:
        print(line)
    last = repair(rep)
    print(f"repaired: the log now ends at index {last}")
    return 0


def cmd_run(config_path: Path, node_id: str | None, data_dir: Path | None, level: str) -> int:
    import trio

    from p2plog.config import load
    from p2plog.runtime.main import run_node, setup_logging

    cfg = load(config_path)
    me = cfg.node(node_id)
    setup_logging(level)
    try:
        trio.run(run_node, cfg, me, data_dir)
    except OSError as e:
        print(
            f"p2plog run: node {me.id} cannot listen on {me.address}: {e.strerror or e}; is "
            f"another node using that port?",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in NODE_COMMANDS:
        print(NOT_YET.format(cmd=args.command), end="", file=sys.stderr)
        return 2
    try:
        if args.command == "run":
            return cmd_run(args.config, args.node, args.data_dir, args.log_level)
        if args.command == "local":
            from p2plog.local import run_local

            return run_local(args.config, args.data_dir)
        return cmd_verify(args.dir, do_repair=args.repair, progress=not args.no_progress)
    except P2PLogError as e:
        print(f"p2plog {args.command}: {e}", file=sys.stderr)
        return 1
