"""``p2plog`` (or ``python -m p2plog``): the command line.

Node commands: ``run`` (one node), ``local`` (every node of a peers.toml on this host),
``verify`` (offline check of a data directory or a backup), ``backup`` and ``restore``
(``p2plog.backup_cli``). Client commands (``p2plog.client.commands``):
``send``, ``query``, ``tail``, ``status``; they talk to the nodes of ``--addr``, else of
``--config``/``--node``, else of ``$P2PLOG_ADDR``, else of ./peers.toml
(``p2plog.client.targets``). Exit codes: 0 done, 1 the cluster or the data could not do it
(reason on stderr), 2 bad usage. A reader that stops early (``query | head``) is a normal end:
exit 0, nothing on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2plog.errors import P2PLogError
from p2plog.progress_bar import terminal_bar
from p2plog.storage.verify import describe_cut, repair, report_lines, verify

if TYPE_CHECKING:
    from p2plog.client.options import ClientOptions
    from p2plog.client.targets import Targets

CLIENT_COMMANDS = ("send", "query", "tail", "status", "member")
LEVELS = ("debug", "info", "warning", "error", "critical")
TIME_HELP = "ISO-8601 (2026-11-24T22:27:16Z; no zone = UTC) or relative: -30s, -5m, -2h, -1d"


def package_version() -> str:
    """The installed distribution's version, else the source tree's (not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("p2plog")
    except PackageNotFoundError:
        from p2plog import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    prog = "p2plog" if Path(sys.argv[0]).name == "p2plog" else "python -m p2plog"
    p = argparse.ArgumentParser(prog=prog, description="p2plog distributed log")
    p.add_argument("--version", action="version", version=f"p2plog {package_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("run", help="run this host's node")
    r.add_argument("--config", type=Path, default=Path("peers.toml"), help="peers.toml to use")
    r.add_argument("--node", help="this host's node id (default: self = ... in the file)")
    r.add_argument("--data-dir", type=Path, help="override the node's data_dir")
    r.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    loc = sub.add_parser("local", help="run every node of the config on this host")
    loc.add_argument("--config", type=Path, default=Path("peers.toml"), help="peers.toml to use")
    loc.add_argument("--data-dir", type=Path, help="put node data under DIR/<id>")
    add_client_commands(sub)
    v = sub.add_parser("verify", help="check a node's data directory (offline) or a backup")
    v.add_argument("dir", type=Path, metavar="DIR", help="the data directory or backup")
    v.add_argument(
        "--repair", action="store_true", help="cut the log at the first bad frame (says what first)"
    )
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    from p2plog.security.commands import add_parsers

    add_parsers(sub)
    from p2plog import backup_cli

    backup_cli.add_parsers(sub)
    return p


def _time_arg(text: str) -> int:
    from p2plog.client.commands import parse_time

    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _field_arg(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(
            f"field filter {text!r}: expected KEY=VALUE, e.g. user=ann"
        )
    return key, value


def _addr_arg(text: str) -> list[str]:
    from p2plog.client.targets import AddressError, parse_addresses

    try:
        return parse_addresses([text])
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def client_options(*, after_subcommand: bool = False) -> argparse.ArgumentParser:
    """The options every client command takes, as a parent parser. ``after_subcommand``: for
    the parsers of a command's own subcommands (``member add ... --config F``), whose absent
    options must not override what was given before the subcommand."""
    c = argparse.ArgumentParser(add_help=False)
    kw: dict[str, Any] = {"default": argparse.SUPPRESS} if after_subcommand else {}
    c.add_argument(
        "--addr",
        type=_addr_arg,
        action="extend",
        metavar="HOST:PORT",
        help="node(s) to talk to, in failover order: repeat or comma-separate; [v6]:port "
        "and wss:// work (default: $P2PLOG_ADDR, else the nodes of --config)",
        **kw,
    )
    c.add_argument("--config", type=Path, help="peers.toml (default: ./peers.toml)", **kw)
    c.add_argument("--node", help="talk to this node of the config (default: all, in order)", **kw)
    c.add_argument("--token", help="client token (default: $P2PLOG_TOKEN)", **kw)
    c.add_argument("--ca", help="CA file for wss:// (default: $P2PLOG_CA, or [tls] ca)", **kw)
    return c


def add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(cmd: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(cmd, help=help_text, parents=[client_options()])

    def selectors(c: argparse.ArgumentParser, limit: int | None) -> None:
        c.add_argument("--from-index", type=int, metavar="N", help="first log index")
        c.add_argument("--to-index", type=int, metavar="N", help="last log index (inclusive)")
        c.add_argument(
            "--since", type=_time_arg, metavar="T", help=f"from event time T: {TIME_HELP}"
        )
        c.add_argument("--until", type=_time_arg, metavar="T", help="before event time T")
        c.add_argument("--level", choices=LEVELS, help="minimum level")
        c.add_argument("--source", help="exact source")
        c.add_argument("--grep", metavar="TEXT", help="substring of the message")
        c.add_argument(
            "--field",
            action="append",
            type=_field_arg,
            metavar="KEY=VALUE",
            help="a field the record must hold with this value (repeatable; numbers and "
            "booleans as JSON: n=42, ok=true); checked on the node",
        )
        c.add_argument("--limit", type=int, default=limit, metavar="N", help="at most N records")
        c.add_argument("--order", choices=("index", "event"), help="index (default) or event time")
        c.add_argument("--json", action="store_true", help="one JSON object per line")

    s = common("send", "store a message (or one record per stdin line)")
    s.add_argument("--ack", choices=("quorum", "leader"), default="quorum")
    s.add_argument("--level", choices=LEVELS, default="info")
    s.add_argument("--source", default="cli")
    s.add_argument("msg", nargs="*", metavar="MSG", help="the message (words are joined)")
    selectors(common("query", "print committed records"), 1000)
    selectors(common("tail", "print records as they commit, until Ctrl-C"), None)
    common("status", "role, term, leader and indexes of every node").add_argument(
        "--json", action="store_true", help="one JSON object with a nodes list"
    )
    from p2plog.client import member_cli

    member_cli.add_parser(common, client_options(after_subcommand=True))


def _fix_negative_times(argv: list[str]) -> list[str]:
    """``--since -5m`` would look like an option to argparse; glue it as ``--since=-5m``."""
    out: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        a = argv[i]
        if a in ("--since", "--until") and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{a}={argv[i + 1]}")
            next(it, None)
        else:
            out.append(a)
    return out


def cmd_client(args: argparse.Namespace) -> int:
    from p2plog.client import commands
    from p2plog.client.errors import AuthError, ClientError, ServerError, Unreachable
    from p2plog.client.targets import AddressError, resolve, unreachable_hint

    try:
        targets = resolve(args.addr, args.config, args.node, os.environ)
    except AddressError as e:
        print(f"p2plog {args.command}: {e}", file=sys.stderr)
        return 2
    opts = commands.cli_options(args.token, args.ca or targets.ca)
    try:
        return _run_client(args, targets, opts)
    except Unreachable as e:
        print(unreachable_hint(args.command, targets, e.tried), file=sys.stderr)
        return 1
    except AuthError as e:
        print(f"p2plog {args.command}: {e}", file=sys.stderr)
        return 1
    except ServerError as e:
        print(f"p2plog {args.command}: the node refused the request: {e}", file=sys.stderr)
        return 2 if e.code == "bad_request" else 1
    except ClientError as e:
        print(f"p2plog {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0 if args.command == "tail" else 130


def _run_client(args: argparse.Namespace, targets: Targets, opts: ClientOptions) -> int:
    import trio

    from p2plog.client import commands

    addresses, out = targets.addresses, sys.stdout
    sel: dict[str, object] = {}
    if args.command in ("query", "tail"):
        for k in ("from_index", "to_index", "since", "until", "level", "source", "grep", "order"):
            sel[k] = getattr(args, k)
        sel["fields"] = dict(args.field) if args.field else None
    if args.command == "send":
        return trio.run(
            lambda: commands.send(
                addresses,
                ack=args.ack,
                level=args.level,
                source=args.source,
                msgs=args.msg,
                stdin=sys.stdin.buffer,
                out=out,
                err=sys.stderr,
                labels=targets.labels,
                options=opts,
            )
        )
    if args.command == "member":
        from p2plog.client import member_cli

        fields = member_cli.request(args)
        as_json = bool(getattr(args, "json", False))
        return trio.run(
            lambda: member_cli.member(addresses, fields, as_json=as_json, out=out, options=opts)
        )
    if args.command in ("query", "tail"):
        run = commands.query if args.command == "query" else commands.tail
        return trio.run(
            lambda: run(addresses, sel, limit=args.limit, as_json=args.json, out=out, options=opts)
        )
    return trio.run(
        lambda: commands.status(targets.named(), as_json=args.json, out=out, options=opts)
    )


def cmd_verify(directory: Path, *, do_repair: bool, progress: bool) -> int:
    if not directory.is_dir():
        print(f"p2plog verify: {directory} is not a directory", file=sys.stderr)
        return 2
    bar = terminal_bar("verify", wanted=progress)
    rep = verify(directory, progress=bar.update if bar else None)
    if bar is not None:
        bar.close()
    for line in report_lines(rep):
        print(line)
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
    from p2plog.service.main import run_node, setup_logging
    from p2plog.service.memory import pin_mmap_threshold

    cfg = load(config_path)
    me = cfg.node(node_id)
    setup_logging(level)
    pin_mmap_threshold()
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
    args = build_parser().parse_args(
        _fix_negative_times(list(sys.argv[1:] if argv is None else argv))
    )
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # so a reader gone early shows here, not in the flush at exit
    except BrokenPipeError:
        return _reader_gone()
    except BaseExceptionGroup as eg:  # from inside a trio nursery
        if eg.split(BrokenPipeError)[1] is not None:
            raise
        return _reader_gone()
    return code


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command in CLIENT_COMMANDS:
            return cmd_client(args)
        if args.command == "run":
            return cmd_run(args.config, args.node, args.data_dir, args.log_level)
        if args.command == "local":
            from p2plog.local import run_local

            return run_local(args.config, args.data_dir)
        if args.command in ("certs", "token"):
            from p2plog.security import commands

            return commands.cmd_certs(args) if args.command == "certs" else commands.cmd_token(args)
        if args.command in ("backup", "restore"):
            from p2plog import backup_cli

            run = backup_cli.cmd_backup if args.command == "backup" else backup_cli.cmd_restore
            return run(args)
        if (args.dir / "manifest.json").exists() and not args.repair:
            from p2plog.backup_cli import cmd_verify_backup

            return cmd_verify_backup(args.dir, progress=not args.no_progress)
        return cmd_verify(args.dir, do_repair=args.repair, progress=not args.no_progress)
    except P2PLogError as e:
        print(f"p2plog {args.command}: {e}", file=sys.stderr)
        return 1


def _reader_gone() -> int:
    """stdout's reader closed the pipe (``| head``): that is the end it asked for, so exit 0,
    quietly. Per the Python docs (signal module, "Note on SIGPIPE"), stdout is pointed at
    devnull so the interpreter's last flush of what is still buffered cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return 0
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return 0
