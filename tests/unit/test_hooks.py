"""Each hook of the batch loop on its own, with in-memory fakes for the run store, the
run's Redis control, the lease and the health readings (the same hooks run against real
servers in tests/integration and tests/acceptance)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from backfills.batch import BatchResult
from backfills.control import Checkpoint
from backfills.definition import Backfill
from backfills.health import HealthReadings, LockReading, ReplicaReading
from backfills.hooks import (CheckpointHook, ControlHook, KillSwitchHook, RateLimitHook, RowErrorLimitHook,
                             ShutdownHook, SleepHook, SliceContext, Stop, StopKind, sleep_after)
from backfills.reasons import ThrottleReason
from backfills.retry import Failure
from backfills.runs import Run, RunOptions
from backfills.states import RunState
from backfills.throttle import AdaptiveBatchHook, ThrottleHook

DEFINITION = Backfill(name="aois_status", table="aois", description="d", needs="t.status IS NULL",
                      sets={"status": "'ACTIVE'"})
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_run(state: str = RunState.RUNNING, **options: object) -> Run:
    return Run(id="r1", backfill="aois_status", state=state, options=RunOptions(**options),
               tenant=None, parent_run_id=None, rows_estimate=None, last_error=None, created_at=NOW,
               started_at=NOW, finished_at=None, updated_at=NOW)


def context(run: Run | None = None, interrupted: StopKind | None = None, **fields: object) -> SliceContext:
    run = run or make_run()
    ctx = SliceContext(run=run, part=0, definition=DEFINITION, options=run.options, cursor=None,
                       batch_size=run.options.batch_size, sleep=run.options.sleep, interrupted=lambda: interrupted)
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


def result(seconds: float = 0.05, rejected: int = 0, scanned: int = 100) -> BatchResult:
    return BatchResult(last_key=["k"], scanned=scanned, changed=scanned - rejected, rejected=rejected,
                       seconds=seconds)


class FakeBucket:
    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.taken: list[int] = []

    def take(self, n: int) -> float:
        self.taken.append(n)
        return self.wait


class FakeControl:
    """The run's Redis state, in memory."""

    def __init__(self, requested: str | None = None, overrides: dict[str, float | int] | None = None,
                 wait: float = 0.0) -> None:
        self._requested = requested
        self._overrides = overrides or {}
        self.bucket = FakeBucket(wait)
        self.checkpoints: list[tuple[int, Checkpoint]] = []
        self.events: list[str] = []
        self.batch_seconds: list[float] = []

    def requested(self) -> str | None:
        return self._requested

    def overrides(self) -> dict[str, float | int]:
        return dict(self._overrides)

    def token_bucket(self, rate: float) -> FakeBucket:
        return self.bucket

    def write_checkpoint(self, part: int, checkpoint: Checkpoint) -> None:
        self.checkpoints.append((part, checkpoint))

    def record_batch_seconds(self, seconds: float) -> None:
        self.batch_seconds.append(seconds)

    def add_event(self, text: str, at: float | None = None) -> None:
        self.events.append(text)


class FakeStore:
    def __init__(self, run: Run) -> None:
        self.run = run

    def get(self, run_id: str) -> Run:
        assert run_id == self.run.id
        return self.run


class FakeLease:
    def __init__(self, held: bool = True) -> None:
        self.held = held
        self.renewals = 0

    def renew(self) -> bool:
        self.renewals += 1
        return self.held


class FakeSwitch:
    def __init__(self, reason: str | None) -> None:
        self._reason = reason

    def reason(self) -> str | None:
        return self._reason


class FakeMonitor:
    """Health readings in a given order; the last one repeats."""

    def __init__(self, *readings: HealthReadings) -> None:
        self.queue = list(readings)

    def readings(self, tables: list[str]) -> HealthReadings:
        return self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]


class Flag:
    def __init__(self, value: bool) -> None:
        self.value = value

    def is_set(self) -> bool:
        return self.value


HEALTHY = HealthReadings(replicas=(), locks=(), vacuuming=(), at=0.0)


def lagging(seconds: float) -> HealthReadings:
    return replace(HEALTHY, replicas=(ReplicaReading("standby", seconds, 0),))


# -- ControlHook -----------------------------------------------------------------------
@pytest.mark.parametrize(("requested", "kind"), [("pause", StopKind.PAUSE), ("cancel", StopKind.CANCEL)])
def test_control_stops_on_a_redis_request(requested: str, kind: StopKind) -> None:
    ctx = context()
    hook = ControlHook(FakeControl(requested=requested), FakeStore(ctx.run))
    assert hook.before_batch(ctx) == Stop(kind)


@pytest.mark.parametrize(("state", "expected"), [
    (RunState.PAUSED, Stop(StopKind.PAUSE)),
    (RunState.CANCELLED, Stop(StopKind.CANCEL)),
    (RunState.FAILED, Stop(StopKind.STATE_CHANGED, "run is failed")),
    (RunState.RUNNING, None),
])
def test_control_reads_the_durable_state_when_redis_says_nothing(state: str, expected: Stop | None) -> None:
    ctx = context()
    hook = ControlHook(FakeControl(), FakeStore(make_run(state)), durable_every=0)
    assert hook.before_batch(ctx) == expected


def test_control_applies_a_batch_size_override_once_and_the_live_sleep_and_rate() -> None:
    ctx = context()
    control = FakeControl(overrides={"batch_size": 250, "sleep": 0.5, "max_rows_per_second": 80.0})
    hook = ControlHook(control, FakeStore(ctx.run))
    assert hook.before_batch(ctx) is None
    assert (ctx.batch_size, ctx.applied_batch_size, ctx.sleep) == (250, 250, 0.5)
    assert ctx.options.max_rows_per_second == 80.0
    ctx.batch_size = 125  # halved since by the engine: the same override is not applied again
    assert hook.before_batch(ctx) is None
    assert ctx.batch_size == 125


# -- KillSwitchHook, ShutdownHook --------------------------------------------------------
def test_the_kill_switch_stops_with_its_own_kind_and_reason() -> None:
    assert KillSwitchHook(FakeSwitch("incident 42")).before_batch(context()) == Stop(
        StopKind.KILL_SWITCH, "kill switch: incident 42")
    assert KillSwitchHook(FakeSwitch(None)).before_batch(context()) is None


def test_shutdown_stops_once_the_flag_is_set() -> None:
    assert ShutdownHook(Flag(True)).before_batch(context()) == Stop(StopKind.SHUTDOWN)
    assert ShutdownHook(Flag(False)).before_batch(context()) is None
    assert ShutdownHook(None).before_batch(context()) is None


# -- RateLimitHook, SleepHook ------------------------------------------------------------
def test_rate_limit_takes_the_batch_from_the_bucket_and_waits_when_told() -> None:
    ctx = context(make_run(max_rows_per_second=100.0, batch_size=40))
    control = FakeControl(wait=0.0)
    assert RateLimitHook(control).before_batch(ctx) is None
    assert control.bucket.taken == [40] and ctx.throttled is None
    control.bucket.wait = 0.01
    assert RateLimitHook(control).before_batch(ctx) is None
    assert ctx.throttled is ThrottleReason.RATE_LIMIT
    control.bucket.wait = 0.0
    RateLimitHook(control).before_batch(ctx)
    assert ctx.throttled is None


def test_rate_limit_wait_is_cut_short_by_a_pause() -> None:
    ctx = context(make_run(max_rows_per_second=1.0), interrupted=StopKind.PAUSE)
    assert RateLimitHook(FakeControl(wait=60.0)).before_batch(ctx) == Stop(StopKind.PAUSE)


def test_no_rate_limit_touches_no_bucket() -> None:
    control = FakeControl(wait=60.0)
    assert RateLimitHook(control).before_batch(context()) is None
    assert control.bucket.taken == []


def test_sleep_between_batches_is_cut_short_by_a_cancel() -> None:
    ctx = context(interrupted=StopKind.CANCEL, sleep=60.0)
    assert SleepHook().after_batch(ctx, result()) == Stop(StopKind.CANCEL)
    assert SleepHook().after_batch(context(sleep=0.0), result()) is None


def test_a_batch_that_wrote_nothing_is_not_followed_by_the_sleep() -> None:
    nothing = BatchResult(last_key=["k"], scanned=10_000, changed=0, rejected=0, seconds=0.01)
    assert sleep_after(0.1, nothing) == 0.0
    assert sleep_after(0.1, result()) == 0.1                      # changed rows
    assert sleep_after(0.1, result(rejected=100)) == 0.1          # only row errors recorded: still a write
    ctx = context(interrupted=StopKind.CANCEL, sleep=60.0)
    assert SleepHook().after_batch(ctx, nothing) is None          # no nap, so nothing to cut short


def test_a_batch_a_throttle_shrank_sleeps_in_proportion() -> None:
    """`--sleep` is per `--batch-size` rows: the guard's 64th of a batch is followed by a
    64th of the sleep (its own pace comes on top), never more than the whole sleep."""
    assert sleep_after(0.1, result(), batch_factor=1 / 64) == pytest.approx(0.1 / 64)
    assert sleep_after(0.1, result(), batch_factor=0.5) == pytest.approx(0.05)
    assert sleep_after(0.1, result(), batch_factor=2.0) == 0.1
    slept: list[float] = []
    ctx = context(sleep=0.1, batch_factor=0.25)
    ctx.nap = lambda seconds: slept.append(seconds)  # type: ignore[method-assign]
    assert SleepHook().after_batch(ctx, result()) is None
    assert slept == [pytest.approx(0.025)]


# -- CheckpointHook ------------------------------------------------------------------------
def test_checkpoint_written_once_before_the_first_batch_then_after_each_and_at_the_end() -> None:
    ctx, control, lease = context(), FakeControl(), FakeLease()
    hook = CheckpointHook(control, lease)
    hook.before_batch(ctx)
    hook.before_batch(ctx)
    assert len(control.checkpoints) == 1 and ctx.checkpointed
    ctx.record(result(seconds=0.2))
    assert hook.after_batch(ctx, result(seconds=0.2)) is None
    hook.on_slice_end(ctx, None)
    assert len(control.checkpoints) == 3 and control.batch_seconds == [0.2] and lease.renewals == 1
    assert control.checkpoints[-1][1].batches == 1


def test_checkpoint_stops_the_slice_when_the_lease_is_lost() -> None:
    stop = CheckpointHook(FakeControl(), FakeLease(held=False)).after_batch(context(), result())
    assert stop is not None and stop.kind is StopKind.LOST_LEASE


# -- RowErrorLimitHook ---------------------------------------------------------------------
def test_row_errors_over_the_whole_run_past_the_limit_fail_it() -> None:
    ctx = context(make_run(max_row_errors=5), run_row_errors_before=4)
    ctx.record(result(rejected=1))
    assert RowErrorLimitHook().after_batch(ctx, result(rejected=1)) is None
    ctx.record(result(rejected=1))
    stop = RowErrorLimitHook().after_batch(ctx, result(rejected=1))
    assert stop is not None and stop.kind is StopKind.FAILED and stop.message.startswith("6 row errors")


# -- ThrottleHook ----------------------------------------------------------------------------
def throttle(monitor: FakeMonitor, control: FakeControl | None = None, held: bool = True,
             deadline: float = 1e12) -> ThrottleHook:
    return ThrottleHook(monitor, control or FakeControl(), FakeLease(held).renew,
                        lambda: deadline)


def test_healthy_readings_clear_a_health_reason_but_not_another() -> None:
    ctx = context(throttled=ThrottleReason.AUTOVACUUM)
    assert throttle(FakeMonitor(HEALTHY)).before_batch(ctx) is None
    assert ctx.throttled is None
    ctx.throttled = ThrottleReason.RATE_LIMIT
    throttle(FakeMonitor(HEALTHY)).before_batch(ctx)
    assert ctx.throttled is ThrottleReason.RATE_LIMIT


def test_lock_waiters_slow_the_next_batch() -> None:
    ctx = context()
    waiting = replace(HEALTHY, locks=(LockReading("aois", 3, 0.5, 0),))
    assert throttle(FakeMonitor(waiting)).before_batch(ctx) is None
    assert ctx.throttled is ThrottleReason.LOCK_WAITERS and ctx.batch_factor == 0.75


def test_replication_lag_waits_with_hysteresis_and_writes_a_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SliceContext, "nap", lambda self, seconds: None)
    ctx, control = context(), FakeControl()
    monitor = FakeMonitor(lagging(30.0), lagging(6.0), lagging(4.0))  # max 10 s: resume only below 5 s
    assert throttle(monitor, control).before_batch(ctx) is None
    assert control.events == ["throttled: replication_lag; waiting before the next batch"]
    assert len(control.checkpoints) == 2 and ctx.lag_paused is False
    assert monitor.queue == [lagging(4.0)]


def test_a_wait_past_the_slice_end_hands_the_part_back() -> None:
    stop = throttle(FakeMonitor(lagging(30.0)), deadline=0).before_batch(context())
    assert stop == Stop(StopKind.THROTTLED, ThrottleReason.REPLICATION_LAG)


def test_a_lost_lease_while_throttled_stops_the_slice() -> None:
    stop = throttle(FakeMonitor(replace(HEALTHY, replicas=None)), held=False).before_batch(context())
    assert stop is not None and stop.kind is StopKind.LOST_LEASE


# -- AdaptiveBatchHook -----------------------------------------------------------------------
def test_adaptive_size_moves_toward_the_target_and_halves_under_contention() -> None:
    ctx = context(make_run(target_batch_seconds=1.0, batch_size=1000))
    hook = AdaptiveBatchHook()
    hook.after_batch(ctx, result(seconds=0.1, scanned=1000))
    assert ctx.batch_size == 1200  # at most +20% a step
    ctx.throttled = ThrottleReason.LOCK_CONTENTION
    hook.after_batch(ctx, result(seconds=0.1, scanned=1200))
    assert ctx.batch_size == 600
    hook.on_failure(ctx, Failure.STATEMENT_TIMEOUT, RuntimeError())
    assert hook.state.smoothed_seconds is None


def test_adaptive_size_is_off_without_a_target() -> None:
    ctx = context()
    AdaptiveBatchHook().after_batch(ctx, result(seconds=10.0))
    assert ctx.batch_size == RunOptions().batch_size
