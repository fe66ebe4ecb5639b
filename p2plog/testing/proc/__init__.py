"""The process harness: local clusters of real ``python -m p2plog run`` processes on 127.0.0.1
for ``tests/process`` and the scripts that start nodes; the client tests write their
``peers.toml`` with it too, and the benchmarks read /proc with it.

``peers`` writes the one ``peers.toml`` (and a secured cluster's secret, tokens, certificates);
``cluster`` starts, signals, reaps and stops node processes and reads their logs; ``usage``
reads what processes and the machine used from /proc. Ports come from ``p2plog.testing.ports``.
"""

from p2plog.testing.proc.cluster import NodeProc, ProcCluster
from p2plog.testing.proc.peers import (
    Credentials,
    NodeEntry,
    Secured,
    Security,
    local_nodes,
    make_security,
    peers_toml,
    section,
    write_peers_toml,
)
from p2plog.testing.proc.usage import (
    all_procs_cpu_s,
    evict_page_cache,
    other_cpu,
    proc_cpu_s,
    proc_mem_kib,
    proc_read_bytes,
    system_busy_s,
)

__all__ = [
    "Credentials",
    "NodeEntry",
    "NodeProc",
    "ProcCluster",
    "Secured",
    "Security",
    "all_procs_cpu_s",
    "evict_page_cache",
    "local_nodes",
    "make_security",
    "other_cpu",
    "peers_toml",
    "proc_cpu_s",
    "proc_mem_kib",
    "proc_read_bytes",
    "section",
    "system_busy_s",
    "write_peers_toml",
]
