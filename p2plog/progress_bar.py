"""A progress bar on one terminal line, for the commands that read or copy a whole log
(``verify``, ``backup``, ``restore``); storage itself never writes to a terminal."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """``verify  41% 1.2/2.9 GB`` on one terminal line, redrawn at most once per percent."""

    def __init__(self, label: str, out: TextIO) -> None:
        self.label = label
        self.out = out
        self.shown = -1

    def update(self, done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        if pct != self.shown:
            self.shown = pct
            self.out.write(f"\r{self.label} {pct:3d}% {done / 1e9:.1f}/{total / 1e9:.1f} GB")
            self.out.flush()

    def close(self) -> None:
        if self.shown >= 0:
            self.out.write("\n")
            self.out.flush()


def terminal_bar(label: str, *, wanted: bool = True) -> ProgressBar | None:
    """A bar on stderr when asked for and stderr is a terminal."""
    if not wanted or not sys.stderr.isatty():
        return None
    return ProgressBar(label, sys.stderr)
