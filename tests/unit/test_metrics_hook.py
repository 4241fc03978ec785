"""MetricsHook's accounting, event by event: every batch attempt counted once, under the
outcome the engine's sequence of hook calls implies. The recorder here is an in-memory
list (the Redis recorder is tested against a real Redis in tests/integration)."""

from __future__ import annotations

import logging

import pytest
import redis as redis_lib

from backfills.batch import BatchResult
from backfills.definition import Backfill
from backfills.hooks import SliceContext, Stop, StopKind
from backfills.retry import Failure
from backfills.runs import RunOptions
from monitoring.hook import MetricsHook

DEFINITION = Backfill(name="aois_status", table="aois", description="d", needs="t.status IS NULL",
                      sets={"status": "'ACTIVE'"})


class ListRecorder:
    """Records calls instead of writing to Redis."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail = fail

    def record_batch(self, backfill: str, outcome: str, rows: int, row_errors: int, seconds: float) -> None:
        self._call("batch", backfill, outcome, rows, row_errors, seconds)

    def record_attempt(self, backfill: str, outcome: str, lock_timeout: bool) -> None:
        self._call("attempt", backfill, outcome, lock_timeout)

    def _call(self, *call: object) -> None:
        if self.fail:
            raise redis_lib.ConnectionError("Redis is down")
        self.calls.append(call)


def context() -> SliceContext:
    return SliceContext(run=None, part=0, definition=DEFINITION, options=RunOptions(),  # type: ignore[arg-type]
                        cursor=None, batch_size=100, sleep=0)


def result(split: bool = False) -> BatchResult:
    return BatchResult(last_key=["k"], scanned=100, changed=97, rejected=3, seconds=0.04, split=split)


@pytest.fixture
def recorder() -> ListRecorder:
    return ListRecorder()


def test_committed_batches_are_ok_or_split(recorder: ListRecorder) -> None:
    hook, ctx = MetricsHook(recorder), context()  # type: ignore[arg-type]
    hook.after_batch(ctx, result())
    hook.after_batch(ctx, result(split=True))
    hook.on_slice_end(ctx, None)
    assert recorder.calls == [("batch", "aois_status", "ok", 97, 3, 0.04),
                              ("batch", "aois_status", "split", 97, 3, 0.04)]


def test_failed_attempts_followed_by_another_attempt_were_retried(recorder: ListRecorder) -> None:
    hook, ctx = MetricsHook(recorder), context()  # type: ignore[arg-type]
    error = RuntimeError("x")
    hook.on_failure(ctx, Failure.LOCK_TIMEOUT, error)
    hook.on_failure(ctx, Failure.TRANSIENT, error)
    hook.after_batch(ctx, result())
    assert recorder.calls == [("attempt", "aois_status", "retried", True),
                              ("attempt", "aois_status", "retried", False),
                              ("batch", "aois_status", "ok", 97, 3, 0.04)]


def test_an_attempt_whose_retries_ran_out_failed_the_run(recorder: ListRecorder) -> None:
    hook, ctx = MetricsHook(recorder), context()  # type: ignore[arg-type]
    hook.on_failure(ctx, Failure.STATEMENT_TIMEOUT, RuntimeError("x"))
    hook.on_failure(ctx, Failure.LOCK_TIMEOUT, RuntimeError("x"))
    hook.on_slice_end(ctx, Stop(StopKind.FAILED, "gave up after 300s of lock_timeout errors"))
    assert recorder.calls == [("attempt", "aois_status", "retried", False),
                              ("attempt", "aois_status", "failed", True)]


def test_a_fatal_failure_is_counted_failed_once(recorder: ListRecorder) -> None:
    hook, ctx = MetricsHook(recorder), context()  # type: ignore[arg-type]
    hook.on_failure(ctx, Failure.FATAL, RuntimeError("x"))
    hook.on_slice_end(ctx, Stop(StopKind.FAILED, "batch failed"))
    assert recorder.calls == [("attempt", "aois_status", "failed", False)]


@pytest.mark.parametrize("stop", [None, Stop(StopKind.LOST_LEASE), Stop(StopKind.SHUTDOWN)])
def test_a_retried_attempt_before_the_slice_ended_otherwise_was_retried(recorder: ListRecorder,
                                                                       stop: Stop | None) -> None:
    hook, ctx = MetricsHook(recorder), context()  # type: ignore[arg-type]
    hook.on_failure(ctx, Failure.TRANSIENT, RuntimeError("x"))
    hook.on_slice_end(ctx, stop)
    hook.on_slice_end(ctx, stop)
    assert recorder.calls == [("attempt", "aois_status", "retried", False)]


def test_row_error_limit_failing_the_run_does_not_count_a_failed_batch(recorder: ListRecorder) -> None:
    hook, ctx = MetricsHook(recorder), context()  # type: ignore[arg-type]
    hook.after_batch(ctx, result(split=True))
    hook.on_slice_end(ctx, Stop(StopKind.FAILED, "1001 row errors"))
    assert [c[2] for c in recorder.calls] == ["split"]


def test_slices_do_not_share_pending_attempts(recorder: ListRecorder) -> None:
    hook, first, second = MetricsHook(recorder), context(), context()  # type: ignore[arg-type]
    hook.on_failure(first, Failure.TRANSIENT, RuntimeError("x"))
    hook.after_batch(second, result())
    assert recorder.calls == [("batch", "aois_status", "ok", 97, 3, 0.04)]


def test_a_redis_failure_never_breaks_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    hook, ctx = MetricsHook(ListRecorder(fail=True)), context()  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="backfill.metrics"):
        assert hook.after_batch(ctx, result()) is None
        hook.on_failure(ctx, Failure.FATAL, RuntimeError("x"))
    assert "could not record batch metrics" in caplog.text
