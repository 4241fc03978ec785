"""Crash recovery with real worker processes, real PostgreSQL and real Redis.

Every test ends with the data checked against an independent SQL computation and the
run's durable counters checked to be exact: a crash may cost time, never a row.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace

import pytest
import redis as redis_lib
import sqlalchemy as sa

from tests.support.checks import (AreaBaseline, area_baseline, assert_area_backfill_exact,
                                  assert_status_backfill_exact, counters, deliver_again, enqueue, enqueue_many,
                                  expect_exit, load_aois, precondition, status_baseline, table_rows, wait_for_batches,
                                  wait_runs, wait_until)
from core.db import create_db_engine
from core.settings import Settings

SEED = 20240611
ROWS = 40_000
KILL_ROWS = 60_000
# the guard is off: these tests are about recovery, and two runs on a small test machine would make it
# hold them back for minutes
BATCH = ["--batch-size", "1000", "--sleep", "0.02", "--max-latency-ratio", "0"]
TERMINAL = {"succeeded", "completed_with_errors", "failed", "cancelled"}


def _both_runs(settings: Settings) -> list[str]:
    """One run in each batch order: block ranges (with bisection) and key ranges."""
    return enqueue_many(settings, ("aois_area_ha_numeric", *BATCH, "--order", "physical"),
                        ("aois_status", *BATCH, "--order", "key"))


def _assert_both_exact(settings: Settings, engine: sa.Engine, run_ids: list[str], area: AreaBaseline,
                       status_needed: int,
                       total: int, timeout: float = 90) -> None:
    area_run, status_run = run_ids
    area_wait, status_wait = wait_runs(settings, run_ids, timeout)
    expect_exit(area_wait, 3, "wait on the aois_area_ha_numeric run (it has bad rows)")
    expect_exit(status_wait, 0, "wait on the aois_status run")
    assert_area_backfill_exact(engine, area_run, area, total_rows=total)
    assert_status_backfill_exact(engine, status_run, status_needed, total_rows=total)


def _total_batches(engine: sa.Engine, run_ids: list[str]) -> int:
    return sum(counters(engine, r).batches for r in run_ids)


def _wait_both_mid_run(engine: sa.Engine, run_ids: list[str], batches: int = 3) -> None:
    """Block until both runs have committed `batches` batches; fail if one has already ended."""
    for run_id in run_ids:
        wait_for_batches(engine, run_id, batches)
    states = {r: counters(engine, r) for r in run_ids}
    assert all(c.state == "running" and not c.done for c in states.values()), (
        f"a run ended before the fault was injected (make the data bigger): {states}")


def test_sigkill_of_the_whole_worker_at_random_moments_loses_and_repeats_nothing(settings: Settings,
                                                                                 engine: sa.Engine, workers) -> None:
    rng = random.Random(SEED)
    load_aois(engine, KILL_ROWS)
    total = table_rows(engine)
    area, status_needed = area_baseline(engine), status_baseline(engine)
    assert area.bad_ids and area.to_change > 0 and status_needed == total  # the data exercises both paths

    worker = workers(concurrency=2)  # both runs mid-batch when the machine dies
    run_ids = _both_runs(settings)
    for trial in range(3):
        # Let the (new) worker get going, then SIGKILL it and all its children at a random moment.
        before = _total_batches(engine, run_ids)
        wait_until(lambda before=before: _total_batches(engine, run_ids) > before, 60,
                   f"progress before kill {trial + 1}")
        time.sleep(rng.uniform(0.0, 1.2))
        states = [counters(engine, r).state for r in run_ids]
        assert not all(s in TERMINAL for s in states), (
            f"both runs ended before kill {trial + 1}: the test no longer kills mid-run (make the data bigger)")
        worker.kill_group()
        worker = workers(concurrency=2)
    _assert_both_exact(settings, engine, run_ids, area, status_needed, total)


def test_postgresql_restart_mid_run_is_survived_by_the_running_worker(settings: Settings, own_postgres,
                                                                      workers_for) -> None:
    server, url = own_postgres
    own = replace(settings, database_url=url)
    engine = create_db_engine(url)
    try:
        load_aois(engine, ROWS)
        total = table_rows(engine)
        area, status_needed = area_baseline(engine), status_baseline(engine)
        worker = workers_for(own, concurrency=2)
        run_ids = _both_runs(own)
        _wait_both_mid_run(engine, run_ids)
        postmaster = server.pid()
        server.restart()  # every connection of the worker is dropped mid-run
        assert server.pid() != postmaster, "the server was not restarted"
        restarted_at = _total_batches(engine, run_ids)
        wait_until(lambda: _total_batches(engine, run_ids) > restarted_at, 60, "batches after the restart")
        assert worker.process.poll() is None, f"the worker died with the database:\n{worker.log()[-3000:]}"
        _assert_both_exact(own, engine, run_ids, area, status_needed, total)
        assert worker.process.poll() is None, f"the worker died:\n{worker.log()[-3000:]}"
    finally:
        engine.dispose()


def test_redis_flushall_mid_run_is_recovered_by_the_reconciler(settings: Settings, engine: sa.Engine, own_redis,
                                                               workers_for) -> None:
    own = replace(settings, redis_url=own_redis.url, broker_url=own_redis.url)
    load_aois(engine, ROWS)
    total = table_rows(engine)
    area, status_needed = area_baseline(engine), status_baseline(engine)
    worker = workers_for(own, concurrency=2)
    run_ids = _both_runs(own)
    _wait_both_mid_run(engine, run_ids)
    client = redis_lib.Redis.from_url(own_redis.url)
    try:
        assert client.dbsize() > 0
        client.flushall()  # queued task messages, leases, checkpoints and control flags: all gone
    finally:
        client.close()
    _assert_both_exact(own, engine, run_ids, area, status_needed, total, timeout=60)
    assert "re-queuing it" in worker.log(), "the reconciler did not re-queue the run"


@pytest.mark.parametrize("order", ["key", "physical"])
def test_the_same_task_delivered_twice_never_runs_two_batches_at_once(settings: Settings, engine: sa.Engine,
                                                                     workers, order: str) -> None:
    rows, batch = 20_000, 500
    load_aois(engine, rows, bad_rows=False)
    worker = workers(concurrency=2)
    # exact batch counts below: the foreground guard (which may halve batches) is off
    run_id = enqueue(settings, "aois_status", "--batch-size", str(batch), "--sleep", "0.05", "--max-latency-ratio", "0",
                     "--order", order)
    wait_for_batches(engine, run_id, 2)

    # Sample the sessions running an aois_status batch (application_name is SET LOCAL per batch).
    peak = {"sessions": 0, "samples": 0}
    stop = threading.Event()

    def sample() -> None:
        with engine.connect() as conn:
            name = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            while not stop.is_set():
                n = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                                         "AND application_name = 'backfill:aois_status'"), {"d": name}).scalar_one()
                peak["sessions"] = max(peak["sessions"], int(n))
                peak["samples"] += 1
                time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    deliver_again(settings, run_id, 5, 0.1)
    (waited,) = wait_runs(settings, [run_id], 60)
    stop.set()
    sampler.join(10)
    expect_exit(waited, 0, "wait on the aois_status run")
    busy = worker.log().count("slice busy")
    assert busy >= 1, f"no duplicate slice was turned away as busy:\n{worker.log()[-3000:]}"
    c = counters(engine, run_id)
    if order == "key":
        assert c.batches == -(-rows // batch), f"{c.batches} batches committed for {rows} rows in batches of {batch}"
        assert c.rows_scanned == rows, c
    assert c.rows_processed == rows, c
    assert peak["samples"] > 50 and peak["sessions"] <= 1, f"batches of one part ran concurrently: {peak}"
    assert_status_backfill_exact(engine, run_id, rows, total_rows=rows)


def test_sigterm_finishes_the_batch_and_exits_promptly_then_a_new_worker_finishes(settings: Settings,
                                                                                 engine: sa.Engine, workers) -> None:
    rows = 12_000
    load_aois(engine, rows, bad_rows=False)
    # A long slice: a worker that waited for the slice to end would take ~30 s to exit.
    worker = workers(concurrency=1, BACKFILL_SLICE_SECONDS="30")
    run_id = enqueue(settings, "aois_status", "--batch-size", "500", "--sleep", "0.2", "--max-latency-ratio", "0")
    wait_for_batches(engine, run_id, 3)
    started = time.monotonic()
    code = worker.terminate(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0, f"exit code {code} after SIGTERM:\n{worker.log()[-3000:]}"
    assert elapsed < 8, f"the worker took {elapsed:.1f}s to exit after SIGTERM (it should finish one batch)"
    stopped = counters(engine, run_id)
    assert stopped.state == "running" and not stopped.done and 3 <= stopped.batches < rows // 500, stopped
    time.sleep(1.0)
    assert counters(engine, run_id).batches == stopped.batches, "batches went on after the worker exited"
    workers(concurrency=1)
    (waited,) = wait_runs(settings, [run_id], 60)
    expect_exit(waited, 0, "wait on the aois_status run after a new worker started")
    assert_status_backfill_exact(engine, run_id, rows, total_rows=rows)


def test_reconciler_leaves_alone_a_part_that_is_only_waiting_for_a_free_worker(settings: Settings,
                                                                               engine: sa.Engine, workers) -> None:
    # The first run keeps the only worker process busy for a whole slice (8 s; ~9 s of work); the second
    # run's message waits in the queue meanwhile, longer than BACKFILL_STALE_SECONDS (3 s). Nothing is
    # lost, so nothing should be re-queued.
    queue_key = f"{settings.namespace}:celery:{settings.queue}"
    client = redis_lib.Redis.from_url(settings.require_redis())
    longest = 0
    try:
        with precondition("both runs finish"):
            load_aois(engine, 20_000)
            worker = workers(concurrency=1, BACKFILL_SLICE_SECONDS="8")
            slow = enqueue(settings, "aois_status", "--batch-size", "1000", "--sleep", "0.4",
                           "--max-latency-ratio", "0")
            fast = enqueue(settings, "aois_area_ha_numeric", "--batch-size", "1000", "--sleep", "0",
                           "--max-latency-ratio", "0")

            def ended() -> bool:
                nonlocal longest
                longest = max(longest, int(client.llen(queue_key)))
                return all(counters(engine, r).state in TERMINAL for r in (slow, fast))
            wait_until(ended, 90, "both runs to end", interval=0.05)
            assert counters(engine, slow).state == "succeeded", counters(engine, slow)
            assert counters(engine, fast).state == "completed_with_errors", counters(engine, fast)
    finally:
        client.close()
    requeued = worker.log().count("re-queuing it")
    assert requeued == 0 and longest <= 2, (
        f"no message was lost, yet the reconciler re-queued {requeued} time(s); the queue held up to {longest} "
        f"messages for 2 runs of one part each (at most one each is needed)")
