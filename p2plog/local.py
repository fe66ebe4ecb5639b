"""``python -m p2plog local``: every node of a peers.toml as a child process on this host.

Prints the endpoints and how to send and tail; Ctrl-C (or SIGTERM) stops every node cleanly
(each gets SIGTERM and finishes its fsync) and waits for them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from p2plog.config import load

STOP_TIMEOUT_S = 15.0


def run_local(config_path: Path, data_root: Path | None) -> int:
    cfg = load(config_path)
    secret = cfg.security.secret_file
    if secret is not None and not secret.exists():
        # This host runs every node, so the cluster secret can be made here, once.
        from p2plog.security.certs import new_secret, write_new

        write_new(secret, new_secret(), private=True)
        print(f"p2plog local: made the cluster secret {secret} (peers prove they hold it)")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for n in cfg.nodes:
        cmd = [sys.executable, "-m", "p2plog", "run", "--config", str(config_path), "--node", n.id]
        if data_root is not None:
            cmd += ["--data-dir", str(data_root / n.id)]
        procs[n.id] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    print(f"p2plog local: cluster {cfg.cluster.name!r}, {len(procs)} nodes")
    for n in cfg.nodes:
        data = data_root / n.id if data_root else n.data_dir
        scheme = "wss" if cfg.tls is not None else "ws"
        http = f"  console http://{n.http[0]}:{n.http[1]}/" if n.http else ""
        print(f"  {n.id}  {scheme}://{n.address}/client  data {data}{http}")
    c = f" --config {config_path}" if str(config_path) != "peers.toml" else ""
    print("try, in another shell:")
    print(f"  python -m p2plog send{c} 'hello from p2plog'")
    print(f"  python -m p2plog tail{c}")
    print(f"  python -m p2plog query{c} --limit 10")
    print(f"  python -m p2plog status{c}")
    print("Ctrl-C stops the cluster.", flush=True)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping and any(p.poll() is None for p in procs.values()):
            time.sleep(0.2)
            for nid, p in procs.items():
                if p.returncode not in (None, 0):
                    print(f"p2plog local: node {nid} exited with code {p.returncode}", flush=True)
                    p.returncode = 0  # report once
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for nid, p in procs.items():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"p2plog local: node {nid} did not stop in time; killing it", flush=True)
                p.kill()
                p.wait()
    print("p2plog local: stopped")
    return 0
