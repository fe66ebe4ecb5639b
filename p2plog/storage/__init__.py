"""Durable storage of the Raft log and hard state."""
