"""Does taking snapshots grow a process's RSS? (issue 15: RSS rose with retention in
``bench_retention.py``; this reproduces it in one process, without a cluster.)

    python scripts/probe_snapshot_rss.py --passes 12

Applies batch entries of 1,000 ~200-byte records (a full 250,000-id dedup window, about 40,000
records held by the event-time buffer, as at 40,000 records/s), and every 100 entries does one
of: nothing, the applier's part of a snapshot encoded, or the whole snapshot encoded; each
with glibc's dynamic mmap threshold and with it pinned as a node pins it
(``p2plog.service.memory``). Each runs in a fresh child process; it prints VmRSS before and
after the passes. Bounded: a fixed
number of entries, no network, no disk.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import cbor2

from p2plog.order.reorder import ReorderBuffer
from p2plog.raft.types import Entry, Index, Term
from p2plog.record import TS_PREFIX
from p2plog.replica import snapshot
from p2plog.service.memory import pin_mmap_threshold
from p2plog.state.applier import Applier
from p2plog.state.entry import batch_data_of
from p2plog.state.event_feed import feed_applied

MODES = ("none", "applier", "full")


def rss_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def run(mode: str, passes: int, pin: bool) -> str:
    a = Applier(250_000, 3600 * 10**9)
    ev: ReorderBuffer[object] = ReorderBuffer(reorder_window_ms=1000, max_records=200_000)
    ev.discard_output = True
    state = {"base": 1, "ts": 10**18, "i": 0}

    def feed(n: int) -> None:
        for _ in range(n):
            state["i"] += 1
            state["ts"] += 25_000_000  # 40 entries (40,000 records) per second of ingest time
            ids = [os.urandom(16) for _ in range(1000)]
            body = TS_PREFIX.pack(state["ts"]) + cbor2.dumps({"msg": "x" * 150})
            data = batch_data_of(state["ts"], state["base"], ids, [body] * 1000)
            state["base"] += 1000
            e = Entry(Term(1), Index(state["i"]), data)
            feed_applied(ev, e, a.apply(e))  # type: ignore[arg-type]

    if pin:
        pin_mmap_threshold()
    feed(400)
    before = rss_mb()
    for _ in range(passes):
        feed(100)
        if mode == "full":
            snapshot.dumps(snapshot.capture(a, ev, 5))  # type: ignore[arg-type]
        elif mode == "applier":
            cbor2.dumps(a.export())
    how = "pinned" if pin else "dynamic"
    return (
        f"{mode:>8} ({how} mmap threshold): RSS {before} MB -> {rss_mb()} MB after {passes} passes"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--passes", type=int, default=12)
    p.add_argument("--mode", choices=MODES, help="(internal: run one mode here)")
    p.add_argument("--pin", action="store_true", help="(internal: pin the mmap threshold)")
    a = p.parse_args()
    if a.mode:
        print(run(a.mode, a.passes, a.pin))
        return 0
    for pin in ([], ["--pin"]):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--mode", mode, "--passes", str(a.passes), *pin]
            subprocess.run(cmd, check=True, timeout=600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
