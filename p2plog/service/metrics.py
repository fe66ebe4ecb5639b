"""``/metrics``: the node in Prometheus' text format, with ``prometheus-client``.

Read at scrape time from the node's status and latency histograms (a custom collector: nothing
is updated on the write path for it but the two histograms the runtime keeps anyway). Names
follow Prometheus' conventions: a ``p2plog_`` prefix, base units (seconds, bytes), ``_total``
for counters, a ``_info``-style 1 for the current role. One registry per node, so the nodes a
test runs in one process do not mix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from p2plog.latency import Histogram
from p2plog.service.api import NodeApi
from p2plog.service.ingest import IngestGate, IngestStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROLES = ("follower", "pre_candidate", "candidate", "leader")


def registry_for(node: NodeApi, ingest: tuple[IngestStats, IngestGate]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(node))
    reg.register(IngestCollector(*ingest))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    g = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    g.add_metric(list((labels or {}).values()), value)
    return g


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, h: Histogram) -> Metric:
    buckets = [("+Inf" if b == float("inf") else repr(b), float(n)) for b, n in h.buckets()]
    fam = HistogramMetricFamily(name, doc)
    fam.add_metric([], buckets, h.sum)
    return fam


class NodeCollector(Collector):
    def __init__(self, node: NodeApi) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        st = self.node.status()
        yield from _raft(st)
        yield from _peers(st)
        yield from _records(st, self.node)
        yield from _time(st)
        yield from _storage(st)
        hs = self.node.histograms()
        yield _histogram(
            "p2plog_storage_fsync_duration_seconds", "an append's write and fdatasync", hs["fsync"]
        )
        yield _histogram(
            "p2plog_raft_commit_duration_seconds",
            "as leader: an appended entry's time until it committed",
            hs["commit"],
        )


def _raft(st: dict[str, Any]) -> Iterator[Metric]:
    role = GaugeMetricFamily("p2plog_raft_role", "1 for this node's current role", labels=["role"])
    for r in ROLES:
        role.add_metric([r], 1.0 if st["role"] == r else 0.0)
    yield role
    yield _gauge("p2plog_raft_term", "current Raft term", st["term"])
    yield _gauge(
        "p2plog_raft_has_leader", "1 if this node knows a leader", st["leader"] is not None
    )
    yield _gauge(
        "p2plog_raft_commit_index", "highest Raft index known committed", st["commit_index"]
    )
    yield _gauge("p2plog_raft_applied_index", "highest Raft index applied", st["applied_index"])
    yield _gauge("p2plog_raft_last_index", "last Raft index in this node's log", st["last_index"])
    yield _counter(
        "p2plog_raft_leader_changes", "times this node saw a new leader", st["leader_changes"]
    )
    members = st["members"]
    yield _gauge(
        "p2plog_raft_voters", "voters in the configuration in force", len(members["voters"])
    )
    yield _gauge(
        "p2plog_raft_learners", "learners in the configuration in force", len(members["learners"])
    )


def _peers(st: dict[str, Any]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "p2plog_peer_link_up", "1 if the link to the peer is up", labels=["peer"]
    )
    lag = GaugeMetricFamily(
        "p2plog_peer_match_lag_entries",
        "as leader: entries the peer has not acknowledged",
        labels=["peer"],
    )
    dropped = CounterMetricFamily(
        "p2plog_peer_dropped_frames", "frames dropped toward the peer (queue full)", labels=["peer"]
    )
    for pid, p in sorted(st["peers"].items()):
        up.add_metric([pid], 1.0 if p["connected"] else 0.0)
        if p["lag"] is not None:
            lag.add_metric([pid], p["lag"])
        dropped.add_metric([pid], p["dropped_frames"])
    yield from (up, lag, dropped)


def _records(st: dict[str, Any], node: NodeApi) -> Iterator[Metric]:
    yield _counter(
        "p2plog_records_stored", "records applied (duplicates not counted)", st["records"]
    )
    yield _counter(
        "p2plog_log_written_bytes", "bytes this node wrote to its log", st["bytes_written"]
    )
    yield _counter(
        "p2plog_dedup_hits", "retries of committed ids answered at intake", st["dedup_hits"]
    )
    yield _counter(
        "p2plog_dedup_applied_duplicates",
        "records the log holds twice, dropped at apply",
        st["record_index"] - st["records"],
    )
    rej = CounterMetricFamily(
        "p2plog_requests_rejected", "client requests refused, by error code", labels=["reason"]
    )
    for code, n in sorted(node.rejected.items()):
        rej.add_metric([code], n)
    conns = st.get("connections") or {}
    rej.add_metric(["connection_refused"], conns.get("refused", 0))
    yield rej
    yield _gauge("p2plog_inflight_records", "records waiting for their ack", st["inflight_records"])
    yield _gauge(
        "p2plog_tail_subscribers", "client tails following this node", st["tail_subscribers"]
    )
    yield _gauge(
        "p2plog_client_connections",
        "client websocket connections open",
        conns.get("client_connections", 0) + conns.get("anonymous_connections", 0),
    )


def _time(st: dict[str, Any]) -> Iterator[Metric]:
    ro, clock = st["reorder"], st["clock"]
    yield _gauge("p2plog_reorder_buffer_records", "records held for event-time order", ro["depth"])
    yield _gauge("p2plog_reorder_buffer_bytes", "bytes held for event-time order", ro["bytes"])
    yield _counter("p2plog_reorder_late_records", "records emitted late", ro["late"])
    yield _counter("p2plog_reorder_early_records", "records flagged early", ro["early"])
    yield _counter(
        "p2plog_reorder_absurd_records", "records with an absurd event time", ro["absurd"]
    )
    if ro.get("watermark_lag_ms") is not None:
        yield _gauge(
            "p2plog_reorder_watermark_lag_seconds",
            "how far the event-time watermark is behind now",
            ro["watermark_lag_ms"] / 1000,
        )
    off = GaugeMetricFamily(
        "p2plog_clock_offset_seconds", "this clock's offset to a reference", labels=["to"]
    )
    off.add_metric(["ntp"], clock.get("offset_ms", 0.0) / 1000)
    off.add_metric(["majority"], clock.get("offset_to_majority_ms", 0.0) / 1000)
    yield off
    yield _gauge(
        "p2plog_clock_uncertain",
        "1 while the clock is off from its peers' by too much",
        1.0 if clock.get("clock_uncertain") else 0.0,
    )


def _storage(st: dict[str, Any]) -> Iterator[Metric]:
    yield _gauge("p2plog_disk_log_bytes", "bytes of this node's log on disk", st["log_bytes"])
    yield _gauge(
        "p2plog_disk_budget_bytes", "configured disk budget (0: none)", st["disk_budget_bytes"]
    )
    yield _gauge("p2plog_disk_full", "1 while writes wait for disk space", bool(st["disk_full"]))
    yield _gauge(
        "p2plog_storage_failed",
        "1 once the store refused writes after an I/O error",
        st["storage_failed"] is not None,
    )
    yield _counter("p2plog_storage_fsyncs", "fsync calls on the log", st["fsyncs"])


class IngestCollector(Collector):
    """The OTLP and Loki pushes (``service.push_http``)."""

    def __init__(self, stats: IngestStats, gate: IngestGate) -> None:
        self.stats, self.gate = stats, gate

    def collect(self) -> Iterator[Metric]:
        req = CounterMetricFamily(
            "p2plog_ingest_requests", "pushes answered", labels=["protocol", "code"]
        )
        for (protocol, code), n in sorted(self.stats.requests.items()):
            req.add_metric([protocol, str(code)], n)
        yield req
        rec = CounterMetricFamily(
            "p2plog_ingest_records",
            "pushed records: stored (acked, or a retry's duplicate) or rejected (never taken)",
            labels=["protocol", "outcome"],
        )
        for (protocol, outcome), n in sorted(self.stats.records.items()):
            rec.add_metric([protocol, outcome], n)
        yield rec
        yield _gauge(
            "p2plog_ingest_inflight_bytes",
            "bytes of pushes being decoded or stored",
            self.gate.bytes,
        )
        yield _counter(
            "p2plog_ingest_busy_refusals",
            "pushes refused 429 for the ingest bound",
            self.gate.refused,
        )
