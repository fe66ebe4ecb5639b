"""The log's contents, pure: the entry format (``entry``, ``stored``), the replicated state
machine (``applier``, ``dedup``), the event-time feed and the scans. Every function here is a
function of the committed log, so it gives the same answer on every node."""
