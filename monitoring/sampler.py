"""What one scrape reads: the workers' counters from Redis, and the database as it is now.

Every reading is bounded: database statements run under a short `statement_timeout`
(the health readings of `backfills.health` set their own), connections under a connect
timeout, Redis calls under a socket timeout. A reading that fails is reported as such
(`database_up` / `redis_up` false) and the rest of the scrape goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis as redis_lib
import sqlalchemy as sa

from backfills.health import HealthReadings, read_health
from backfills.control import RunControl
from backfills.registry import Registry, UnknownBackfill
from backfills.runs import Run, RunStore
from backfills.states import RunState
from backfills.status import RunStatus, read_status
from monitoring.recorder import BackfillCounters, MetricsRecorder

__all__ = ["RunSample", "Sampler", "Scrape"]

_LATEST_STATES = """
SELECT DISTINCT ON (backfill) backfill, state
FROM backfill.runs
ORDER BY backfill, created_at DESC, id DESC
"""


@dataclass(frozen=True)
class RunSample:
    """The live numbers of one active run (the same ones `backfill status --json` shows)."""

    backfill: str
    state: str
    rows_remaining: float | None
    rows_estimate: float | None
    eta_seconds: float | None
    batch_size: float | None
    checkpoint_age_seconds: float | None
    throttled: frozenset[str] = frozenset()
    foreground_latency_ratio: float | None = None


@dataclass(frozen=True)
class Scrape:
    """Everything one scrape read."""

    counters: list[BackfillCounters] = field(default_factory=list)
    runs: list[RunSample] = field(default_factory=list)
    latest_states: dict[str, str] = field(default_factory=dict)
    health: HealthReadings = field(default_factory=lambda: HealthReadings(None, None, None, 0.0))
    database_up: bool = False
    redis_up: bool = False
    seconds: float = 0.0


def _age(at: datetime | None) -> float | None:
    return None if at is None else max(0.0, (datetime.now(UTC) - at).total_seconds())


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


class Sampler:
    """Takes the readings of one scrape."""

    def __init__(self, engine: sa.Engine, redis: redis_lib.Redis, namespace: str, registry: Registry,
                 tables: Sequence[str], health_timeout_ms: int = 1000) -> None:
        self.engine = engine
        self.redis = redis
        self.namespace = namespace
        self.registry = registry
        self.tables = tuple(tables)
        self.health_timeout_ms = health_timeout_ms
        self.recorder = MetricsRecorder(redis, namespace)
        self.store = RunStore(engine)

    def sample(self) -> Scrape:
        """Read Redis and the database now."""
        started = time.monotonic()
        counters, redis_up = self._counters()
        runs, states, runs_ok = self._runs()
        samples = []
        for run in runs:  # once Redis fails, the other runs are read from the database alone
            sample, redis_up = self._run_sample(run, redis_up)
            samples.append(sample)
        health = (read_health(self.engine, self._tables(runs), time.time(), self.health_timeout_ms)
                  if runs_ok else HealthReadings(None, None, None, time.time()))  # unreachable: do not wait twice
        database_up = runs_ok and None not in (health.replicas, health.locks, health.vacuuming)
        return Scrape(counters, samples, states, health, database_up, redis_up,
                      time.monotonic() - started)

    def _counters(self) -> tuple[list[BackfillCounters], bool]:
        """Recorded counters, and zeros for registered backfills that recorded nothing yet
        (so that the first increase of a counter is seen by `increase()` and alerts)."""
        try:
            recorded = {c.backfill: c for c in self.recorder.read()}
        except redis_lib.RedisError:
            return [], False
        for definition in self.registry:
            recorded.setdefault(definition.name, BackfillCounters.from_hash(definition.name, {}))
        return [recorded[name] for name in sorted(recorded)], True

    def _runs(self) -> tuple[list[Run], dict[str, str], bool]:
        try:
            runs = self.store.active()
            with self.engine.connect() as conn:
                states = {r.backfill: r.state for r in conn.execute(sa.text(_LATEST_STATES))}
            return runs, states, True
        except sa.exc.SQLAlchemyError:
            return [], {}, False

    def _run_sample(self, run: Run, redis_up: bool) -> tuple[RunSample, bool]:
        """The run's numbers, and whether Redis could be read; from the durable record alone
        when it cannot."""
        status: RunStatus | None = None
        if redis_up:
            try:
                status = read_status(run, RunControl(self.redis, self.namespace, run.id))
            except redis_lib.RedisError:
                redis_up = False
        age = status.checkpoint_age_seconds if status else None
        if age is None and run.state == RunState.RUNNING:
            age = _age(run.last_progress_at)  # no live checkpoint: the durable progress is the heartbeat
        return RunSample(
            backfill=run.backfill, state=run.state, rows_remaining=_number(run.rows_remaining_estimate),
            rows_estimate=_number(run.rows_estimate), eta_seconds=_number(status.eta_seconds if status else None),
            batch_size=float(status.batch_size if status else run.options.batch_size), checkpoint_age_seconds=age,
            throttled=frozenset(status.throttled if status else ()),
            foreground_latency_ratio=status.foreground_latency_ratio if status else None,
        ), redis_up

    def _tables(self, runs: Sequence[Run]) -> list[str]:
        """The configured tables and those of every active run."""
        tables = set(self.tables)
        for run in runs:
            try:
                tables.add(self.registry.get(run.backfill).table)
            except UnknownBackfill:
                continue
        return sorted(tables)
