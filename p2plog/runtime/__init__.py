"""Composition: the only package that wires Raft, storage, state and the network together."""
