"""`MetricsHook`: the engine's batches, counted into Redis (see `monitoring.recorder`).

Every batch attempt is counted exactly once, under one outcome:

- a committed batch: `ok`, or `split` when it was bisected around bad rows (`after_batch`);
- an attempt that failed on something retrying may fix (transient, lock or statement
  timeout): `retried` once the engine actually tries again, or `failed` when the slice
  ends with the run failed instead (the retry window ran out);
- an attempt that failed on something retrying will not fix: `failed` (`on_failure`).

Whether a failed attempt was retried is only known at the next event of the slice, so
the hook parks it in the slice's context until then: the hook itself holds no state and
may serve concurrent slices. Metrics never break a batch: a Redis error while recording
is logged and the batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis as redis_lib

from backfills.batch import BatchResult
from backfills.hooks import Hook, SliceContext, Stop, StopKind
from backfills.retry import Failure
from monitoring.recorder import MetricsRecorder

__all__ = ["MetricsHook"]

log = logging.getLogger("backfill.metrics")


class MetricsHook(Hook):
    """Records rows, row errors, outcomes, durations and lock timeouts of every batch."""

    def __init__(self, recorder: MetricsRecorder) -> None:
        self.recorder = recorder

    def after_batch(self, ctx: SliceContext, result: BatchResult) -> Stop | None:
        self._settle(ctx, "retried")
        self._safely(self.recorder.record_batch, ctx.definition.name, result.outcome, result.changed,
                     result.rejected, result.seconds)
        return None

    def on_failure(self, ctx: SliceContext, failure: Failure, error: BaseException) -> None:
        self._settle(ctx, "retried")
        if failure is Failure.FATAL:
            self._safely(self.recorder.record_attempt, ctx.definition.name, "failed", False)
        else:
            ctx.pending_failure = failure

    def on_slice_end(self, ctx: SliceContext, stop: Stop | None) -> None:
        self._settle(ctx, "failed" if stop is not None and stop.kind is StopKind.FAILED else "retried")

    def _settle(self, ctx: SliceContext, outcome: str) -> None:
        """Count the attempt parked by `on_failure`, if any, under `outcome`."""
        failure, ctx.pending_failure = ctx.pending_failure, None
        if failure is not None:
            self._safely(self.recorder.record_attempt, ctx.definition.name, outcome,
                         failure is Failure.LOCK_TIMEOUT)

    @staticmethod
    def _safely(record: Callable[..., None], *args: object) -> None:
        try:
            record(*args)
        except redis_lib.RedisError as exc:
            log.warning("could not record batch metrics in Redis: %s", exc)
