"""``p2plog backup`` and ``p2plog restore`` (``storage.backup`` does the copying).

``backup --node ID DIR`` runs on the node's host while the node runs: it asks the node (over
the client port, with ``--token`` or ``$P2PLOG_TOKEN`` when tokens are on) for its applied
index and the record index at it, then copies the node's data directory up to there into DIR
with a progress bar. ``restore DIR --data-dir D`` checks the backup and seeds an empty data
directory from it: a replacement node, or every node of a new cluster (restore the same backup
into each). ``verify DIR`` checks a backup as well as a data directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from p2plog.progress_bar import terminal_bar
from p2plog.storage.backup import BackupError, backup, check_backup, restore
from p2plog.storage.verify import report_lines

ATTEMPTS = 3


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser("backup", help="copy a running node's log up to its applied index")
    b.add_argument("dir", type=Path, metavar="DIR", help="new directory to write the backup in")
    b.add_argument("--config", type=Path, default=Path("peers.toml"), help="peers.toml to use")
    b.add_argument("--node", help="the node to back up (default: self = ... in the file)")
    b.add_argument("--data-dir", type=Path, help="the node's data directory (default: config)")
    b.add_argument("--token", help="client token (default: $P2PLOG_TOKEN)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    r = sub.add_parser("restore", help="seed an empty data directory from a backup")
    r.add_argument("dir", type=Path, metavar="DIR", help="the backup")
    r.add_argument("--data-dir", type=Path, required=True, help="the new node's data directory")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_backup(args: argparse.Namespace) -> int:
    import trio

    from p2plog.client import commands
    from p2plog.config import load

    cfg = load(args.config)
    me = cfg.node(args.node)
    data_dir = args.data_dir or me.data_dir
    opts = commands.cli_options(args.token, str(cfg.tls.ca) if cfg.tls else None)
    address = f"wss://{me.address}" if cfg.tls else me.address
    for attempt in range(ATTEMPTS):
        st: dict[str, Any] = trio.run(commands.node_status, me.id, address, opts)
        if not st.get("reachable"):
            print(f"p2plog backup: node {me.id} at {address}: {st.get('error')}", file=sys.stderr)
            return 1
        meta = {"node": me.id, "cluster": cfg.cluster.name, "record_index": st["record_index"]}
        bar = terminal_bar("backup", wanted=not args.no_progress)
        try:
            m = backup(
                data_dir,
                args.dir,
                st["applied_index"],
                meta=meta,
                progress=bar.update if bar else None,
            )
        except BackupError as e:
            if "past the backup index" in str(e) and attempt + 1 < ATTEMPTS:
                continue  # the node compacted meanwhile: ask again
            print(f"p2plog backup: {e}", file=sys.stderr)
            return 1
        finally:
            if bar is not None:
                bar.close()
        size = sum(f["bytes"] for f in m["files"])
        print(
            f"{args.dir}: node {me.id}, Raft index {m['index']} (records up to "
            f"{m['record_index']}), {len(m['files'])} file(s), {size} bytes"
        )
        return 0
    return 1


def cmd_restore(args: argparse.Namespace) -> int:
    bar = terminal_bar("restore", wanted=not args.no_progress)
    try:
        m = restore(args.dir, args.data_dir, progress=bar.update if bar else None)
    except BackupError as e:
        print(f"p2plog restore: {e}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    print(
        f"{args.data_dir}: seeded from the backup of node {m.get('node', '?')} at Raft index "
        f"{m['index']}; start the node with this data_dir"
    )
    return 0


def cmd_verify_backup(directory: Path, *, progress: bool) -> int:
    """``p2plog verify`` of a backup: the manifest, every file's size and SHA-256, and the
    frames (``check_backup`` verifies the log once); printed as for a data directory."""
    bar = terminal_bar("verify", wanted=progress)
    try:
        m, rep = check_backup(directory, progress=bar.update if bar else None)
    except BackupError as e:
        print(f"{directory}: {e}")
        print("FAILED")
        return 1
    finally:
        if bar is not None:
            bar.close()
    print(f"{directory}: backup of node {m.get('node', '?')} at Raft index {m['index']}, files OK")
    for line in report_lines(rep):
        print(line)
    print("OK")
    return 0
