"""Why a run is throttled: the names `status` and `backfill_throttled{reason}` show."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["GUARD_REASONS", "HEALTH_REASONS", "RETRY_REASONS", "ThrottleReason"]


class ThrottleReason(StrEnum):
    """A throttle reason (its value is the name SPEC and the metrics give it)."""

    REPLICATION_LAG = "replication_lag"
    REPLICATION_LAG_UNKNOWN = "replication_lag_unknown"
    LOCK_CONTENTION = "lock_contention"
    LOCK_WAITERS = "lock_waiters"
    LOCK_CONTENTION_UNKNOWN = "lock_contention_unknown"
    AUTOVACUUM = "autovacuum"
    VACUUM_UNKNOWN = "vacuum_unknown"
    RATE_LIMIT = "rate_limit"
    LOCK_TIMEOUT = "lock_timeout"
    STATEMENT_TIMEOUT = "statement_timeout"
    DATABASE_UNAVAILABLE = "database_unavailable"
    FOREGROUND_LATENCY = "foreground_latency"
    FOREGROUND_LATENCY_UNKNOWN = "foreground_latency_unknown"


HEALTH_REASONS: frozenset[ThrottleReason] = frozenset({
    ThrottleReason.REPLICATION_LAG, ThrottleReason.REPLICATION_LAG_UNKNOWN, ThrottleReason.LOCK_CONTENTION,
    ThrottleReason.LOCK_WAITERS, ThrottleReason.LOCK_CONTENTION_UNKNOWN, ThrottleReason.AUTOVACUUM,
    ThrottleReason.VACUUM_UNKNOWN,
})
"""Database health readings (the throttle hook sets and clears these)."""

RETRY_REASONS: frozenset[ThrottleReason] = frozenset({
    ThrottleReason.LOCK_TIMEOUT, ThrottleReason.STATEMENT_TIMEOUT, ThrottleReason.DATABASE_UNAVAILABLE,
})
"""Batch failures that are retried (cleared by the next batch that succeeds)."""

GUARD_REASONS: frozenset[ThrottleReason] = frozenset({
    ThrottleReason.FOREGROUND_LATENCY, ThrottleReason.FOREGROUND_LATENCY_UNKNOWN,
})
"""The foreground guard's (it sets and clears these)."""
