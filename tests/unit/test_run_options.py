"""Unit tests for backfills.runs.RunOptions and the pure parts of Run."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from backfills.runs import Progress, Run, RunOptions

BAD_VALUES = [
    ("batch_size", 0, "--batch-size must be a positive whole number, got 0"),
    ("batch_size", -5, "--batch-size must be a positive whole number, got -5"),
    ("batch_size", 1_000_001, "--batch-size must be at most 1000000, got 1000001"),
    ("batch_size", 10.5, "--batch-size must be a positive whole number, got 10.5"),
    ("batch_size", "100", "--batch-size must be a positive whole number, got '100'"),
    ("batch_size", True, "--batch-size must be a positive whole number, got True"),
    ("sub_batch_size", 0, "--sub-batch-size must be a positive whole number, got 0"),
    ("sub_batch_size", 2.5, "--sub-batch-size must be a positive whole number, got 2.5"),
    ("sub_batch_size", 1_000_001, "--sub-batch-size must be at most 1000000, got 1000001"),
    ("sleep", -0.1, "--sleep must be zero or a positive number of seconds, got -0.1"),
    ("sleep", math.inf, "--sleep must be zero or a positive number of seconds, got inf"),
    ("sleep", None, "--sleep must be zero or a positive number of seconds, got None"),
    ("max_rows_per_second", 0, "--max-rows-per-second must be a positive number of rows per second, got 0"),
    ("max_rows_per_second", -1.0, "--max-rows-per-second must be a positive number of rows per second, got -1.0"),
    ("target_batch_seconds", 0.0, "--target-batch-seconds must be a positive number of seconds, got 0.0"),
    ("target_batch_seconds", math.nan, "--target-batch-seconds must be a positive number of seconds, got nan"),
    ("lock_timeout", 0, "--lock-timeout must be a positive number of seconds, got 0"),
    ("lock_timeout", None, "--lock-timeout must be a positive number of seconds, got None"),
    ("statement_timeout", -30, "--statement-timeout must be a positive number of seconds, got -30"),
    ("max_replication_lag", 0, "--max-replication-lag must be a positive number of seconds, got 0"),
    ("max_latency_ratio", -1, "--max-latency-ratio must be zero or a positive number, got -1"),
    ("max_latency_ratio", 1.0, "--max-latency-ratio must be 0 (off) or above 1, got 1.0"),
    ("max_row_errors", -1, "--max-row-errors must be zero or a positive whole number, got -1"),
    ("max_row_errors", 1.5, "--max-row-errors must be zero or a positive whole number, got 1.5"),
    ("partitions", 0, "--partitions must be a whole number from 1 to 64, got 0"),
    ("partitions", 65, "--partitions must be at most 64, got 65"),
]

GOOD_VALUES = [
    ("batch_size", 1), ("batch_size", 1_000_000), ("sleep", 0), ("sleep", 2.5),
    ("max_rows_per_second", None), ("max_rows_per_second", 0.5), ("target_batch_seconds", None),
    ("target_batch_seconds", 1), ("lock_timeout", 0.05), ("max_row_errors", 0), ("partitions", 1),
    ("partitions", 64),
]


def test_defaults_match_the_spec() -> None:
    options = RunOptions()
    options.validate()
    assert options.to_json() == {
        "batch_size": 10_000, "sub_batch_size": None, "sleep": 0.1, "max_rows_per_second": None, "target_batch_seconds": None,
        "lock_timeout": 2.0, "statement_timeout": 30.0, "max_replication_lag": 10.0,
        "max_row_errors": 1000, "partitions": 1, "max_latency_ratio": 1.5,
        "order": "auto",
    }


def test_rows_per_transaction_is_a_sub_batch_online_and_the_whole_batch_with_the_guard_off() -> None:
    assert RunOptions().rows_per_transaction(10_000) == 1_000
    assert RunOptions(max_latency_ratio=0).rows_per_transaction(10_000) == 10_000
    # the batch as it is now (after `set --batch-size` or a halving), not as enqueued
    assert RunOptions(batch_size=500, max_latency_ratio=0).rows_per_transaction(1_000) == 1_000
    assert RunOptions().rows_per_transaction(400) == 400
    assert RunOptions(sub_batch_size=2_500).rows_per_transaction(10_000) == 2_500
    assert RunOptions(sub_batch_size=2_500, max_latency_ratio=0).rows_per_transaction(10_000) == 2_500
    assert RunOptions(sub_batch_size=5_000).rows_per_transaction(2_000) == 2_000
    assert RunOptions.from_json({"sub_batch_size": 1_000, "max_latency_ratio": 0}).rows_per_transaction(10_000) == 1_000


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES, ids=[f"{n}={v!r}" for n, v, _ in BAD_VALUES])
def test_validate_rejects_bad_values(name: str, value: object, message: str) -> None:
    options = RunOptions(**{name: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError) as info:
        options.validate()
    assert str(info.value) == message
    with pytest.raises(ValueError, match=f"^{message.split(' must ')[0]} must "):
        RunOptions().replace(**{name: value})
    with pytest.raises(ValueError, match=f"^{message.split(' must ')[0]} must "):
        RunOptions.from_json({name: value})


@pytest.mark.parametrize(("name", "value"), GOOD_VALUES, ids=[f"{n}={v!r}" for n, v in GOOD_VALUES])
def test_validate_accepts_edge_values(name: str, value: object) -> None:
    assert getattr(RunOptions().replace(**{name: value}), name) == value


def test_json_round_trip_through_text() -> None:
    options = RunOptions(batch_size=500, sleep=0, max_rows_per_second=1000, target_batch_seconds=0.5,
                         lock_timeout=1, statement_timeout=60, max_replication_lag=3,
                         max_row_errors=0, partitions=8)
    back = RunOptions.from_json(json.loads(json.dumps(options.to_json())))
    assert back == options
    assert isinstance(back.sleep, float) and isinstance(back.max_rows_per_second, float)
    assert isinstance(back.batch_size, int)


def test_from_json_fills_missing_keys_with_defaults() -> None:
    assert RunOptions.from_json({"batch_size": 7}) == RunOptions(batch_size=7)
    assert RunOptions.from_json({}) == RunOptions()


@pytest.mark.parametrize("data", [{"batchsize": 10}, {"batch_size": 10, "tenant": "x"}, {"dry_run": True}])
def test_from_json_rejects_unknown_keys(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="unknown run option"):
        RunOptions.from_json(data)


def test_from_json_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="must be a JSON object"):
        RunOptions.from_json([("batch_size", 1)])  # type: ignore[arg-type]


def test_replace_is_a_validated_copy() -> None:
    options = RunOptions()
    changed = options.replace(batch_size=20, sleep=0.5)
    assert (changed.batch_size, changed.sleep) == (20, 0.5)
    assert options == RunOptions()
    with pytest.raises(ValueError, match="unknown run option"):
        options.replace(bacth_size=20)


def _part(part: int, processed: int, errors: int, done: bool, at: datetime) -> Progress:
    return Progress(part=part, lower_key=None, upper_key=None, cursor=None, done=done,
                    rows_processed=processed, rows_scanned=processed + errors + 1, batches=part + 1,
                    row_errors=errors, updated_at=at)


def _run(parts: tuple[Progress, ...], rows_estimate: int | None) -> Run:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    return Run(id="r", backfill="b", state="running", options=RunOptions(batch_size=77), tenant=None,
               parent_run_id=None, rows_estimate=rows_estimate, last_error=None, created_at=now,
               started_at=now, finished_at=None, updated_at=now, parts=parts)


def test_run_sums_and_estimates() -> None:
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    run = _run((_part(0, 10, 1, True, t0), _part(1, 5, 2, False, t0 + timedelta(seconds=3))), 100)
    assert (run.rows_processed, run.row_errors, run.batches, run.rows_scanned) == (15, 3, 3, 20)
    assert run.done is False
    assert run.last_progress_at == t0 + timedelta(seconds=3)
    assert run.rows_remaining_estimate == 82
    assert _run(run.parts, 10).rows_remaining_estimate == 0
    assert _run(run.parts, None).rows_remaining_estimate is None
    assert _run((_part(0, 1, 0, True, t0),), None).done is True


def test_status_json_has_the_spec_fields() -> None:
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    status = _run((_part(0, 10, 1, False, t0),), 50).to_status_json()
    for key in ("run_id", "backfill", "state", "rows_processed", "rows_remaining_estimate", "batches",
                "row_errors", "batch_size", "throttled", "created_at", "started_at", "finished_at",
                "eta_seconds", "tenant"):
        assert key in status
    assert status["batch_size"] == 77
    assert status["rows_remaining_estimate"] == 39
    assert status["created_at"] == "2024-05-01T12:00:00+00:00"
    assert status["finished_at"] is None
    assert status["throttled"] is None and status["eta_seconds"] is None
    assert status["parts"] == [{"part": 0, "lower_key": None, "upper_key": None, "cursor": None, "done": False,
                                "rows_processed": 10, "rows_scanned": 12, "batches": 1, "row_errors": 1,
                                "updated_at": "2024-05-01T12:00:00+00:00", "rows_skipped": 0,
                                "rows_still_locked": 0, "closing_pass": 0, "pass_start_rows": 0}]
    assert (status["rows_skipped_while_locked"], status["rows_still_locked"]) == (0, 0)
    assert (status["order"], status["order_reason"]) == ("key", None)
    json.dumps(status)
