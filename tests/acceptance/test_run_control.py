"""Operating a live run through the command line, against a real worker.

Every command goes through `backfill ...` in a subprocess (`run_cli`); what the worker
did is read from the durable counters in `backfill.progress` and the live Redis
checkpoint, never from the command's own output alone.
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime

import pytest
import redis as redis_lib
import sqlalchemy as sa

from backfills.control import RunControl
from tests.support.checks import (area_baseline, assert_area_backfill_exact, assert_status_backfill_exact, cli,
                                  counters, enqueue, enqueue_many, expect_exit, load_aois, precondition, run_record,
                                  status_baseline, status_json, table_rows, wait_for_batches, wait_run, wait_runs,
                                  wait_until)
from core.settings import Settings

SPEC_STATUS_KEYS = {"run_id", "backfill", "state", "rows_processed", "rows_remaining_estimate", "batches",
                    "row_errors", "batch_size", "throttled", "created_at", "started_at", "finished_at",
                    "eta_seconds", "tenant"}


def _ts(value: object) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def _assert_status_shape(data: dict[str, object], run_id: str, backfill: str, total: int) -> None:
    missing = SPEC_STATUS_KEYS - set(data)
    assert not missing, f"status --json lacks SPEC keys {sorted(missing)}: {data}"
    assert data["run_id"] == run_id and data["backfill"] == backfill, data
    for key in ("rows_processed", "batches", "row_errors", "batch_size"):
        assert isinstance(data[key], int) and not isinstance(data[key], bool), (key, data[key])
    assert data["throttled"] is None or isinstance(data["throttled"], str), data["throttled"]
    assert data["eta_seconds"] is None or isinstance(data["eta_seconds"], (int, float)), data["eta_seconds"]
    assert data["tenant"] is None, data["tenant"]
    _ts(data["created_at"])
    remaining = data["rows_remaining_estimate"]
    assert isinstance(remaining, int), remaining
    assert data["rows_processed"] + data["row_errors"] + remaining == total, data  # type: ignore[operator]


def _batch_times(engine: sa.Engine, run_id: str, until_batches: int, timeout: float = 60) -> list[tuple[int, float]]:
    """Poll the durable counter; (batches, monotonic time first seen) at every change up to `until_batches`."""
    seen: list[tuple[int, float]] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1][0] < until_batches:
        assert time.monotonic() < deadline, f"run {run_id} stalled at {seen[-1:]}"
        b = counters(engine, run_id).batches
        if not seen or b != seen[-1][0]:
            seen.append((b, time.monotonic()))
        time.sleep(0.01)
    return seen


@pytest.mark.parametrize("order", ["key", "physical"])
def test_pause_stops_before_the_next_batch_and_resume_finishes(settings: Settings, engine: sa.Engine,
                                                              workers, order: str) -> None:
    rows, batch = 20_000, 500
    load_aois(engine, rows, bad_rows=False)
    workers(concurrency=1)
    # exact batch counts below: the foreground guard (which may halve batches) is off
    run_id = enqueue(settings, "aois_status", "--batch-size", str(batch), "--sleep", "0.1", "--max-latency-ratio", "0",
                     "--order", order)
    wait_for_batches(engine, run_id, 3)

    paused = cli(settings, "pause", run_id)
    expect_exit(paused, 0, "pause")
    at_pause = counters(engine, run_id)
    time.sleep(2.0)  # unpaused, the run would do about a dozen batches in this time
    later = counters(engine, run_id)
    assert later.state == "paused", later
    assert later.batches <= at_pause.batches + 1, (
        f"{later.batches - at_pause.batches} batches committed after `pause` returned (at most the one in flight)")
    assert not later.done and later.rows_processed < rows

    status = status_json(settings, run_id)
    _assert_status_shape(status, run_id, "aois_status", rows)
    assert status["state"] == "paused" and status["batches"] == later.batches, status
    assert status["rows_processed"] == later.rows_processed and status["batch_size"] == batch, status
    assert status["started_at"] is not None and status["finished_at"] is None, status

    timed_out = wait_run(settings, run_id, timeout=1)
    expect_exit(timed_out, 124, "wait --timeout 1 on a paused run")
    assert counters(engine, run_id).batches == later.batches, "the paused run moved"

    expect_exit(cli(settings, "resume", run_id), 0, "resume")
    expect_exit(wait_run(settings, run_id, 60), 0, "wait after resume")
    assert_status_backfill_exact(engine, run_id, rows, total_rows=rows)
    if order == "key":  # physical batches hold about `batch` rows, and a closing pass follows
        assert counters(engine, run_id).batches == rows // batch

    final = status_json(settings, run_id)
    _assert_status_shape(final, run_id, "aois_status", rows)
    assert final["state"] == "succeeded" and final["rows_processed"] == rows, final
    assert final["rows_remaining_estimate"] == 0 and final["row_errors"] == 0, final
    assert final["throttled"] is None and final["eta_seconds"] == 0, final
    assert _ts(final["created_at"]) <= _ts(final["started_at"]) <= _ts(final["finished_at"]), final


def test_cancel_stops_before_the_next_batch_and_keeps_the_rows_done(settings: Settings, engine: sa.Engine,
                                                                   workers) -> None:
    rows = 20_000
    load_aois(engine, rows, bad_rows=False)
    workers(concurrency=1)
    run_id = enqueue(settings, "aois_status", "--batch-size", "500", "--sleep", "0.1", "--max-latency-ratio", "0")
    wait_for_batches(engine, run_id, 3)

    expect_exit(cli(settings, "cancel", run_id), 0, "cancel")
    at_cancel = counters(engine, run_id)
    time.sleep(1.0)
    assert counters(engine, run_id).batches <= at_cancel.batches + 1, "batches went on after `cancel` returned"

    waited = wait_run(settings, run_id, 30)
    expect_exit(waited, 1, "wait on a cancelled run")
    time.sleep(max(0.0, 4.0 - 1.0))  # longer than BACKFILL_STALE_SECONDS: the reconciler must leave it alone
    final = counters(engine, run_id)
    assert final.state == "cancelled", final
    assert final.batches <= at_cancel.batches + 1, f"batches went on after cancel: {at_cancel} -> {final}"
    assert 0 < final.rows_processed < rows, final
    with engine.connect() as conn:
        active = conn.execute(sa.text("SELECT count(*) FROM aois WHERE status = 'ACTIVE'")).scalar_one()
        untouched = conn.execute(sa.text("SELECT count(*) FROM aois WHERE status IS NULL")).scalar_one()
    assert active == final.rows_processed, f"{active} rows changed but the run counted {final.rows_processed}"
    assert untouched == rows - active


def test_set_changes_the_batch_size_and_sleep_of_the_following_batches(settings: Settings, engine: sa.Engine,
                                                                      workers, redis_client: redis_lib.Redis,
                                                                      namespace: str) -> None:
    rows = 40_000
    load_aois(engine, rows, bad_rows=False)
    workers(concurrency=1)
    run_id = enqueue(settings, "aois_status", "--batch-size", "500", "--sleep", "0.2", "--order", "key",
                     "--max-latency-ratio", "0")  # exact batch sizes: the guard would halve them on a busy machine
    before = wait_for_batches(engine, run_id, 2)
    assert before.rows_scanned == 500 * before.batches, before

    # --batch-size: at most the batch in flight keeps the old size; every later one has the new size.
    expect_exit(cli(settings, "set", run_id, "--batch-size", "1000"), 0, "set --batch-size")
    at_set = counters(engine, run_id).batches
    first = wait_for_batches(engine, run_id, at_set + 1)
    later = wait_for_batches(engine, run_id, first.batches + 3)
    assert later.rows_scanned - first.rows_scanned == 1000 * (later.batches - first.batches), (first, later)
    checkpoint = RunControl(redis_client, namespace, run_id).checkpoints()[0]
    assert checkpoint.batch_size == 1000, checkpoint

    # --sleep: after the batch in flight and its (old) pause, batches come at least `sleep` apart.
    expect_exit(cli(settings, "set", run_id, "--sleep", "1.5"), 0, "set --sleep")
    at_set = counters(engine, run_id).batches
    seen = _batch_times(engine, run_id, at_set + 4)
    # (the first sample may be a batch committed before polling began: its time is not a commit time)
    steady = [t for i, (b, t) in enumerate(seen) if i > 0 and b >= at_set + 2]
    gaps = [b - a for a, b in itertools.pairwise(steady)]
    assert gaps and min(gaps) >= 1.3, f"batches {gaps} s apart after `set --sleep 1.5`"
    assert not counters(engine, run_id).done, "the run ended before the new sleep could be observed"

    expect_exit(cli(settings, "set", run_id, "--sleep", "0"), 0, "set --sleep 0")
    expect_exit(wait_run(settings, run_id, 60), 0, "wait")
    assert_status_backfill_exact(engine, run_id, rows, total_rows=rows)


def test_wait_exit_codes_follow_the_final_state(settings: Settings, engine: sa.Engine, workers) -> None:
    load_aois(engine, 5_000)
    total = table_rows(engine)
    area, status_needed = area_baseline(engine), status_baseline(engine)
    workers(concurrency=2)
    run_ids = enqueue_many(settings, ("aois_area_ha_numeric", "--batch-size", "1000", "--sleep", "0"),
                           ("aois_status", "--batch-size", "1000", "--sleep", "0"))
    area_wait, status_wait = wait_runs(settings, run_ids, 60)
    expect_exit(area_wait, 3, "wait on a run that completed with row errors")
    expect_exit(status_wait, 0, "wait on a run that succeeded")
    assert_area_backfill_exact(engine, run_ids[0], area, total_rows=total)
    assert_status_backfill_exact(engine, run_ids[1], status_needed, total_rows=total)


def test_max_rows_per_second_limits_the_rate(settings: Settings, engine: sa.Engine, workers,
                                            redis_client: redis_lib.Redis, namespace: str) -> None:
    rows, rate = 6_000, 2_000
    load_aois(engine, rows, bad_rows=False)
    workers(concurrency=1)
    run_id = enqueue(settings, "aois_status", "--batch-size", "500", "--sleep", "0",
                     "--max-rows-per-second", str(rate), "--max-latency-ratio", "0")

    throttled: set[str | None] = set()
    control = RunControl(redis_client, namespace, run_id)

    def ended() -> bool:
        throttled.update(cp.throttled for cp in control.checkpoints().values())
        return counters(engine, run_id).state not in ("queued", "running")

    wait_until(ended, 60, "the rate-limited run to end", interval=0.02)
    expect_exit(wait_run(settings, run_id, 10), 0, "wait")
    status = status_json(settings, run_id)
    _assert_status_shape(status, run_id, "aois_status", rows)
    seconds = (_ts(status["finished_at"]) - _ts(status["started_at"])).total_seconds()
    # A full bucket (one second of rate) at the start, then the other 4000 rows at 2000 rows/s.
    budget = (rows - rate) / rate
    assert seconds >= budget * 0.95, f"{rows} rows at {rate} rows/s took only {seconds:.2f}s (>= {budget:.1f}s)"
    assert "rate_limit" in throttled, f"the live checkpoint never said the run was rate limited: {throttled}"
    assert_status_backfill_exact(engine, run_id, rows, total_rows=rows)



def test_pause_during_a_rate_limit_wait_stops_before_the_next_batch(settings: Settings, engine: sa.Engine,
                                                                    workers) -> None:
    # 100 rows/s in batches of 1000: the worker waits ~9 s for tokens before its first batch,
    # so `pause` returns while no batch is in flight; the next batch must then never start.
    with precondition("`pause` returns during the rate-limit wait before the first batch"):
        load_aois(engine, 5_000, bad_rows=False)
        workers(concurrency=1)
        run_id = enqueue(settings, "aois_status", "--batch-size", "1000", "--sleep", "0",
                         "--max-rows-per-second", "100", "--max-latency-ratio", "0")
        wait_until(lambda: counters(engine, run_id).state == "running", 30, "the run to start")
        expect_exit(cli(settings, "pause", run_id), 0, "pause")
        with engine.connect() as conn:
            paused_at = conn.execute(sa.text("SELECT now()")).scalar_one()
        started_at = run_record(engine, run_id).started_at
        assert (paused_at - started_at).total_seconds() < 8, (paused_at, started_at)
        assert counters(engine, run_id).batches == 0
    deadline = time.monotonic() + max(0.0, 12 - (paused_at - started_at).total_seconds())
    while time.monotonic() < deadline and counters(engine, run_id).batches == 0:
        time.sleep(0.1)  # a worker that ignores the pause runs its first batch ~9-10 s after the start
    with engine.connect() as conn:
        late = conn.execute(sa.text(
            "SELECT batches, rows_processed, updated_at FROM backfill.progress "
            "WHERE run_id = CAST(:r AS uuid) AND updated_at > :t"), {"r": run_id, "t": paused_at}).all()
    assert not late, (f"a batch began {(late[0].updated_at - paused_at).total_seconds():.1f}s after "
                      f"`pause` returned: {late}")
    assert counters(engine, run_id).state == "paused"
