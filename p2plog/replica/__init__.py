"""The replica as one sans-I/O state machine (``replica.Replica``): Raft plus intake, acks,
dedup and the event-time stream. Pure: no trio, sockets, clock or disk."""
