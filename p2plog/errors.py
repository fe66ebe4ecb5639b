"""The P2PLogError tree. Operating errors carry a message that names what went wrong and what
to do about it; programmer errors are ``assert``s and never appear here."""

from __future__ import annotations


class P2PLogError(Exception):
    """Base of every error p2plog raises on purpose."""


class ConfigError(P2PLogError):
    """peers.toml or a command-line option is wrong; the message names the key and the fix."""


class StorageError(P2PLogError):
    """Base of the errors of the durable log."""


class DiskFull(StorageError):
    """The volume is full (ENOSPC) or the configured disk budget is reached. Nothing of the
    failed batch is on disk; appends may be retried once space returns (reads keep working)."""


class Corruption(StorageError):
    """The log holds damage that recovery must not guess about (mid-log bad frame, short sealed
    segment, broken continuity). ``path`` and ``offset`` locate it."""

    def __init__(self, message: str, *, path: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class StorageFailed(StorageError):
    """A write or fsync failed with an I/O error. The kernel may have dropped the dirty pages,
    so retrying the fsync could report success for data that is gone (the 2018 'fsyncgate'
    lesson): the store refuses every later write and the node must be restarted."""


class MemberError(P2PLogError):
    """A ``member`` command the node cannot carry out; ``code`` is the client error code
    (``not_leader``, ``refused``, ``timeout``, ``overloaded``), the message says what to do."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
