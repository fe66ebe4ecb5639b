"""Websocket transport (trio-websocket): peer links and the listener. Knows frames, not Raft."""
