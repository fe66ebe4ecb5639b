"""Deterministic testing tools that ship with p2plog (like ``trio.testing``).

``sim`` runs the sans-I/O Raft core in a seeded simulated world with faults and checks the
Raft safety properties after every step; ``cluster`` is a small hand-driven cluster for
scenario tests; ``proc`` is the process harness (real node processes on 127.0.0.1, the one
``peers.toml`` writer, /proc readers) of the multi-process tests and the benchmark scripts.
"""
