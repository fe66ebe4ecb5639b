"""Deterministic testing tools that ship with p2plog (like ``trio.testing``).

``sim`` runs the sans-I/O Raft core in a seeded simulated world with faults and checks the
Raft safety properties after every step; ``cluster`` is a small hand-driven cluster for
scenario tests.
"""
