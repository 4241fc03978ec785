"""Throttling on database health, and the adaptive batch size, as hooks.

Readings are taken at most once a second per table and shared by every worker through
Redis: one worker takes them (the others wait for its result), so ten workers do not
mean ten times the monitoring queries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import redis as redis_lib
import sqlalchemy as sa

from backfills.batch import BatchResult
from backfills.control import RunControl
from backfills.health import HealthReadings, read_health
from backfills.hooks import Hook, SliceContext, Stop, StopKind, write_checkpoint
from backfills.reasons import HEALTH_REASONS, ThrottleReason
from backfills.optimizer import OptimizerState, next_batch_size
from backfills.retry import Failure
from backfills.signals import Action, decide

__all__ = ["HealthMonitor", "ThrottleHook", "AdaptiveBatchHook", "throttled_wait"]

READING_INTERVAL = 1.0


class HealthMonitor:
    """Readings for a set of tables, at most one database round trip per second overall."""

    def __init__(self, engine: sa.Engine, client: redis_lib.Redis, namespace: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.client = client
        self.namespace = namespace
        self.clock = clock

    def readings(self, tables: Sequence[str]) -> HealthReadings:
        """Fresh (≤ 1 s old) readings, from Redis if another worker just took them."""
        key = f"{self.namespace}:health:{','.join(sorted(tables))}"
        for _ in range(20):
            cached = self._cached(key)
            if cached is not None and self.clock() - cached.at < READING_INTERVAL:
                return cached
            if self.client.set(f"{key}:taking", "1", nx=True, px=int(READING_INTERVAL * 1000)):
                fresh = read_health(self.engine, tables, self.clock())
                self.client.set(key, json.dumps(fresh.to_json()), px=int(READING_INTERVAL * 5000))
                return fresh
            time.sleep(0.05)
        return read_health(self.engine, tables, self.clock())

    def _cached(self, key: str) -> HealthReadings | None:
        raw = self.client.get(key)
        return HealthReadings.from_json(json.loads(raw)) if raw else None


class ThrottleHook(Hook):
    """Before each batch: slow down or wait while the database is not healthy."""

    def __init__(self, monitor: HealthMonitor, control: RunControl, renew: Callable[[], bool],
                 deadline: Callable[[], float]) -> None:
        self.monitor = monitor
        self.control = control
        self.renew = renew
        self.deadline = deadline

    def before_batch(self, ctx: SliceContext) -> Stop | None:
        table = ctx.definition.table
        while True:
            readings = self.monitor.readings([table])
            decision = decide(readings, table, ctx.options.max_replication_lag, paused_for_lag=ctx.lag_paused)
            ctx.lag_paused = decision.reason is ThrottleReason.REPLICATION_LAG
            if decision.action is not Action.PAUSE or decision.reason is None:
                break
            stop = self._wait(ctx, decision.reason, decision.sleep_seconds or READING_INTERVAL)
            if stop is not None:
                return stop
        if decision.action is Action.SLOW:
            ctx.throttled = decision.reason
            ctx.batch_factor = decision.batch_factor
            reason = ctx.nap(decision.sleep_seconds)
            if reason:
                return Stop(reason)
        elif ctx.throttled in HEALTH_REASONS:
            ctx.throttled = None
        return None

    def _wait(self, ctx: SliceContext, reason: ThrottleReason, seconds: float) -> Stop | None:
        return throttled_wait(ctx, self.control, self.renew, self.deadline, reason, seconds)


def throttled_wait(ctx: SliceContext, control: RunControl, renew: Callable[[], bool],
                   deadline: Callable[[], float], reason: ThrottleReason, seconds: float) -> Stop | None:
    """Wait `seconds` before the next batch, throttled for `reason`: shown in the checkpoint,
    the lease kept; the slice ends (to be re-queued) rather than outlive its deadline."""
    if ctx.throttled != reason:
        control.add_event(f"throttled: {reason}; waiting before the next batch")
    ctx.throttled = reason
    write_checkpoint(control, ctx)
    if not renew():
        return Stop(StopKind.LOST_LEASE, "the lease expired while throttled")
    if time.monotonic() + seconds >= deadline():
        return Stop(StopKind.THROTTLED, reason)
    stopped = ctx.nap(seconds)
    return Stop(stopped) if stopped else None


class AdaptiveBatchHook(Hook):
    """`--target-batch-seconds`: grow toward the target duration, shrink fast on trouble."""

    def __init__(self) -> None:
        self.state = OptimizerState()

    def after_batch(self, ctx: SliceContext, result: BatchResult) -> Stop | None:
        target = ctx.options.target_batch_seconds
        if not target:
            return None
        self.state = self.state.observe(result.seconds, result.scanned, ctx.effective_batch_size)
        ctx.batch_size = next_batch_size(ctx.batch_size, self.state, target,
                                         contention=ctx.throttled is ThrottleReason.LOCK_CONTENTION)
        return None

    def on_failure(self, ctx: SliceContext, failure: Failure, error: BaseException) -> None:
        if ctx.options.target_batch_seconds and failure in (Failure.STATEMENT_TIMEOUT, Failure.LOCK_TIMEOUT):
            self.state = OptimizerState()
