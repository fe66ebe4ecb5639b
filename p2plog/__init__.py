"""p2plog: a fault-tolerant, time-synchronized, consistent distributed log."""

__version__ = "0.1.0"
