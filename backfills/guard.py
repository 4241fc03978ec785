"""The foreground guard's decision: pure, from plain latency ratios. No IO.

A ratio is what the application would feel now (a durable commit, an indexed read)
over the same measured while the run was idle. The guard has three levels: `CONTINUE`,
`SLOW` (smaller batches, longer sleeps) and `PAUSE` (no batch until the latency comes
back). It steps up one level per reading, so a run slows down before it pauses. It
looks at the median of the last few ratios, so one noisy reading moves nothing, and it
goes back down only below a lower threshold than the one that moved it up, and only
after several calm readings, so it does not flap at a threshold. A ratio
that could not be measured is unknown, and unknown pauses: the run never works blind.
It never fails a run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from backfills.reasons import ThrottleReason
from backfills.signals import CONTINUE, Action, Decision

__all__ = ["GuardState", "Thresholds", "step", "REASON", "UNKNOWN_REASON", "WINDOW", "CALM_READINGS"]

REASON = ThrottleReason.FOREGROUND_LATENCY
UNKNOWN_REASON = ThrottleReason.FOREGROUND_LATENCY_UNKNOWN
WINDOW = 3            # readings in the median
CALM_READINGS = 3     # calm readings in a row before stepping down a level
SLOW_FACTOR = 0.5     # batch size factor while slowed
SLOW_SLEEP = 0.5      # extra seconds between batches while slowed
PAUSE_CHECK = 1.0     # seconds between readings while paused


@dataclass(frozen=True)
class Thresholds:
    """Ratios derived from `--max-latency-ratio` R: slow at R, pause at `1 + 2 (R - 1)`
    (twice as far above the baseline), calm below `1 + (R - 1) / 2`."""

    slow: float
    pause: float
    calm: float

    @classmethod
    def for_ratio(cls, max_ratio: float) -> Thresholds:
        """The thresholds of `--max-latency-ratio max_ratio` (> 1)."""
        excess = max_ratio - 1.0
        return cls(slow=max_ratio, pause=1.0 + 2 * excess, calm=1.0 + excess / 2)


@dataclass(frozen=True)
class GuardState:
    """The level (how hard the guard holds the run back) and how many calm readings in a
    row were seen at it."""

    level: Action = Action.CONTINUE
    calm: int = 0


def _smoothed(ratios: Sequence[float | None]) -> float | None:
    """Median of the last `WINDOW` ratios; None when the latest one is unknown."""
    if not ratios or ratios[-1] is None:
        return None
    known = [r for r in ratios[-WINDOW:] if r is not None]
    return float(statistics.median(known))


def _target(ratio: float, thresholds: Thresholds) -> Action:
    if ratio >= thresholds.pause:
        return Action.PAUSE
    return Action.SLOW if ratio >= thresholds.slow else Action.CONTINUE


def step(state: GuardState, ratios: Sequence[float | None], max_ratio: float) -> tuple[GuardState, Decision]:
    """The next state and decision from the ratios so far (latest last). Up one level per
    reading while the smoothed ratio calls for a higher one (a run slows down before it
    pauses); down one level after `CALM_READINGS` calm readings in a row."""
    ratio = _smoothed(ratios)
    if ratio is None:
        return state, Decision(Action.PAUSE, UNKNOWN_REASON, sleep_seconds=PAUSE_CHECK)
    thresholds = Thresholds.for_ratio(max_ratio)
    target = _target(ratio, thresholds)
    if target > state.level:
        state = GuardState(Action(state.level + 1))
    elif ratio < thresholds.calm and state.level > Action.CONTINUE:
        calm = state.calm + 1
        state = GuardState(Action(state.level - 1)) if calm >= CALM_READINGS else GuardState(state.level, calm)
    elif state.calm:
        state = GuardState(state.level)
    return state, _decision(state.level)


def _decision(level: Action) -> Decision:
    if level is Action.PAUSE:
        return Decision(Action.PAUSE, REASON, sleep_seconds=PAUSE_CHECK)
    if level is Action.SLOW:
        return Decision(Action.SLOW, REASON, batch_factor=SLOW_FACTOR, sleep_seconds=SLOW_SLEEP)
    return CONTINUE
