"""The adaptive batch size (`--target-batch-seconds`): pure, smoothed, clamped. No IO.

Each batch's duration feeds an exponentially weighted average; the next size moves the
average toward the target, growing by at most 20% a step and shrinking by up to half,
with a dead band of ±10% so that noise does not make it oscillate. Lock contention halves
it at once. Sizes stay within [min_size, max_size]. `halved` is the one halving rule.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OptimizerState", "halved", "next_batch_size"]

GROWTH_CAP = 1.2
SHRINK_CAP = 0.5
DEAD_BAND = 0.1
SMOOTHING = 0.3


@dataclass(frozen=True)
class OptimizerState:
    """The smoothed batch duration so far (None before the first batch)."""

    smoothed_seconds: float | None = None

    def observe(self, seconds: float, rows: int, size: int) -> OptimizerState:
        """Fold in one batch, scaled to a full batch when it was short (the last one)."""
        full = seconds * (size / rows) if 0 < rows < size else seconds
        if self.smoothed_seconds is None:
            return OptimizerState(full)
        return OptimizerState(SMOOTHING * full + (1 - SMOOTHING) * self.smoothed_seconds)


def halved(size: int) -> int:
    """The batch size after a statement timeout or repeated lock timeouts: half, never
    below one row (a single-row batch that still times out fails the run instead)."""
    return max(1, size // 2)


def next_batch_size(size: int, state: OptimizerState, target_seconds: float, *, contention: bool = False,
                    min_size: int = 100, max_size: int = 100_000) -> int:
    """The size of the next batch with `--target-batch-seconds` (timeouts are not its
    decision: the engine halves the batch with `halved`)."""
    if contention:
        return max(min_size, min(max_size, halved(size)))
    if state.smoothed_seconds is None or state.smoothed_seconds <= 0:
        return max(min_size, min(max_size, size))
    ratio = target_seconds / state.smoothed_seconds
    if abs(ratio - 1) <= DEAD_BAND:
        ratio = 1.0
    ratio = max(SHRINK_CAP, min(GROWTH_CAP, ratio))
    return max(min_size, min(max_size, int(round(size * ratio))))
