"""``LogHandler``: ship Python ``logging`` records to p2plog without ever blocking the app.

``emit`` turns the LogRecord into a p2plog record and appends it to a bounded in-memory
``Spool`` (a lock held for a deque append; no I/O). A background thread takes batches from the
spool and submits them through a ``SyncClient`` (same ids on every retry, so nothing is stored
twice). When the cluster is unreachable the batch goes back to the spool; when the spool is
full the oldest records are dropped and counted. At most once per ``report_interval_s`` the
thread tells stderr what is going wrong, e.g.::

    p2plog.LogHandler: dropped 120 records (spool full); cluster unreachable since 12:00:03: ...

Records from p2plog's own loggers and from the sender's threads are not shipped (that would
feed the handler its own complaints).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from p2plog.client.errors import ClientError, RecordsRejected, SubmitError
from p2plog.client.options import ClientOptions
from p2plog.client.spool import Rec, Spool, now_hms
from p2plog.client.sync import SyncClient
from p2plog.config import Config
from p2plog.record import MAX_FIELDS

MAX_MSG_CHARS = 60_000  # under the node's 64 KiB record limit, with room for fields
SKIP_LOGGERS = ("p2plog", "trio-websocket", "trio_websocket")
# Attributes every LogRecord has; anything else came from ``extra=``.
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def level_name(levelno: int) -> str:
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    if levelno < logging.ERROR:
        return "warning"
    if levelno < logging.CRITICAL:
        return "error"
    return "critical"


def _flat(v: Any) -> str | int | float | bool:
    if isinstance(v, bool | float | str):
        return v
    if isinstance(v, int) and -(1 << 63) <= v < (1 << 63):
        return v
    return repr(v)


class LogHandler(logging.Handler):
    def __init__(
        self,
        nodes: str | Path | Config | Sequence[str],
        *,
        level: int = logging.NOTSET,
        ack: str = "quorum",
        max_spool: int = 10_000,
        spool_file: str | Path | None = None,
        max_spool_file_bytes: int = 64 << 20,
        batch_records: int = 1000,
        report_interval_s: float = 30.0,
        flush_timeout_s: float = 5.0,
        options: ClientOptions | None = None,
        token: str | None = None,
    ) -> None:
        """``token``: a token with the write role (else ``options.token``, else
        ``P2PLOG_TOKEN``)."""
        super().__init__(level)
        self.ack = ack
        self.batch_records = batch_records
        self.report_interval_s = report_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.options = options or ClientOptions(submit_deadline_s=10.0, connect_timeout_s=2.0)
        if token is not None:
            self.options = replace(self.options, token=token)
        self.spool = Spool(
            max_spool, Path(spool_file) if spool_file else None, max_spool_file_bytes
        )
        self.sent = 0
        self.rejected = 0
        self._stopping = threading.Event()
        self._unreachable_since: float | None = None
        self._reason = ""
        self._rejected_reason = ""
        self._rejected_since_report = 0
        self._last_report = 0.0
        self._announced_down = False
        self._client = SyncClient(nodes, self.options, lazy=True, thread_name="p2plog-sender-loop")
        self._quiet_threads = {self._client.thread.ident}
        self._thread = threading.Thread(target=self._run, name="p2plog-sender", daemon=True)
        self._thread.start()
        self._quiet_threads.add(self._thread.ident)

    # ------------------------------------------------------------------- emit

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(SKIP_LOGGERS) or threading.get_ident() in self._quiet_threads:
            return
        try:
            self.spool.put_nowait(self.to_record(record))
        except RecursionError:
            raise
        except Exception:  # logging's contract: report through handleError, never raise
            self.handleError(record)

    def to_record(self, record: logging.LogRecord) -> Rec:
        msg = self.format(record)
        if len(msg) > MAX_MSG_CHARS:
            msg = msg[:MAX_MSG_CHARS] + f"... [truncated {len(msg) - MAX_MSG_CHARS} chars]"
        fields: dict[str, Any] = {}
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and not k.startswith("_") and len(fields) < MAX_FIELDS - 8:
                fields[k] = _flat(v)
        fields.update(
            logger=record.name,
            module=record.module,
            lineno=record.lineno,
            process=record.process or 0,
            thread=record.threadName or "",
        )
        return {
            "id": str(uuid.uuid4()),
            "ts": int(record.created * 1e9),
            "level": level_name(record.levelno),
            "source": record.name,
            "msg": msg,
            "fields": fields,
        }

    # ------------------------------------------------------------- the sender

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self.spool.take(self.batch_records, timeout_s=0.5)
            if batch:
                self._send(batch)
            self._maybe_report()

    def _send(self, batch: list[Rec]) -> None:
        self.spool.persist(batch)
        try:
            self._client.submit(batch, self.ack)
        except RecordsRejected as e:
            # Invalid records cannot get better by retrying: count them, keep the rest.
            self.rejected += len(e.errors)
            self._rejected_since_report += len(e.errors)
            self._rejected_reason = e.errors[0].error if e.errors else str(e)
            self.sent += sum(a is not None for a in e.acks)
            self.spool.done(batch)
            self._reachable()
        except ClientError as e:
            self.spool.give_back(batch)
            if self._unreachable_since is None:
                self._unreachable_since = time.time()
            self._reason = e.reason if isinstance(e, SubmitError) else str(e)
            self._stopping.wait(min(1.0, self.report_interval_s))
        else:
            self.sent += len(batch)
            self.spool.done(batch)
            self._reachable()

    def _reachable(self) -> None:
        if self._unreachable_since is not None and self._announced_down:
            self._write(f"cluster reachable again; {self.sent} records sent so far")
        self._unreachable_since = None
        self._announced_down = False

    def _maybe_report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self.report_interval_s:
            return
        dropped, file_full = self.spool.take_counters()
        parts = []
        if dropped:
            parts.append(f"dropped {dropped} records (spool full)")
        if file_full:
            parts.append(f"{file_full} records not written to the spool file (file full)")
        if self.spool.file_error:
            parts.append(f"spool file unusable: {self.spool.file_error}")
        if self._rejected_since_report:
            parts.append(
                f"{self._rejected_since_report} records refused by the cluster: "
                f"{self._rejected_reason}"
            )
            self._rejected_since_report = 0
        if self._unreachable_since is not None:
            since = time.strftime("%H:%M:%S", time.localtime(self._unreachable_since))
            parts.append(f"cluster unreachable since {since}: {self._reason}")
            self._announced_down = True
        if parts:
            self._write("; ".join(parts))
            self._last_report = now

    def _write(self, line: str) -> None:
        try:
            sys.stderr.write(f"p2plog.LogHandler: {line} (at {now_hms()})\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr closed: nothing left to tell

    # ------------------------------------------------------- flush and close

    def flush(self) -> None:
        """Wait, at most ``flush_timeout_s``, until every spooled record is acked."""
        if self._thread.is_alive():
            self.spool.wake()
            self.spool.wait_empty(self.flush_timeout_s)

    def close(self) -> None:
        """Flush (bounded), stop the sender, report what is left; records still spooled are
        kept in the spool file (if any) for the next start."""
        if not self._stopping.is_set():
            self.flush()
            self._stopping.set()
            self.spool.wake()
            self._client.close()
            self._thread.join(self.flush_timeout_s)
            left = self.spool.pending()
            self.spool.persist(left)
            self._maybe_report(force=True)
            if left:
                where = f"kept in {self.spool.path}" if self.spool.path else "lost"
                self._write(f"closing with {len(left)} records not sent ({where})")
        super().close()
