"""Sub-batches: a batch committed in several short transactions. Pure, no IO.

A batch is the unit of pacing (the sleep, the rate limit, the health signals and the
guard act between batches); a sub-batch is the unit of commit. Committing every
`--sub-batch-size` rows keeps each row lock short: an application transaction that
meets a row of the batch waits for one sub-batch, not for the whole batch (measured on
`aois_status` at 1M rows beside a point-update load: p99 96 ms with 10,000-row
transactions, 6.6 ms with 1,000-row ones, at the same rows per second). Each sub-batch
moves the durable cursor and the exact counters in its own transaction, so a crash
between two of them loses nothing and redoes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from backfills.batch import BatchResult

__all__ = ["sub_batch_limits", "combine"]


def sub_batch_limits(batch_size: int, sub_batch_size: int) -> Iterator[int]:
    """The row limit of each sub-batch of a `batch_size` batch: whole sub-batches, then
    the rest (one sub-batch when `sub_batch_size` >= `batch_size`)."""
    if batch_size < 1 or sub_batch_size < 1:
        raise ValueError(f"batch sizes must be positive, got {batch_size} and {sub_batch_size}")
    left = batch_size
    while left > 0:
        limit = min(left, sub_batch_size)
        yield limit
        left -= limit


def combine(done: Sequence[BatchResult]) -> BatchResult:
    """One batch's result from its committed sub-batches (in order): the last cursor,
    the sums, the time of all of them. No sub-batch: the part has no rows left."""
    if not done:
        return BatchResult(None, 0, 0, 0, 0.0)
    return BatchResult(done[-1].last_key, sum(r.scanned for r in done), sum(r.changed for r in done),
                       sum(r.rejected for r in done), sum(r.seconds for r in done),
                       split=any(r.split for r in done), skipped=sum(r.skipped for r in done))
