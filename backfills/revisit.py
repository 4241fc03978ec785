"""Rows skipped while locked, looked up again before a part is finished.

A pass walks the part's skipped rows by key in chunks; what it finds decides what the
part does next (pure: `next_step`): finish, wait and look again, or give up on the rows
that stayed locked longer than the run's patience (they are reported, never dropped:
they stay recorded, and `verify` counts them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from backfills.batch import RevisitResult

__all__ = ["CHUNK", "PAUSE_SECONDS", "PassTotals", "Step", "next_step", "revisit_pass"]

CHUNK = 1000
PAUSE_SECONDS = 1.0


@dataclass(frozen=True)
class PassTotals:
    """What one pass over the skipped rows did."""

    changed: int = 0
    rejected: int = 0
    resolved: int = 0
    waiting: int = 0
    waited_seconds: float = 0.0

    def add(self, chunk: RevisitResult) -> PassTotals:
        """These totals with `chunk` folded in."""
        return PassTotals(self.changed + chunk.changed, self.rejected + chunk.rejected,
                          self.resolved + chunk.resolved, self.waiting + chunk.waiting,
                          max(self.waited_seconds, chunk.waited_seconds))


class Step(Enum):
    """What the part does after a pass."""

    FINISH = "finish"
    WAIT = "wait"
    GIVE_UP = "give_up"


def next_step(totals: PassTotals, patience_seconds: float) -> Step:
    """Finish when no skipped row is still locked; give up once the longest-waiting one
    has waited `patience_seconds`; else wait and look again."""
    if totals.waiting == 0:
        return Step.FINISH
    if totals.waited_seconds >= patience_seconds:
        return Step.GIVE_UP
    return Step.WAIT


def revisit_pass(chunk: Callable[[list[str] | None], RevisitResult | None]) -> PassTotals | None:
    """Every pending skipped row once, chunk after chunk (`chunk(after)` runs one);
    None when a chunk could not run (the lease was lost)."""
    totals, after = PassTotals(), None
    while True:
        result = chunk(after)
        if result is None:
            return None
        if result.last_key is None:
            return totals
        totals, after = totals.add(result), result.last_key
