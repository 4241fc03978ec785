"""Cross-cutting concerns of the batch loop as small hook objects.

The loop in `backfills.engine` only runs batches; everything else (control flags,
rate limits, sleeping, checkpoints, error limits, shutdown, metrics) is a hook. A hook
may adjust the slice's plan (batch size, sleep, throttle reason) and may return a
`Stop` to end the slice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from backfills.batch import BatchResult
from backfills.control import Checkpoint, KillSwitch, Lease, RunControl
from backfills.definition import Backfill
from backfills.reasons import ThrottleReason
from backfills.retry import Failure
from backfills.runs import Run, RunOptions, RunStore
from backfills.states import RunState

NAP_STEP = 0.2

__all__ = ["Hook", "SliceContext", "Stop", "StopKind", "ShutdownFlag", "ControlHook", "RateLimitHook", "SleepHook",
           "sleep_after", "CheckpointHook", "RowErrorLimitHook", "ShutdownHook", "KillSwitchHook"]


class StopKind(StrEnum):
    """Why a slice ends early."""

    PAUSE = "pause"                    # the run was paused
    CANCEL = "cancel"                  # the run was cancelled
    SHUTDOWN = "shutdown"              # the worker is stopping: the slice is re-queued
    KILL_SWITCH = "kill_switch"        # the namespace's kill switch: the run pauses
    THROTTLED = "throttled"            # waiting for the database past the slice's end: re-queued
    LOST_LEASE = "lost_lease"          # another worker may hold the part now
    STATE_CHANGED = "state_changed"    # the durable run left `running` under this slice
    FAILED = "failed"                  # the run fails with the message


@dataclass(frozen=True)
class Stop:
    """A slice ending early, and why."""

    kind: StopKind
    message: str = ""


@dataclass
class SliceContext:
    """What one slice of one run part is doing right now (hooks read and adjust it)."""

    run: Run
    part: int
    definition: Backfill
    options: RunOptions
    cursor: list[str] | None
    batch_size: int
    sleep: float
    batch_factor: float = 1.0
    rows_processed: int = 0
    batches: int = 0
    row_errors: int = 0
    throttled: ThrottleReason | None = None
    last_batch_seconds: float = 0.0
    run_row_errors_before: int = 0
    throttle_seconds: dict[str, float] = field(default_factory=dict)
    interrupted: Callable[[], StopKind | None] = lambda: None
    # what hooks keep between batches of the slice
    applied_batch_size: int | None = None      # the `set --batch-size` override last applied
    checkpointed: bool = False                 # the slice's first checkpoint is written
    lag_paused: bool = False                   # waiting for replication lag (hysteresis)
    pending_failure: Failure | None = None     # a failed attempt not yet counted by the metrics

    def nap(self, seconds: float) -> StopKind | None:
        """Sleep up to `seconds` in short steps; return early with the reason (pause,
        cancel, shutdown) when the run is stopped meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            reason = self.interrupted()
            left = deadline - time.monotonic()
            if reason is not None or left <= 0:
                return reason
            time.sleep(min(NAP_STEP, left))

    @property
    def effective_batch_size(self) -> int:
        """The size of the next batch: the planned size times any throttle factor."""
        return max(1, int(self.batch_size * self.batch_factor))

    def count_throttled(self, seconds: float) -> None:
        """Add `seconds` to the time throttled for the current reason (if throttled)."""
        if self.throttled is not None:
            self.throttle_seconds[self.throttled] = self.throttle_seconds.get(self.throttled, 0.0) + seconds

    def advance(self, result: BatchResult) -> None:
        """Fold a committed sub-batch into the context: its cursor and counters."""
        self.cursor = result.last_key
        self.rows_processed += result.changed
        self.row_errors += result.rejected

    def count_batch(self, result: BatchResult) -> None:
        """Count a finished batch (its sub-batches were folded in by `advance`)."""
        self.batches += 1
        self.last_batch_seconds = result.seconds

    def record(self, result: BatchResult) -> None:
        """Fold a finished batch of one sub-batch into the context."""
        self.advance(result)
        self.count_batch(result)


def requested_stop(requested: str | None) -> StopKind | None:
    """The stop a `pause` or `cancel` request asks for (None for `run` or nothing)."""
    return {"pause": StopKind.PAUSE, "cancel": StopKind.CANCEL}.get(requested or "")


def write_checkpoint(control: RunControl, ctx: SliceContext) -> None:
    """The live checkpoint of `ctx`'s part, for `status`, the exporter and the reconciler."""
    control.write_checkpoint(ctx.part, Checkpoint(
        cursor=ctx.cursor, rows_processed=ctx.rows_processed, batches=ctx.batches,
        row_errors=ctx.row_errors, at=time.time(), batch_size=ctx.effective_batch_size,
        last_batch_seconds=ctx.last_batch_seconds, throttled=ctx.throttled,
    ))


class Hook:
    """Base hook: every method is optional."""

    def before_batch(self, ctx: SliceContext) -> Stop | None:
        """Called before each batch; may adjust `ctx` or stop the slice."""
        return None

    def after_batch(self, ctx: SliceContext, result: BatchResult) -> Stop | None:
        """Called after each committed batch."""
        return None

    def on_failure(self, ctx: SliceContext, failure: Failure, error: BaseException) -> None:
        """Called when a batch attempt failed (before any retry)."""

    def on_slice_end(self, ctx: SliceContext, stop: Stop | None) -> None:
        """Called once when the slice ends, however it ends."""


class ControlHook(Hook):
    """pause / cancel / set from any machine: Redis flags every batch, the durable state
    every few seconds (so a Redis that lost its keys still cannot un-pause a run)."""

    def __init__(self, control: RunControl, store: RunStore, durable_every: float = 5.0) -> None:
        self.control = control
        self.store = store
        self.durable_every = durable_every
        self._checked_at = time.monotonic()

    def before_batch(self, ctx: SliceContext) -> Stop | None:
        requested = requested_stop(self.control.requested())
        if requested is not None:
            return Stop(requested)
        if time.monotonic() - self._checked_at >= self.durable_every:
            self._checked_at = time.monotonic()
            state = self.store.get(ctx.run.id).state
            if state == RunState.PAUSED:
                return Stop(StopKind.PAUSE)
            if state == RunState.CANCELLED:
                return Stop(StopKind.CANCEL)
            if state != RunState.RUNNING:
                return Stop(StopKind.STATE_CHANGED, f"run is {state}")
        overrides = self.control.overrides()
        wanted = overrides.get("batch_size")
        if wanted is not None and wanted != ctx.applied_batch_size:
            ctx.applied_batch_size = int(wanted)
            ctx.batch_size = int(wanted)
        ctx.sleep = float(overrides.get("sleep", ctx.options.sleep))
        if "max_rows_per_second" in overrides:
            ctx.options = ctx.options.replace(max_rows_per_second=float(overrides["max_rows_per_second"]))
        return None


class KillSwitchHook(Hook):
    """A global stop for every run of the namespace: the run pauses, nothing is lost."""

    def __init__(self, switch: KillSwitch) -> None:
        self.switch = switch

    def before_batch(self, ctx: SliceContext) -> Stop | None:
        reason = self.switch.reason()
        return Stop(StopKind.KILL_SWITCH, f"kill switch: {reason}") if reason else None


class RateLimitHook(Hook):
    """`--max-rows-per-second`: a token bucket in Redis shared by every worker of the run."""

    def __init__(self, control: RunControl) -> None:
        self.control = control

    def before_batch(self, ctx: SliceContext) -> Stop | None:
        rate = ctx.options.max_rows_per_second
        if not rate:
            return None
        wait = self.control.token_bucket(rate).take(ctx.effective_batch_size)
        if wait > 0:
            ctx.throttled = ThrottleReason.RATE_LIMIT
            reason = ctx.nap(wait)
            return Stop(reason) if reason else None
        if ctx.throttled is ThrottleReason.RATE_LIMIT:
            ctx.throttled = None
        return None


def sleep_after(sleep: float, result: BatchResult, batch_factor: float = 1.0) -> float:
    """The pause after a batch: `--sleep` after one that wrote rows (changed them, or
    recorded them as row errors), none after one that found nothing to do (a stretch
    already done, a closing pass over done rows): it held no row lock and wrote no WAL
    for the database to catch up on. `--sleep` is per batch of `--batch-size` rows: a batch
    a throttle shrank (`batch_factor` < 1: the guard's small steps, lock contention) is
    followed by as much less (the throttle adds its own wait)."""
    return sleep * min(1.0, batch_factor) if result.changed + result.rejected > 0 else 0.0


class SleepHook(Hook):
    """`--sleep` seconds between batches that wrote rows (`sleep_after`)."""

    def after_batch(self, ctx: SliceContext, result: BatchResult) -> Stop | None:
        pause = sleep_after(ctx.sleep, result, ctx.batch_factor)
        reason = ctx.nap(pause) if pause > 0 else None
        return Stop(reason) if reason else None


class CheckpointHook(Hook):
    """After each batch: the live checkpoint to Redis and the lease renewed."""

    def __init__(self, control: RunControl, lease: Lease) -> None:
        self.control = control
        self.lease = lease

    def _write(self, ctx: SliceContext) -> None:
        write_checkpoint(self.control, ctx)

    def before_batch(self, ctx: SliceContext) -> Stop | None:
        if ctx.batches == 0 and not ctx.checkpointed:
            ctx.checkpointed = True
            self._write(ctx)
        return None

    def after_batch(self, ctx: SliceContext, result: BatchResult) -> Stop | None:
        self._write(ctx)
        self.control.record_batch_seconds(result.seconds)
        if not self.lease.renew():
            return Stop(StopKind.LOST_LEASE, "the lease expired and another worker may hold this part")
        return None

    def on_slice_end(self, ctx: SliceContext, stop: Stop | None) -> None:
        self._write(ctx)


class RowErrorLimitHook(Hook):
    """Past `--max-row-errors` row errors (over the whole run) the run fails."""

    def after_batch(self, ctx: SliceContext, result: BatchResult) -> Stop | None:
        total = ctx.run_row_errors_before + ctx.row_errors
        limit = ctx.options.max_row_errors
        if total > limit:
            return Stop(StopKind.FAILED, f"{total} row errors, more than --max-row-errors {limit}; "
                                  f"see `backfill errors {ctx.run.id}`")
        return None


class ShutdownFlag(Protocol):
    """Set when the process is asked to stop (a `threading.Event` or a `multiprocessing.Event`)."""

    def is_set(self) -> bool:
        """Whether the stop was asked for."""


class ShutdownHook(Hook):
    """SIGTERM: the current batch finishes, then the slice ends and is re-queued."""

    def __init__(self, event: ShutdownFlag | None) -> None:
        self.event = event

    def before_batch(self, ctx: SliceContext) -> Stop | None:
        if self.event is not None and self.event.is_set():
            return Stop(StopKind.SHUTDOWN)
        return None
