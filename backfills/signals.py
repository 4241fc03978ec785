"""Health signals: pure functions from plain readings to a decision. No IO.

Each signal says `continue`, `slow` (smaller batches, a pause between them) or `pause`
(wait before the next batch until the reading recovers), with a reason that `status`
shows. A reading that failed is "unknown", and unknown means pause: a backfill never
runs blind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from backfills.health import HealthReadings, LockReading, ReplicaReading, VacuumReading
from backfills.reasons import ThrottleReason

__all__ = ["Action", "Decision", "CONTINUE", "replication_signal", "lock_signal", "vacuum_signal", "combine",
           "decide"]


class Action(IntEnum):
    """Ordered by severity: the most severe decision wins."""

    CONTINUE = 0
    SLOW = 1
    PAUSE = 2


@dataclass(frozen=True)
class Decision:
    """What to do before the next batch."""

    action: Action
    reason: ThrottleReason | None = None
    batch_factor: float = 1.0     # multiply the batch size by this
    sleep_seconds: float = 0.0    # extra wait before the next batch


CONTINUE = Decision(Action.CONTINUE)


def replication_signal(replicas: Sequence[ReplicaReading] | None, max_lag_seconds: float,
                       paused_for_lag: bool) -> Decision:
    """Pause above `max_lag_seconds` on any standby; once paused, resume only below half
    of it (hysteresis, so the run does not flap at the threshold)."""
    if replicas is None:
        return Decision(Action.PAUSE, ThrottleReason.REPLICATION_LAG_UNKNOWN)
    worst = max((r.lag_seconds or 0.0 for r in replicas), default=0.0)
    if worst > max_lag_seconds or (paused_for_lag and worst >= max_lag_seconds / 2):
        return Decision(Action.PAUSE, ThrottleReason.REPLICATION_LAG, sleep_seconds=1.0)
    return CONTINUE


def lock_signal(locks: Sequence[LockReading] | None, table: str) -> Decision:
    """Sessions waiting on a lock of the target table: back off. Blocked by a backfill
    session: halve the batch and wait a little, so the application gets its locks."""
    if locks is None:
        return Decision(Action.PAUSE, ThrottleReason.LOCK_CONTENTION_UNKNOWN)
    reading = next((r for r in locks if r.table == table), None)
    if reading is None or reading.waiters == 0:
        return CONTINUE
    if reading.blocked_by_backfill:
        return Decision(Action.SLOW, ThrottleReason.LOCK_CONTENTION, batch_factor=0.5,
                        sleep_seconds=min(2.0, 0.2 + reading.max_wait_seconds))
    return Decision(Action.SLOW, ThrottleReason.LOCK_WAITERS, batch_factor=0.75, sleep_seconds=0.2)


def vacuum_signal(vacuuming: Sequence[VacuumReading] | None, table: str) -> Decision:
    """An autovacuum to prevent wraparound on the target table: slow down and let it
    finish (it cannot be cancelled, and the database needs it done). An ordinary vacuum
    works beside the run: it makes room for the run's new row versions, and waiting for
    it was the largest cost of a large run (README, "Benchmarks")."""
    if vacuuming is None:
        return Decision(Action.PAUSE, ThrottleReason.VACUUM_UNKNOWN)
    if any(v.table == table and v.wraparound for v in vacuuming):
        return Decision(Action.SLOW, ThrottleReason.AUTOVACUUM, sleep_seconds=0.5)
    return CONTINUE


def combine(decisions: Iterable[Decision]) -> Decision:
    """The most severe decision; among equals the first; factors multiply, sleeps add up."""
    chosen = CONTINUE
    factor, sleep = 1.0, 0.0
    decisions_seen = list(decisions)
    for decision in decisions_seen:
        factor *= decision.batch_factor
        sleep += decision.sleep_seconds
        if decision.action > chosen.action:
            chosen = decision
    if chosen.action is Action.CONTINUE and factor == 1.0 and sleep == 0.0:
        return CONTINUE
    reason = chosen.reason or next((d.reason for d in decisions_seen if d.reason), None)
    return Decision(chosen.action, reason, factor, sleep)


def decide(readings: HealthReadings, table: str, max_lag_seconds: float, paused_for_lag: bool) -> Decision:
    """Every signal for a run on `table`, combined."""
    return combine([
        replication_signal(readings.replicas, max_lag_seconds, paused_for_lag),
        lock_signal(readings.locks, table),
        vacuum_signal(readings.vacuuming, table),
    ])
