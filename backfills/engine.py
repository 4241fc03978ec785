"""The slice runner: runs batches of one run part for a bounded time, then hands back.

A Celery task calls `SliceRunner.run_slice` and re-queues itself while the outcome is
`CONTINUE`, so no task nears the broker's visibility timeout. A Redis lease per part
guarantees one runner per part; the durable cursor in PostgreSQL is the truth the
runner starts from, so a lost Redis or a killed worker costs at most one batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

import sqlalchemy as sa

from backfills.batch import (BatchExecutor, BatchResult, LostRace, Timeouts, count_remaining, error_text,
                             read_key_columns, sqlstate)
from backfills.control import KillSwitch, Lease, RunControl
from backfills.definition import Backfill
from backfills.foreground import ForegroundMonitor, LatencyProbe
from backfills.probe_sampler import ProbeSampler, Samplers
from backfills.guard_hook import ForegroundGuardHook
from backfills.hooks import (CheckpointHook, ControlHook, Hook, KillSwitchHook, RateLimitHook, RowErrorLimitHook,
                             ShutdownFlag, ShutdownHook, SleepHook, SliceContext, Stop, StopKind, requested_stop,
                             write_checkpoint)
from backfills.executors import executor_for
from backfills.optimizer import halved
from backfills.reasons import RETRY_REASONS, ThrottleReason
from backfills.order import CLOSING_PASS_LIMIT, PassDecision
from backfills.registry import Registry
from backfills.retry import Failure, RetryPolicy, classify
from backfills.throttle import AdaptiveBatchHook, HealthMonitor, ThrottleHook
from backfills.revisit import CHUNK as REVISIT_CHUNK
from backfills.revisit import PAUSE_SECONDS as REVISIT_PAUSE
from backfills.revisit import Step, next_step, revisit_pass
from backfills.runs import Run, RunStore
from backfills.states import RunState
from backfills.sub_batches import combine, sub_batch_limits
from backfills.throttle_time import ThrottleTimeStore

__all__ = ["SliceOutcome", "SliceRunner", "BatchFailed"]


_T = TypeVar("_T")


class SliceOutcome(Enum):
    """What the task should do next."""

    CONTINUE = "continue"        # re-queue: more to do
    DONE = "done"                # the part is finished
    STOPPED = "stopped"          # the slice ends and is not re-queued (paused, cancelled, failed, lost lease)
    BUSY = "busy"                # another worker holds the part's lease
    NOT_RUNNABLE = "not_runnable"


class BatchFailed(Exception):
    """A batch failed for a reason retrying will not fix; the run fails with it."""


@dataclass(frozen=True)
class _Finished:
    """The part has no keys left."""


class SliceRunner:
    """Runs slices of run parts. One per worker process; stateless between slices."""

    def __init__(self, engine: sa.Engine, control_factory: Callable[[str], RunControl], registry: Registry,
                 *, lease_seconds: float, slice_seconds: float, retry: RetryPolicy,
                 shutdown: ShutdownFlag | None = None, extra_hooks: Sequence[Hook] = ()) -> None:
        self.engine = engine
        self.store = RunStore(engine)
        self.control_factory = control_factory
        self.registry = registry
        self.lease_seconds = lease_seconds
        self.slice_seconds = slice_seconds
        self.retry = retry
        self.shutdown = shutdown
        self.extra_hooks = tuple(extra_hooks)
        self.samplers = Samplers()

    # -- public ----------------------------------------------------------------------
    def run_slice(self, run_id: str, part: int) -> SliceOutcome:
        """Run batches of `part` of `run_id` for up to `slice_seconds`; the lease is let go."""
        outcome, token = self.run_slice_continuing(run_id, part, None)
        if token is not None:
            lease = self.control_factory(run_id).lease(part, self.lease_seconds)
            lease.token = token
            lease.release()
        return outcome

    def run_slice_continuing(self, run_id: str, part: int,
                             lease_token: str | None) -> tuple[SliceOutcome, str | None]:
        """Like `run_slice`, but on CONTINUE the part's lease stays held and its token is
        returned, for the next slice's task to take over: between slices no other task
        (a duplicate, a re-queue by the reconciler) can start a second chain of slices."""
        control = self.control_factory(run_id)
        lease = control.lease(part, self.lease_seconds)
        if not self._take(lease, lease_token):
            return SliceOutcome.BUSY, None
        keep = False
        try:
            run = self.store.get(run_id)
            if run.state not in (RunState.QUEUED, RunState.RUNNING) or part >= len(run.parts) \
                    or requested_stop(control.requested()) is not None:
                return SliceOutcome.NOT_RUNNABLE, None
            outcome = self._run_leased(run, part, control, lease)
            keep = outcome is SliceOutcome.CONTINUE and lease.renew()
            return outcome, lease.token if keep else None
        finally:
            if not keep:
                lease.release()

    @staticmethod
    def _take(lease: Lease, token: str | None) -> bool:
        """Take over a lease handed on by the previous slice, or acquire a free one."""
        if token is not None:
            lease.token = token
            if lease.renew():
                return True
        return lease.acquire()

    # -- internals -------------------------------------------------------------------
    def _run_leased(self, run: Run, part: int, control: RunControl, lease: Lease) -> SliceOutcome:
        if run.state == RunState.QUEUED:  # another part's task may have started the run already
            run = self.store.transition(run.id, RunState.RUNNING, expected=[RunState.QUEUED, RunState.RUNNING])
        progress = run.parts[part]
        if progress.done:
            return self._finish_if_complete(run.id, part, control)
        definition = self.registry.get(run.backfill)
        ctx = SliceContext(run=run, part=part, definition=definition, options=run.options,
                           cursor=progress.cursor, batch_size=self._starting_size(run, part, control),
                           sleep=run.options.sleep,
                           rows_processed=progress.rows_processed, batches=progress.batches,
                           row_errors=progress.row_errors,
                           run_row_errors_before=run.row_errors - progress.row_errors,
                           interrupted=lambda: self._interrupted(control))
        deadline = time.monotonic() + self.slice_seconds
        hooks = self._hooks(control, lease, deadline)
        try:
            executor = executor_for(self.engine, run, part, definition)
            stop = self._loop(ctx, executor, hooks, lease, control, deadline)
        except BatchFailed as exc:
            stop = Stop(StopKind.FAILED, str(exc))
        for hook in hooks:
            hook.on_slice_end(ctx, stop if isinstance(stop, Stop) else None)
        ThrottleTimeStore(self.engine).add(run.id, ctx.throttle_seconds)
        return self._conclude(run, part, stop, control)

    def _interrupted(self, control: RunControl) -> StopKind | None:
        """pause / cancel / shutdown, if any was asked for."""
        if self.shutdown is not None and self.shutdown.is_set():
            return StopKind.SHUTDOWN
        return requested_stop(control.requested())

    @staticmethod
    def _starting_size(run: Run, part: int, control: RunControl) -> int:
        """The configured size, or with `--target-batch-seconds` the size it had adapted to."""
        checkpoint = control.checkpoints().get(part)
        if run.options.target_batch_seconds and checkpoint is not None and checkpoint.batch_size > 0:
            return checkpoint.batch_size
        return run.options.batch_size

    def _hooks(self, control: RunControl, lease: Lease, deadline: float) -> list[Hook]:
        monitor = HealthMonitor(self.engine, control.client, control.namespace)
        guard = ForegroundGuardHook(lambda ctx: self._foreground(ctx, control), control, lease.renew,
                                    lambda: deadline)
        return [ShutdownHook(self.shutdown), KillSwitchHook(KillSwitch(control.client, control.namespace)),
                ControlHook(control, self.store), ThrottleHook(monitor, control, lease.renew, lambda: deadline),
                guard,
                RateLimitHook(control), *self.extra_hooks, CheckpointHook(control, lease), AdaptiveBatchHook(),
                RowErrorLimitHook(), SleepHook()]

    def _foreground(self, ctx: SliceContext, control: RunControl) -> ForegroundMonitor:
        """The guard's shared reading of the run's table, probed on this worker's connections."""
        with self.engine.connect() as conn:
            key = read_key_columns(conn, ctx.definition)
        probe = LatencyProbe(self.engine, ctx.definition.qualified_table, tuple(k.name for k in key))
        monitor = ForegroundMonitor(probe, control.client, control.namespace, lambda: self.samplers.ensure(
            monitor.key, lambda: ProbeSampler(probe, control.client, monitor.key)))
        return monitor

    def _loop(self, ctx: SliceContext, executor: BatchExecutor, hooks: list[Hook], lease: Lease,
              control: RunControl, deadline: float) -> Stop | _Finished | None:
        while time.monotonic() < deadline:
            stop = self._before_batch(ctx, hooks)
            if stop is not None:
                return stop
            reason = ctx.interrupted()  # hooks may have waited: look again right before the batch
            if reason is not None:
                return Stop(reason)
            result = self._batch(ctx, executor, hooks, lease, control)
            if result is None:
                return Stop(StopKind.LOST_LEASE, "another worker moved this part's cursor")
            if result.last_key is None:
                return self._close_part(ctx, executor, hooks, lease, control, deadline)
            ctx.count_batch(result)
            for hook in hooks:
                stop = hook.after_batch(ctx, result)
                if stop is not None:
                    return stop
        return None

    def _batch(self, ctx: SliceContext, executor: BatchExecutor, hooks: list[Hook], lease: Lease,
               control: RunControl) -> BatchResult | None:
        """One batch as its sub-batches, each committed (and retried) on its own, or as one
        striped block range that commits its stripes itself; None when the lease was lost.
        The counters move with every transaction, the cursor with every sub-batch or range."""
        done: list[BatchResult] = []
        size = ctx.effective_batch_size
        per_transaction = ctx.options.rows_per_transaction(size)
        whole = executor.commits_own_transactions(size, per_transaction)
        for limit in [size] if whole else sub_batch_limits(size, per_transaction):
            opens = not done
            # a retry after a statement timeout runs the smaller size the timeout left
            result = self._with_retries(
                ctx, lambda t: executor.run(ctx.cursor, min(limit, ctx.effective_batch_size), t, opens), hooks,
                lease, control)
            if result is None:
                return None
            if result.last_key is None:
                break
            ctx.advance(result)
            done.append(result)
        return combine(done)

    @staticmethod
    def _before_batch(ctx: SliceContext, hooks: list[Hook]) -> Stop | None:
        """Every hook's `before_batch`; the time they take while throttled is counted."""
        ctx.batch_factor = 1.0
        started = time.monotonic()
        try:
            for hook in hooks:
                stop = hook.before_batch(ctx)
                if stop is not None:
                    return stop
            return None
        finally:
            ctx.count_throttled(time.monotonic() - started)

    def _close_part(self, ctx: SliceContext, executor: BatchExecutor, hooks: list[Hook], lease: Lease,
                    control: RunControl, deadline: float) -> Stop | _Finished | None:
        """The rows skipped while locked, looked up again until none is left (or the run's
        patience runs out); then the part is done."""
        while True:
            totals = revisit_pass(lambda after: self._with_retries(
                ctx, lambda t: executor.revisit(ctx.cursor, after, REVISIT_CHUNK, t), hooks, lease, control))
            if totals is None:
                return Stop(StopKind.LOST_LEASE, "another worker moved this part's cursor")
            ctx.rows_processed += totals.changed
            ctx.row_errors += totals.rejected
            write_checkpoint(control, ctx)
            step = next_step(totals, self.retry.window_seconds)
            if step is Step.GIVE_UP:
                control.add_event(f"{totals.waiting} skipped row(s) stayed locked for more than "
                                  f"{self.retry.window_seconds:.0f}s; left as they are for `backfill verify`")
            if step is not Step.WAIT:
                self.store.mark_part_done(ctx.run.id, ctx.part)
                return _Finished()
            if not lease.renew():
                return Stop(StopKind.LOST_LEASE, "the lease expired while waiting for locked rows")
            if time.monotonic() + REVISIT_PAUSE >= deadline:
                return None
            reason = ctx.nap(REVISIT_PAUSE)
            if reason is not None:
                return Stop(reason)

    def _with_retries(self, ctx: SliceContext, work: Callable[[Timeouts], _T], hooks: list[Hook],
                      lease: Lease, control: RunControl) -> _T | None:
        """`work` with the run's timeouts, retried with back-off on transient failures;
        None when the lease was lost."""
        failing_since: float | None = None
        attempt = 0
        lock_timeouts = 0
        while True:
            timeouts = Timeouts(lock=ctx.options.lock_timeout, statement=ctx.options.statement_timeout)
            try:
                result = work(timeouts)
                if ctx.throttled in RETRY_REASONS:
                    ctx.throttled = None
                if failing_since is not None and attempt:
                    control.add_event(f"recovered after {time.monotonic() - failing_since:.1f}s "
                                      f"and {attempt} retr{'y' if attempt == 1 else 'ies'}")
                return result
            except LostRace:
                if not lease.renew():
                    return None
                self._reload_progress(ctx)  # our own commit whose acknowledgement was lost
                continue
            except sa.exc.DBAPIError as exc:
                failure = classify(sqlstate(exc), isinstance(exc, sa.exc.OperationalError))
                for hook in hooks:
                    hook.on_failure(ctx, failure, exc)
                if failure is Failure.FATAL:
                    raise BatchFailed(f"batch after {ctx.cursor} failed: {error_text(exc)}") from None
                if failing_since is None:
                    failing_since = time.monotonic()
                    control.add_event(f"{failure.value}: {error_text(exc)}; retrying with back-off")
                if self.retry.gives_up(time.monotonic() - failing_since):
                    raise BatchFailed(f"gave up after {self.retry.window_seconds:.0f}s of {failure.value} "
                                      f"errors: {error_text(exc)}") from None
                attempt += 1
                lock_timeouts = lock_timeouts + 1 if failure is Failure.LOCK_TIMEOUT else 0
                self._adapt(ctx, failure, lock_timeouts, control)
                write_checkpoint(control, ctx)
                time.sleep(self.retry.delay(attempt))
                lease.renew()

    @staticmethod
    def _adapt(ctx: SliceContext, failure: Failure, lock_timeouts: int, control: RunControl) -> None:
        if failure is Failure.STATEMENT_TIMEOUT:
            timed_out = ctx.options.rows_per_transaction(ctx.batch_size)  # the statement was one sub-batch
            if timed_out == 1:
                raise BatchFailed(f"a single-row batch after {ctx.cursor} exceeded statement_timeout")
            ctx.batch_size = halved(timed_out)
            ctx.throttled = ThrottleReason.STATEMENT_TIMEOUT
            # kept for the following slices too, and visible as the run's batch size
            control.set_overrides(batch_size=ctx.batch_size)
            ctx.applied_batch_size = ctx.batch_size
            control.add_event(f"statement_timeout: batch size halved to {ctx.batch_size}")
        elif failure is Failure.LOCK_TIMEOUT:
            ctx.throttled = ThrottleReason.LOCK_TIMEOUT
            if lock_timeouts >= 2:
                ctx.batch_size = halved(ctx.batch_size)
        else:
            ctx.throttled = ThrottleReason.DATABASE_UNAVAILABLE

    def _reload_progress(self, ctx: SliceContext) -> None:
        progress = self.store.get(ctx.run.id).parts[ctx.part]
        ctx.cursor = progress.cursor
        ctx.rows_processed, ctx.batches, ctx.row_errors = progress.rows_processed, progress.batches, progress.row_errors

    def _conclude(self, run: Run, part: int, stop: Stop | _Finished | None, control: RunControl) -> SliceOutcome:
        if stop is None:
            return SliceOutcome.CONTINUE
        if isinstance(stop, _Finished):
            return self._finish_if_complete(run.id, part, control)
        if stop.kind in (StopKind.SHUTDOWN, StopKind.THROTTLED):
            return SliceOutcome.CONTINUE
        if stop.kind is StopKind.FAILED:
            self.store.transition(run.id, RunState.FAILED, expected=[RunState.RUNNING], error=stop.message)
        elif stop.kind is StopKind.KILL_SWITCH:
            self.store.transition(run.id, RunState.PAUSED, expected=[RunState.RUNNING], error=stop.message)
        return SliceOutcome.STOPPED

    def _finish_if_complete(self, run_id: str, part: int, control: RunControl) -> SliceOutcome:
        run = self.store.get(run_id)
        if not (run.done and run.state == RunState.RUNNING):
            return SliceOutcome.DONE
        if run.order == "physical":
            decision = self.store.close_pass(run_id, part)
            if decision is None:
                return SliceOutcome.DONE
            if decision is PassDecision.AGAIN:
                pass_no = self.store.get(run_id).parts[part].closing_pass
                control.add_event(f"part {part}: closing pass {pass_no} over the whole table "
                                  f"(rows may have moved behind the cursor)")
                return SliceOutcome.CONTINUE
            if decision is PassDecision.GIVE_UP:
                return self._give_up(run, control)
        final = RunState.COMPLETED_WITH_ERRORS if run.row_errors > 0 else RunState.SUCCEEDED
        self.store.transition(run_id, final, expected=[RunState.RUNNING, final])  # another part may have ended it
        return SliceOutcome.DONE

    def _give_up(self, run: Run, control: RunControl) -> SliceOutcome:
        """The closing-pass limit is reached while rows keep needing the backfill: the run
        ends `completed_with_errors`, saying how many rows are left."""
        left = count_remaining(self.engine, self.registry.get(run.backfill), run.tenant)
        message = (f"{left:,} rows still need the backfill after {CLOSING_PASS_LIMIT} closing passes "
                   f"(rows keep changing under the run); run it again, `backfill verify` counts them")
        control.add_event(message)
        self.store.transition(run.id, RunState.COMPLETED_WITH_ERRORS,
                              expected=[RunState.RUNNING, RunState.COMPLETED_WITH_ERRORS], error=message)
        return SliceOutcome.DONE
