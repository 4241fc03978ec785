"""Helpers for tests that drive the backfill engine in-process against real servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis as redis_lib
import sqlalchemy as sa

from backfills.batch import BatchExecutor, BatchResult, Timeouts, read_key_columns
from backfills.definition import Backfill
from backfills.engine import SliceOutcome, SliceRunner
from backfills.keyset import Scope
from backfills.registry import Registry
from backfills.retry import RetryPolicy
from backfills.runs import Run, RunOptions, RunStore
from core.settings import Settings
from worker.runtime import Runtime

__all__ = [
    "TIMEOUTS",
    "drain",
    "execute",
    "load_old_threads",
    "executor_for",
    "new_run",
    "registry_of",
    "rows",
    "run_to_completion",
    "scalar",
    "slice_runner",
]

TIMEOUTS = Timeouts(lock=5.0, statement=60.0)
UNSCOPED = Scope()


def scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    """The single value of a query."""
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[sa.Row[Any]]:
    """All rows of a query."""
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).all())


def execute(engine: sa.Engine, *statements: str, replica: bool = False, **params: Any) -> None:
    """Run statements in one transaction; `replica` turns triggers and FK checks off
    for them (rows written "before the expand migrations")."""
    with engine.begin() as conn:
        if replica:
            conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            conn.execute(sa.text(statement), params)


def new_run(engine: sa.Engine, name: str, options: RunOptions | None = None, **kwargs: Any) -> Run:
    """A queued run with its progress rows, as `RunStore.create` makes them."""
    return RunStore(engine).create(name, options or RunOptions(batch_size=1000, sleep=0, max_latency_ratio=0), **kwargs)


def executor_for(engine: sa.Engine, definition: Backfill, run_id: str, scope: Scope = UNSCOPED,
                 part: int = 0) -> BatchExecutor:
    """A batch executor over the definition's real key columns."""
    with engine.connect() as conn:
        key = read_key_columns(conn, definition)
    return BatchExecutor(engine, definition, key, scope, run_id, part)


def drain(executor: BatchExecutor, limit: int, cursor: list[str] | None = None,
          timeouts: Timeouts = TIMEOUTS, max_batches: int = 100_000) -> Iterator[BatchResult]:
    """Run batches until the part has no keys left; yields every result, the final
    empty one included."""
    for _ in range(max_batches):
        result = executor.run(cursor, limit, timeouts)
        yield result
        if result.last_key is None:
            return
        cursor = result.last_key
    raise AssertionError(f"no end after {max_batches} batches")


def registry_of(*definitions: Backfill) -> Registry:
    """A registry holding exactly these definitions."""
    return Registry({d.name: d for d in definitions})


def slice_runner(engine: sa.Engine, client: redis_lib.Redis, namespace: str, registry: Registry | None = None,
                 *, slice_seconds: float = 600, retry: RetryPolicy | None = None,
                 metrics: bool = False) -> SliceRunner:
    """A slice runner built by the worker's `Runtime` over these connections (30 s
    leases; the metrics hook only when `metrics`)."""
    settings = Settings(namespace=namespace, lease_seconds=30, slice_seconds=slice_seconds)
    runtime = Runtime(settings, engine=engine, redis=client, registry=registry or Registry.discover())
    return runtime.slice_runner(metrics=metrics, retry=retry or RetryPolicy())


def run_to_completion(runner: SliceRunner, run_id: str, max_slices: int = 1000) -> list[SliceOutcome]:
    """Call `run_slice(run_id, 0)` until the part is done or the slice stops for good
    (paused, cancelled, failed); returns the outcomes."""
    outcomes = []
    for _ in range(max_slices):
        outcome = runner.run_slice(run_id, 0)
        outcomes.append(outcome)
        if outcome in (SliceOutcome.DONE, SliceOutcome.STOPPED):
            return outcomes
        assert outcome is SliceOutcome.CONTINUE, outcomes
    raise AssertionError(f"run {run_id} not done after {max_slices} slices")



def load_old_threads(engine: sa.Engine, rows: int) -> None:
    """The old table of the rename (`copilot_threads`, as it was before 003) with `rows`
    threads, a tenth of them copied already, for the copy backfill."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE copilot_threads (LIKE ai_assistant_threads INCLUDING ALL)"))
        conn.execute(sa.text("INSERT INTO copilot_threads (tenant_id, title) "
                             "SELECT (SELECT min(id::text)::uuid FROM tenants), 'thread ' || g "
                             f"FROM generate_series(1, {int(rows)}) g"))
        conn.execute(sa.text("INSERT INTO ai_assistant_threads SELECT * FROM copilot_threads WHERE title LIKE '%5'"))
        conn.execute(sa.text("ANALYZE copilot_threads; ANALYZE ai_assistant_threads"))
