"""``python -m p2plog member list | add ID ADDRESS [--learner] | promote ID | remove ID``.

The request goes to the nodes of ``--addr``/``--config`` in order: a node that is not the
leader answers ``not_leader`` and the next one is tried, so any member's address will do as
long as the leader is among them. The command returns once the change committed (``add``
without ``--learner``: once the new node also caught up and was promoted). Needs a token with
the admin role when the cluster has tokens. Exit codes as the other client commands.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2plog.client.options import ClientOptions

LIST_TIMEOUT_S = 5.0
CHANGE_TIMEOUT_S = 30.0
ADD_TIMEOUT_S = 150.0  # above the node's wait for a new voter to catch up


def add_parser(
    common: Callable[[str, str], argparse.ArgumentParser], options: argparse.ArgumentParser
) -> None:
    """``common`` makes a client command's parser; ``options`` (the client options, as a
    parent) lets them come after the subcommand too."""
    m = common("member", "list, add, promote or remove cluster members (admin)")
    ops = m.add_subparsers(dest="op", required=True, metavar="OP")

    def op(name: str, help_text: str) -> argparse.ArgumentParser:
        o = ops.add_parser(name, help=help_text, parents=[options])
        o.add_argument("--json", action="store_true", help="one JSON object")
        return o

    op("list", "the members, their roles and how far behind they are")
    add = op("add", "add a node (a learner, promoted once it caught up)")
    add.add_argument("id", metavar="ID")
    add.add_argument("address", metavar="HOST:PORT", help="where the members reach it")
    add.add_argument("--learner", action="store_true", help="keep it a learner (no vote)")
    op("promote", "make a caught-up learner a voter").add_argument("id", metavar="ID")
    op("remove", "remove a member (the leader too)").add_argument("id", metavar="ID")


def request(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"op": args.op}
    if args.op != "list":
        fields["node"] = args.id
    if args.op == "add":
        fields["address"] = args.address
        fields["learner"] = bool(args.learner)
    return fields


async def member(
    addresses: Sequence[str],
    fields: dict[str, Any],
    *,
    as_json: bool,
    out: IO[str],
    options: ClientOptions,
) -> int:
    from p2plog.client.client import open_client

    op = fields["op"]
    timeout = {"list": LIST_TIMEOUT_S, "add": ADD_TIMEOUT_S}.get(op, CHANGE_TIMEOUT_S)
    opts = replace(options, request_timeout_s=timeout)
    async with open_client(list(addresses), opts) as client:
        reply = await client.call("member", fields, deadline_s=timeout + 10)
    if as_json:
        out.write(json.dumps(reply, default=str) + "\n")
        return 0
    if op != "list":
        node = fields["node"]
        what = "already so" if reply.get("already") else f"committed at index {reply.get('index')}"
        out.write(f"member {op} {node}: {what}\n")
    out.write(table(reply.get("members", [])))
    return 0


def table(rows: Sequence[dict[str, Any]]) -> str:
    from p2plog.client.commands import aligned

    cols = ("ID", "ROLE", "ADDRESS", "MATCH", "LAG", "ACTIVE")
    active = {True: "yes", False: "no"}
    return aligned(
        cols,
        [
            (
                str(r["id"]),
                r["role"] + (" (leader)" if r.get("leader") else ""),
                str(r.get("address") or "-"),
                str(r.get("match_index", "-")),
                str(r.get("lag", "-")),
                active.get(r["active"], "-") if "active" in r else "-",
            )
            for r in rows
        ],
    )
