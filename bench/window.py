"""What happened on the server during one foreground window, to explain the load's p99.

While the load runs, a thread samples `pg_stat_activity` every `interval` seconds: what
each active backend of the load waits on (`LWLock:WALWrite`, `Lock:tuple`,
`Lock:transactionid`, `IO:*`; `CPU` when active with no wait event) and whether a lock
wait is on a backfill session. Around the window it reads `pg_stat_wal` (bytes,
full-page images, write and sync time with `track_wal_io_timing`), the checkpoints, and
the CPU time of every server process from /proc (when the server runs on this machine),
grouped by what the process is.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field

import psycopg

__all__ = ["WindowReport", "WindowSampler"]

_ACTIVITY = """
SELECT coalesce(a.wait_event_type || ':' || a.wait_event, 'CPU') AS what,
       a.wait_event_type = 'Lock' AND EXISTS (
           SELECT 1 FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid))
           AND b.application_name LIKE 'backfill:%%') AS on_backfill
FROM pg_stat_activity a
WHERE a.application_name = %s AND a.state = 'active' AND a.pid <> pg_backend_pid()
"""
_PROCESSES = """
SELECT pid, CASE WHEN backend_type <> 'client backend' THEN backend_type
                 WHEN application_name = %s THEN 'load'
                 ELSE 'other client backends' END AS what
FROM pg_stat_activity
"""
_WAL = "SELECT wal_bytes::bigint, wal_fpi, wal_write_time, wal_sync_time FROM pg_stat_wal"


@dataclass
class WindowReport:
    """One window: wait-event samples of the load, WAL and checkpoints, CPU per process kind."""

    samples: int = 0
    waits: dict[str, int] = field(default_factory=dict)
    lock_waits_on_backfill: int = 0
    wal_bytes: int | None = None
    full_page_images: int | None = None
    wal_write_ms: float | None = None
    wal_sync_ms: float | None = None
    checkpoints: int | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def _ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks (None when it is not on this machine)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


class WindowSampler:
    """Use as a context manager around the load: `report` is filled when it exits."""

    def __init__(self, admin_url: str, application_name: str = "pgbench", interval: float = 0.05) -> None:
        self.admin_url = admin_url
        self.application_name = application_name
        self.interval = interval
        self.report = WindowReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._waits: Counter[str] = Counter()
        self._start: tuple[tuple[object, ...] | None, int | None, dict[int, tuple[str, int]]] = (None, None, {})
        self._seen: dict[int, tuple[str, int]] = {}  # the last ticks of every process seen in the window

    def _cpu(self, conn: psycopg.Connection) -> dict[int, tuple[str, int]]:
        """CPU ticks so far of every server process, by pid, with what it is."""
        cpu = {}
        for pid, what in conn.execute(_PROCESSES, (self.application_name,)):
            ticks = _ticks(pid)
            if ticks is not None:
                cpu[pid] = (what, ticks)
        return cpu

    def _counters(self, conn: psycopg.Connection) -> tuple[tuple[object, ...] | None, int | None,
                                                           dict[int, tuple[str, int]]]:
        wal = conn.execute(_WAL).fetchone() if conn.info.server_version >= 140000 else None
        view = ("SELECT num_timed + num_requested FROM pg_stat_checkpointer" if conn.info.server_version >= 170000
                else "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        checkpoints = int(conn.execute(view).fetchone()[0])  # type: ignore[index]
        return wal, checkpoints, self._cpu(conn)

    def __enter__(self) -> WindowSampler:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            self._start = self._counters(conn)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            wal, checkpoints, cpu = self._counters(conn)
        self._fill(wal, checkpoints, {**self._seen, **cpu})

    def _sample(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                if self.report.samples % 10 == 0:  # processes that come and go within the window
                    self._seen.update(self._cpu(conn))
                rows = conn.execute(_ACTIVITY, (self.application_name,)).fetchall()
                self.report.samples += 1
                for what, on_backfill in rows:
                    self._waits[what] += 1
                    self.report.lock_waits_on_backfill += int(bool(on_backfill))

    def _fill(self, wal: tuple[object, ...] | None, checkpoints: int | None,
              cpu: dict[int, tuple[str, int]]) -> None:
        start_wal, start_checkpoints, start_cpu = self._start
        report = self.report
        report.waits = dict(self._waits.most_common())
        if wal is not None and start_wal is not None:
            report.wal_bytes = int(wal[0]) - int(start_wal[0])  # type: ignore[call-overload]
            report.full_page_images = int(wal[1]) - int(start_wal[1])  # type: ignore[call-overload]
            report.wal_write_ms = round(float(wal[2]) - float(start_wal[2]), 1)  # type: ignore[arg-type]
            report.wal_sync_ms = round(float(wal[3]) - float(start_wal[3]), 1)  # type: ignore[arg-type]
        if checkpoints is not None and start_checkpoints is not None:
            report.checkpoints = checkpoints - start_checkpoints
        hz = os.sysconf("SC_CLK_TCK")
        spent: Counter[str] = Counter()
        for pid, (what, ticks) in cpu.items():
            before = start_cpu.get(pid, (what, 0))[1]
            spent[what] += (ticks - before) / hz
        report.cpu_seconds = {k: round(v, 2) for k, v in spent.most_common() if v > 0}
