"""Unit tests for backfills.guard: the foreground guard's decisions on plain ratios."""

from __future__ import annotations

import random

import pytest

from backfills.latency import Latency, ratio
from backfills.guard import (CALM_READINGS, REASON, UNKNOWN_REASON, GuardState, Thresholds, step)
from backfills.signals import Action

R = 1.5  # --max-latency-ratio


def run(ratios: list[float | None], state: GuardState = GuardState()) -> list[tuple[Action, Action]]:
    """Feed the ratios one by one; the (level, action) after each."""
    seen: list[float | None] = []
    out = []
    for value in ratios:
        seen.append(value)
        state, decision = step(state, seen, R)
        out.append((state.level, decision.action))
    return out


def test_thresholds_of_the_default_ratio() -> None:
    assert Thresholds.for_ratio(1.5) == Thresholds(slow=1.5, pause=2.0, calm=1.25)


def test_calm_readings_run() -> None:
    assert run([1.0, 1.1, 1.2, 0.9]) == [(Action.CONTINUE, Action.CONTINUE)] * 4


def test_run_to_slow_once_the_median_is_above_the_ratio() -> None:
    levels = run([1.0, 1.6, 1.7])
    assert levels == [(Action.CONTINUE, Action.CONTINUE), (Action.CONTINUE, Action.CONTINUE), (Action.SLOW, Action.SLOW)]
    state, decision = step(GuardState(), [1.6, 1.6, 1.6], R)
    assert decision.reason == REASON and decision.batch_factor < 1 and decision.sleep_seconds > 0


def test_well_above_slows_down_then_pauses() -> None:
    assert run([2.5, 2.6, 2.7]) == [(Action.SLOW, Action.SLOW), (Action.PAUSE, Action.PAUSE),
                                    (Action.PAUSE, Action.PAUSE)]
    _, decision = step(GuardState(Action.SLOW), [2.5, 2.5], R)
    assert decision.reason == REASON


def test_slow_to_pause() -> None:
    assert [lvl for lvl, _ in run([1.6, 1.6, 2.2, 2.3])] == [Action.SLOW, Action.SLOW, Action.SLOW, Action.PAUSE]


def test_pause_steps_down_to_slow_then_to_run_after_calm_readings() -> None:
    levels = [lvl for lvl, _ in run([1.0] * (2 * CALM_READINGS), GuardState(Action.PAUSE))]
    assert levels[:CALM_READINGS - 1] == [Action.PAUSE] * (CALM_READINGS - 1)
    assert levels[CALM_READINGS - 1] is Action.SLOW
    assert levels[-1] is Action.CONTINUE


def test_between_calm_and_the_ratio_the_level_holds() -> None:
    """Hysteresis: at 1.3-1.4 (below the ratio, above calm) a slowed run stays slowed."""
    assert {lvl for lvl, _ in run([1.35, 1.4, 1.3] * 4, GuardState(Action.SLOW))} == {Action.SLOW}
    assert {lvl for lvl, _ in run([1.35, 1.4, 1.3] * 4)} == {Action.CONTINUE}


def test_a_non_calm_reading_restarts_the_count() -> None:
    levels = [lvl for lvl, _ in run([1.0, 1.4, 1.4, 1.0, 1.0], GuardState(Action.SLOW))]
    assert levels == [Action.SLOW] * 5


def test_one_spike_moves_nothing() -> None:
    assert {lvl for lvl, _ in run([1.0, 1.0, 5.0, 1.0, 1.0, 9.0, 1.0])} == {Action.CONTINUE}


@pytest.mark.parametrize("seed", range(5))
def test_noise_around_the_baseline_never_oscillates(seed: int) -> None:
    rng = random.Random(seed)
    noisy = [max(0.5, rng.gauss(1.0, 0.15)) for _ in range(500)]
    levels = [lvl for lvl, _ in run(noisy)]
    assert levels.count(Action.PAUSE) == 0
    changes = sum(1 for a, b in zip(levels, levels[1:]) if a != b)
    assert changes <= 4, changes


def test_noise_at_the_threshold_does_not_flap() -> None:
    rng = random.Random(3)
    noisy = [rng.uniform(1.3, 1.7) for _ in range(300)]
    levels = [lvl for lvl, _ in run(noisy)]
    changes = sum(1 for a, b in zip(levels, levels[1:]) if a != b)
    assert changes <= 1, changes  # up to SLOW once, never back while above calm


def test_an_unknown_reading_pauses_and_keeps_the_level() -> None:
    state, decision = step(GuardState(Action.SLOW, calm=2), [1.0, 1.0, None], R)
    assert (decision.action, decision.reason) == (Action.PAUSE, UNKNOWN_REASON)
    assert state == GuardState(Action.SLOW, calm=2)
    # known again: the median of the known readings decides
    _, decision = step(GuardState(), [1.0, None, 1.0], R)
    assert decision.action is Action.CONTINUE


def test_ratio_is_the_worse_of_commit_and_read_with_a_floor() -> None:
    base = Latency(commit_ms=2.0, read_ms=0.2)
    assert ratio(Latency(5.0, 0.2), base) == pytest.approx(6.0 / 3.0)
    assert ratio(Latency(2.0, 1.4), base) == pytest.approx(2.4 / 1.2)
    assert ratio(Latency(2.0, 0.5), base) == pytest.approx(1.5 / 1.2), "a fraction of a millisecond is noise"
    assert ratio(Latency(None, 0.3), base) is None
    assert ratio(Latency(1.0, 0.1), Latency(1.0, None)) is None


class EventLog:
    """The run's events, in memory (the guard hook's only use of the control here)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def add_event(self, text: str, at: float | None = None) -> None:
        self.events.append(text)


def test_the_hook_says_when_the_probe_answers_again_after_an_outage() -> None:
    from backfills.guard_hook import ForegroundGuardHook
    from backfills.signals import Decision

    log = EventLog()
    hook = ForegroundGuardHook(lambda ctx: None, log, lambda: True, lambda: 0.0)  # type: ignore[arg-type,return-value]
    unknown = Decision(Action.PAUSE, UNKNOWN_REASON)
    hook._note_unknown(Decision(Action.CONTINUE))
    hook._note_unknown(unknown)
    hook._note_unknown(unknown)
    assert log.events == []
    hook._note_unknown(Decision(Action.CONTINUE))
    hook._note_unknown(Decision(Action.CONTINUE))
    assert len(log.events) == 1 and log.events[0].startswith("recovered after ")
    assert log.events[0].endswith("the foreground probe answers again")
