"""`RunStatus`: what `status` shows of a run, computed from the run, its checkpoints and
events, and a time passed in."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from backfills.control import Checkpoint
from backfills.runs import Progress, Run, RunOptions
from backfills.states import RunState
from backfills.status import run_status

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_run(state: str = RunState.RUNNING, processed: int = 600, errors: int = 0, estimate: int | None = 1000,
             finished: datetime | None = None) -> Run:
    part = Progress(part=0, lower_key=None, upper_key=None, cursor=None, done=False, rows_processed=processed,
                    rows_scanned=processed + errors, batches=6, row_errors=errors,
                    updated_at=T0 + timedelta(seconds=60))
    return Run(id="r1", backfill="aois_status", state=state, options=RunOptions(batch_size=500), tenant=None,
               parent_run_id=None, rows_estimate=estimate, last_error=None, created_at=T0, started_at=T0,
               finished_at=finished, updated_at=T0, parts=(part,))


def checkpoint(at: float, batch_size: int = 250, throttled: str | None = None) -> Checkpoint:
    return Checkpoint(cursor=None, rows_processed=0, batches=0, row_errors=0, at=at, batch_size=batch_size,
                      last_batch_seconds=0.1, throttled=throttled)


def test_a_running_run_with_checkpoints() -> None:
    cps = {0: checkpoint(100.0, 250, "lock_waiters"), 1: checkpoint(101.5, 300, "autovacuum"),
           2: checkpoint(99.0, 200, "lock_waiters")}
    status = run_status(make_run(), cps, ["e1", "e2"], now=103.0)
    assert status.throttled == ("autovacuum", "lock_waiters")
    assert (status.batch_size, status.checkpoint_age_seconds) == (300, 1.5)
    assert status.rows_per_second == 10.0          # 600 rows over the 60 s since the start
    assert status.eta_seconds == 40.0              # 400 rows left at 10 rows/s
    assert status.percent == 60.0
    data = status.to_json()
    assert data["throttled"] == "autovacuum, lock_waiters" and data["events"] == ["e1", "e2"]
    assert data["checkpoint_age_seconds"] == 1.5 and data["eta_seconds"] == 40.0


def test_without_checkpoints_the_options_batch_size_and_no_age_key() -> None:
    status = run_status(make_run(), {}, [], now=0.0)
    assert (status.batch_size, status.checkpoint_age_seconds, status.throttled) == (500, None, ())
    data = status.to_json()
    assert "checkpoint_age_seconds" not in data and data["throttled"] is None
    keys = set(make_run().to_status_json()) | {"events", "rows_per_second", "foreground_latency_ratio"}
    assert set(data) == keys


def test_reasons_and_eta_only_while_running() -> None:
    paused = run_status(make_run(RunState.PAUSED), {0: checkpoint(1.0, throttled="autovacuum")}, [], now=2.0,
                        latency_ratio=1.2)
    assert paused.throttled == () and paused.eta_seconds is None and paused.foreground_latency_ratio is None
    assert run_status(make_run(), {}, [], now=0.0, latency_ratio=1.2).to_json()["foreground_latency_ratio"] == 1.2
    done = run_status(make_run(RunState.SUCCEEDED, finished=T0 + timedelta(seconds=60)), {}, [], now=0.0)
    assert done.eta_seconds == 0 and done.percent == 100.0


def test_no_rate_before_any_row_and_no_percent_without_an_estimate() -> None:
    fresh = run_status(make_run(processed=0, estimate=None), {}, [], now=0.0)
    assert fresh.rows_per_second is None and fresh.eta_seconds is None and fresh.percent == 0.0
    run = make_run(processed=0, estimate=0)
    assert run_status(replace(run, rows_estimate=0), {}, [], now=0.0).percent == 100.0
