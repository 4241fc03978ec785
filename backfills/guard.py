"""The foreground guard's decision: pure, from plain latency ratios. No IO.

A ratio is what the application would feel now (a durable commit, an indexed read)
over the same measured while the run was idle. The guard has three levels: `CONTINUE`,
`SLOW` and `PAUSE` (no batch until the latency comes back).

While slowed, the run sleeps after each batch for `nice` times the batch's own time, so
it spends `1 / (1 + nice)` of its time in batches, and its batches shrink as `nice` grows
(half size at `NICE_START`, a 64th at `NICE_MAX`), so that one request of the application
meets at most one small batch's WAL and CPU (the README says what was and was not
measured). A reading at or above the ratio slows the run (`nice` from `NICE_START`), and
each one after doubles `nice` up to `NICE_MAX`;
a reading at or above the pause threshold pauses a slowed run. After `CALM_READINGS`
calm readings in a row the guard steps back: from a pause to the slowest pace, then
halving `nice` until it is below `NICE_START`, and the run continues. So the run comes
back from the slow side and settles at the share of its time in batches that the
application does not feel, instead of swinging between working flat out and pausing.
A run starts on the slow side too (`START`, the slowest pace): at full speed from its
first batch, it would be felt for the few readings the guard needs to slow it down.

It looks at the median of the last few ratios, so one noisy reading moves nothing, and it
steps back only below a lower threshold than the one that moved it up, so it does not
flap at a threshold. A ratio that could not be measured is unknown, and unknown pauses:
the run never works blind. It never fails a run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from backfills.reasons import ThrottleReason
from backfills.signals import CONTINUE, Action, Decision

__all__ = ["GuardState", "Thresholds", "step", "START", "REASON", "UNKNOWN_REASON", "WINDOW", "CALM_READINGS",
           "NICE_START", "NICE_MAX", "slow_batch_factor"]

REASON = ThrottleReason.FOREGROUND_LATENCY
UNKNOWN_REASON = ThrottleReason.FOREGROUND_LATENCY_UNKNOWN
WINDOW = 3            # readings in the median
CALM_READINGS = 3     # calm readings in a row before stepping down a level
SLOW_FACTOR = 0.5     # batch size factor at the first slowed pace; it halves as the pace doubles
NICE_START = 0.5      # first slowed pace: sleep half of each batch's time
NICE_MAX = 16.0       # slowest pace: about 6% of the time in batches, batches of a 64th
MIN_SLOW_SLEEP = 0.05  # seconds between batches while slowed, at least
MAX_SLOW_SLEEP = 15.0  # seconds between batches while slowed, at most
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
    """The level (how hard the guard holds the run back), how many calm readings in a row
    were seen at it, and the pace while slowed (`nice`: seconds of sleep per second of
    batch)."""

    level: Action = Action.CONTINUE
    calm: int = 0
    nice: float = 0.0


START = GuardState(Action.SLOW, nice=NICE_MAX)
"""A run's first state: the slowest pace, eased off one step per `CALM_READINGS` calm readings."""


def _smoothed(ratios: Sequence[float | None]) -> float | None:
    """Median of the last `WINDOW` ratios; None when the latest one is unknown."""
    if not ratios or ratios[-1] is None:
        return None
    known = [r for r in ratios[-WINDOW:] if r is not None]
    return float(statistics.median(known))


def step(state: GuardState, ratios: Sequence[float | None], max_ratio: float,
         batch_seconds: float = 0.0) -> tuple[GuardState, Decision]:
    """The next state and decision from the ratios so far (latest last) and the time the
    last batch took. At or above the ratio: hold the run back harder (`_harder`); calm for
    `CALM_READINGS` readings in a row: ease off one step (`_easier`); in between: hold."""
    ratio = _smoothed(ratios)
    if ratio is None:
        return state, Decision(Action.PAUSE, UNKNOWN_REASON, sleep_seconds=PAUSE_CHECK)
    thresholds = Thresholds.for_ratio(max_ratio)
    if ratio >= thresholds.slow:
        state = _harder(state, critical=ratio >= thresholds.pause)
    elif ratio < thresholds.calm and state.level > Action.CONTINUE:
        calm = state.calm + 1
        state = _easier(state) if calm >= CALM_READINGS else replace(state, calm=calm)
    elif state.calm:
        state = replace(state, calm=0)
    return state, _decision(state, batch_seconds)


def _harder(state: GuardState, critical: bool) -> GuardState:
    """One step harder: slow down; once slowed, double the sleep, or pause when `critical`
    (at or above the pause threshold: the application feels the run that much even with
    sleeps between batches, or the database is in trouble on its own)."""
    if state.level is Action.CONTINUE:
        return GuardState(Action.SLOW, nice=NICE_START)
    if state.level is Action.PAUSE or critical:
        return GuardState(Action.PAUSE, nice=NICE_MAX)
    return GuardState(Action.SLOW, nice=min(NICE_MAX, max(NICE_START, state.nice * 2)))


def _easier(state: GuardState) -> GuardState:
    """One step easier: from a pause to the slowest pace, then half the sleep, then on."""
    if state.level is Action.PAUSE:
        return GuardState(Action.SLOW, nice=NICE_MAX)
    nice = state.nice / 2
    return GuardState(Action.SLOW, nice=nice) if nice >= NICE_START else GuardState()


def _decision(state: GuardState, batch_seconds: float) -> Decision:
    if state.level is Action.PAUSE:
        return Decision(Action.PAUSE, REASON, sleep_seconds=PAUSE_CHECK)
    if state.level is Action.SLOW:
        sleep = min(MAX_SLOW_SLEEP, max(MIN_SLOW_SLEEP, state.nice * batch_seconds))
        return Decision(Action.SLOW, REASON, batch_factor=slow_batch_factor(state.nice), sleep_seconds=sleep)
    return CONTINUE


def slow_batch_factor(nice: float) -> float:
    """The batch size factor at pace `nice`: `SLOW_FACTOR` at `NICE_START`, halved with
    every doubling of `nice` (a 64th at `NICE_MAX`)."""
    nice = min(NICE_MAX, max(NICE_START, nice))
    return SLOW_FACTOR * NICE_START / nice
