"""Plain readings of database health, taken from the primary (IO only, no decisions).

- replication: every standby's lag in seconds and bytes (`pg_stat_replication`);
- locks: per table, sessions waiting on a lock of it, the longest wait, and how many of
  them are blocked by a backfill session (`pg_blocking_pids`);
- vacuum: tables being vacuumed right now (`pg_stat_progress_vacuum`), and whether to
  prevent transaction ID wraparound (the autovacuum's query in `pg_stat_activity`).

Reading these needs `pg_monitor` (or superuser) to see other sessions. The decisions
taken from them live in `backfills.signals`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import sqlalchemy as sa

__all__ = ["ReplicaReading", "LockReading", "VacuumReading", "HealthReadings", "read_health", "read_replication",
           "read_locks", "read_vacuum"]


@dataclass(frozen=True)
class ReplicaReading:
    """One standby as the primary sees it."""

    name: str
    lag_seconds: float | None
    lag_bytes: int | None


@dataclass(frozen=True)
class LockReading:
    """Lock waits on one table."""

    table: str
    waiters: int
    max_wait_seconds: float
    blocked_by_backfill: int


@dataclass(frozen=True)
class VacuumReading:
    """A vacuum processing one table right now."""

    table: str
    wraparound: bool  # an autovacuum to prevent transaction ID wraparound


@dataclass(frozen=True)
class HealthReadings:
    """Everything the signals need, read in one go. A None field is a failed reading."""

    replicas: tuple[ReplicaReading, ...] | None
    locks: tuple[LockReading, ...] | None
    vacuuming: tuple[VacuumReading, ...] | None
    at: float

    def to_json(self) -> dict[str, object]:
        """JSON-friendly form (shared between workers through Redis)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> HealthReadings:
        """Inverse of `to_json`."""
        replicas = cast("list[dict[str, Any]] | None", data.get("replicas"))
        locks = cast("list[dict[str, Any]] | None", data.get("locks"))
        vacuuming = cast("list[dict[str, Any] | str] | None", data.get("vacuuming"))
        return cls(
            tuple(ReplicaReading(**r) for r in replicas) if replicas is not None else None,
            tuple(LockReading(**r) for r in locks) if locks is not None else None,
            tuple(_vacuum_reading(v) for v in vacuuming) if vacuuming is not None else None,
            float(cast("float", data["at"])),
        )


def _vacuum_reading(value: dict[str, Any] | str) -> VacuumReading:
    """A vacuum reading from JSON; a bare table name is how workers before `wraparound`
    shared it (an ordinary vacuum, as far as they knew)."""
    return VacuumReading(value, False) if isinstance(value, str) else VacuumReading(**value)


_REPLICATION = """
SELECT coalesce(nullif(application_name, ''), client_addr::text, pid::text) AS name,
       extract(epoch FROM greatest(write_lag, flush_lag, replay_lag)) AS lag_seconds,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes
FROM pg_stat_replication ORDER BY 1
"""

_LOCKS = """
WITH targets AS (SELECT unnest(CAST(:tables AS text[])) AS name),
waiting AS (
    SELECT DISTINCT t.name AS table_name, a.pid, l.waitstart,
           EXISTS (SELECT 1 FROM unnest(pg_blocking_pids(a.pid)) AS b(pid)
                   JOIN pg_stat_activity ba ON ba.pid = b.pid
                   WHERE ba.application_name LIKE 'backfill:%') AS by_backfill
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    JOIN targets t ON l.relation = to_regclass(t.name)
       OR (l.locktype IN ('transactionid', 'tuple') AND EXISTS (
              SELECT 1 FROM pg_locks h WHERE h.granted AND h.relation = to_regclass(t.name)
              AND h.pid = ANY (pg_blocking_pids(a.pid))))
    WHERE NOT l.granted
)
SELECT t.name AS table_name, count(w.pid) AS waiters,
       coalesce(extract(epoch FROM max(now() - w.waitstart)), 0) AS max_wait_seconds,
       count(w.pid) FILTER (WHERE w.by_backfill) AS blocked_by_backfill
FROM targets t LEFT JOIN waiting w ON w.table_name = t.name GROUP BY t.name ORDER BY t.name
"""

_VACUUM = """
SELECT c.relname AS table_name, bool_or(coalesce(a.query LIKE '%(to prevent wraparound)%', false)) AS wraparound
FROM pg_stat_progress_vacuum p JOIN pg_class c ON c.oid = p.relid
LEFT JOIN pg_stat_activity a ON a.pid = p.pid
WHERE c.relname = ANY (CAST(:tables AS text[]))
GROUP BY c.relname ORDER BY c.relname
"""


def read_replication(conn: sa.Connection) -> tuple[ReplicaReading, ...]:
    """Every standby streaming from this primary."""
    rows = conn.execute(sa.text(_REPLICATION)).all()
    return tuple(ReplicaReading(r.name, float(r.lag_seconds) if r.lag_seconds is not None else None,
                                int(r.lag_bytes) if r.lag_bytes is not None else None) for r in rows)


def read_locks(conn: sa.Connection, tables: Sequence[str]) -> tuple[LockReading, ...]:
    """Lock waits on each of `tables` (row-lock waits included, through who blocks them)."""
    rows = conn.execute(sa.text(_LOCKS), {"tables": list(tables)}).all()
    return tuple(LockReading(r.table_name, int(r.waiters), float(r.max_wait_seconds), int(r.blocked_by_backfill))
                 for r in rows)


def read_vacuum(conn: sa.Connection, tables: Sequence[str]) -> tuple[VacuumReading, ...]:
    """Which of `tables` a (auto)vacuum is processing right now, and whether to prevent
    wraparound."""
    return tuple(VacuumReading(r.table_name, bool(r.wraparound))
                 for r in conn.execute(sa.text(_VACUUM), {"tables": list(tables)}))


def _attempt(conn: sa.Connection, read, *args):  # type: ignore[no-untyped-def]
    """One reading inside a savepoint: a failure yields None and spoils nothing else."""
    try:
        with conn.begin_nested():
            return read(conn, *args)
    except sa.exc.DBAPIError:
        return None


def read_health(engine: sa.Engine, tables: Sequence[str], at: float, timeout_ms: int = 1000) -> HealthReadings:
    """All readings, each under a short statement_timeout; a failed one is None ("unknown")."""
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT set_config('statement_timeout', :t, true), "
                                 "set_config('application_name', 'backfill-health', true)"), {"t": f"{timeout_ms}ms"})
            return HealthReadings(_attempt(conn, read_replication), _attempt(conn, read_locks, tables),
                                  _attempt(conn, read_vacuum, tables), at)
    except sa.exc.DBAPIError:
        return HealthReadings(None, None, None, at)
