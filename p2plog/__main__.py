"""``python -m p2plog``: the command line. Only the simulator runs at this stage; every other
command says so and exits non-zero rather than pretending to work."""

from __future__ import annotations

import sys
from collections.abc import Sequence

COMMANDS = ("run", "local", "send", "query", "tail", "status", "verify")

NOT_YET = """p2plog {cmd}: not available yet: this build has the Raft core and its simulator,
not the node runtime. What runs today:
  python -m p2plog.testing.sim --seed 1 --steps 200000   # one simulator seed
  python scripts/sim_soak.py --seeds 1000                 # many fresh seeds
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: python -m p2plog {{{'|'.join(COMMANDS)}}} ...")
        print(NOT_YET.format(cmd="").replace("p2plog : ", "p2plog: "), end="")  # no command
        return 0 if args else 2
    cmd = args[0]
    if cmd not in COMMANDS:
        print(
            f"p2plog: unknown command {cmd!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    print(NOT_YET.format(cmd=cmd), end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
