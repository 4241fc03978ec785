"""MetricsHook + MetricsRecorder with the real SliceRunner, PostgreSQL and Redis: every
batch attempt counted once, under the right outcome, and the counters equal what the
database changed (counted with plain SQL, not from the engine's own numbers)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import redis as redis_lib
import sqlalchemy as sa

from backfills.definition import Backfill
from backfills.engine import SliceRunner
from backfills.registry import Registry
from backfills.retry import RetryPolicy
from backfills.runs import RunOptions, RunStore
from monitoring.metrics import BATCH_DURATION_BUCKETS
from monitoring.recorder import BackfillCounters, MetricsRecorder, bucket_for
from tests.support.engine_helpers import new_run, registry_of, run_to_completion, scalar, slice_runner
from worker.sample_data import SampleSpec, load

# aois_area_ha_numeric without its `invalid_reason`: bad areas fail the batch on data, so
# the engine bisects around them (outcome `split`) and records them as row errors.
UNGUARDED = Backfill(name="aois_area_unguarded", table="aois", description="area_ha_new, bisecting bad rows",
                     needs="t.area_ha_new IS NULL AND t.area_ha IS NOT NULL",
                     sets={"area_ha_new": "round(t.area_ha::numeric, 2)"})
FAST_RETRY = RetryPolicy(window_seconds=60, base_seconds=0.05, max_seconds=0.2)


def runner(engine: sa.Engine, client: redis_lib.Redis, namespace: str, registry: Registry | None = None,
           retry: RetryPolicy = FAST_RETRY) -> SliceRunner:
    """A slice runner built as the worker builds it, metrics hook included."""
    return slice_runner(engine, client, namespace, registry, retry=retry, metrics=True)


def counters(client: redis_lib.Redis, namespace: str, backfill: str) -> BackfillCounters:
    return {c.backfill: c for c in MetricsRecorder(client, namespace).read()}[backfill]


@pytest.fixture
def sample(engine: sa.Engine) -> sa.Engine:
    load(engine, SampleSpec(aois=3000, jobs=300, tenants=3))
    return engine


@contextmanager
def table_locked(db_url: str, release_after: float | None) -> Iterator[None]:
    """`aois` locked against writes (SHARE) by another session, released after
    `release_after` seconds (None: when the block ends)."""
    conn = psycopg.connect(db_url)
    conn.execute("LOCK TABLE aois IN SHARE MODE")
    timer = threading.Timer(release_after, conn.rollback) if release_after is not None else None
    if timer is not None:
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.join()
        conn.close()


def test_counters_equal_what_the_database_changed(sample: sa.Engine, redis_client: redis_lib.Redis,
                                                  namespace: str) -> None:
    run = new_run(sample, UNGUARDED.name, RunOptions(batch_size=200, sleep=0, max_latency_ratio=0))
    run_to_completion(runner(sample, redis_client, namespace, registry=registry_of(UNGUARDED)), run.id)

    got = counters(redis_client, namespace, UNGUARDED.name)
    changed = scalar(sample, "SELECT count(*) FROM aois WHERE area_ha_new IS NOT NULL")
    failed_rows = scalar(sample, "SELECT count(*) FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)", r=run.id)
    committed = scalar(sample, "SELECT sum(batches) FROM backfill.progress WHERE run_id = CAST(:r AS uuid)", r=run.id)
    assert changed > 2000 and failed_rows > 0
    assert got.rows_processed == changed
    assert got.row_errors == failed_rows
    assert got.batches["split"] >= 1, "bad rows are bisected"
    # progress.batches also counts each bisected chunk's statement: a split batch is one or more
    assert got.batches["ok"] + got.batches["split"] <= committed
    assert got.batches["retried"] == got.batches["failed"] == got.lock_timeouts == 0
    assert got.duration_count == got.batches["ok"] + got.batches["split"]
    assert [le for le, _ in got.duration_buckets][-1] == "+Inf"
    assert got.duration_buckets[-1][1] == got.duration_count
    assert all(a[1] <= b[1] for a, b in zip(got.duration_buckets, got.duration_buckets[1:]))
    assert got.duration_sum > 0


def test_lock_timeouts_are_retried_attempts(sample: sa.Engine, db_url: str, redis_client: redis_lib.Redis,
                                            namespace: str) -> None:
    # the guard is off: its probe would wait on the locked table and hold the first batch back
    run = new_run(sample, "aois_status", RunOptions(batch_size=500, sleep=0, lock_timeout=0.1, max_latency_ratio=0))
    with table_locked(db_url, release_after=1.5):
        run_to_completion(runner(sample, redis_client, namespace), run.id)

    got = counters(redis_client, namespace, "aois_status")
    assert RunStore(sample).get(run.id).state == "succeeded"
    assert got.lock_timeouts >= 2
    assert got.batches["retried"] == got.lock_timeouts
    assert got.batches["failed"] == 0
    assert got.rows_processed == scalar(sample, "SELECT count(*) FROM aois WHERE status = 'ACTIVE'")
    assert got.batches["ok"] == scalar(sample, "SELECT sum(batches) FROM backfill.progress "
                                               "WHERE run_id = CAST(:r AS uuid)", r=run.id)


def test_retries_running_out_count_one_failed_batch(sample: sa.Engine, db_url: str, redis_client: redis_lib.Redis,
                                                    namespace: str) -> None:
    # the guard is off: its probe would wait on the locked table and hold the first batch back
    run = new_run(sample, "aois_status", RunOptions(batch_size=500, sleep=0, lock_timeout=0.1, max_latency_ratio=0))
    give_up = RetryPolicy(window_seconds=0.8, base_seconds=0.05, max_seconds=0.1)
    with table_locked(db_url, release_after=None):
        run_to_completion(runner(sample, redis_client, namespace, retry=give_up), run.id)

    got = counters(redis_client, namespace, "aois_status")
    assert RunStore(sample).get(run.id).state == "failed"
    assert got.batches["failed"] == 1
    assert got.lock_timeouts >= 2
    assert got.batches["retried"] == got.lock_timeouts - 1
    assert got.rows_processed == 0 and got.batches["ok"] == 0


def test_a_batch_that_cannot_succeed_is_counted_failed(sample: sa.Engine, redis_client: redis_lib.Redis,
                                                       namespace: str) -> None:
    broken = Backfill(name="aois_broken", table="aois", description="refers to a column that does not exist",
                      needs="t.status IS NULL", sets={"status": "t.no_such_column"})
    run = new_run(sample, "aois_broken", RunOptions(batch_size=500, sleep=0, max_latency_ratio=0))
    run_to_completion(runner(sample, redis_client, namespace, registry=registry_of(broken)), run.id)

    got = counters(redis_client, namespace, "aois_broken")
    assert RunStore(sample).get(run.id).state == "failed"
    assert got.batches == {"ok": 0, "retried": 0, "split": 0, "failed": 1}


def test_recorder_keeps_one_hash_per_backfill_under_the_namespace(redis_client: redis_lib.Redis,
                                                                  namespace: str) -> None:
    recorder = MetricsRecorder(redis_client, namespace)
    recorder.record_batch("b1", "ok", rows=10, row_errors=0, seconds=0.03)
    recorder.record_batch("b1", "split", rows=7, row_errors=3, seconds=100.0)
    recorder.record_attempt("b1", "retried", lock_timeout=True)
    recorder.record_attempt("b2", "failed", lock_timeout=False)

    assert sorted(k.decode() for k in redis_client.scan_iter(f"{namespace}:metrics:*")) == [
        f"{namespace}:metrics:backfill:b1", f"{namespace}:metrics:backfill:b2", f"{namespace}:metrics:backfills"]
    b1, b2 = recorder.read()
    assert (b1.rows_processed, b1.row_errors, b1.lock_timeouts) == (17, 3, 1)
    assert b1.batches == {"ok": 1, "retried": 1, "split": 1, "failed": 0}
    buckets = dict(b1.duration_buckets)
    assert buckets[bucket_for(0.03)] == 1 and buckets["60.0"] == 1 and buckets["+Inf"] == 2
    assert len(buckets) == len(BATCH_DURATION_BUCKETS)
    assert b1.duration_sum == pytest.approx(100.03)
    assert b2.batches["failed"] == 1 and b2.duration_count == 0
    with pytest.raises(ValueError):
        recorder.record_attempt("b1", "exploded", lock_timeout=False)
