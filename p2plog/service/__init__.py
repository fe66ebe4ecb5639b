"""Serving clients: one session per ``/client`` websocket, its reads, submits and status views,
and the process that serves them (``main``: a node built whole, ``make_node``).

Sessions talk to their node only through ``api.NodeApi`` (never to the Raft loop, the storage
or the peer links). The node sits below: ``runtime`` never imports this package, which plugs
its sessions into the node's listener (held by ``tests/test_layering.py``)."""
