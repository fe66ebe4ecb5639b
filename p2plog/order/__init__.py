"""Event-time order: a pure function of the committed log (ARCHITECTURE §1.5, §3.6)."""

from p2plog.order.reorder import Emitted, ReorderBuffer

__all__ = ["Emitted", "ReorderBuffer"]
