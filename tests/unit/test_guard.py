"""Unit tests for backfills.guard: the foreground guard's decisions on plain ratios."""

from __future__ import annotations

import random

import pytest

from backfills.latency import Latency, ratio
from backfills.guard import (CALM_READINGS, MAX_SLOW_SLEEP, MIN_SLOW_SLEEP, NICE_MAX, NICE_START, REASON,
                             START, UNKNOWN_REASON, GuardState, Thresholds, slow_batch_factor, step)
from backfills.signals import Action

R = 1.5  # --max-latency-ratio


def trace(ratios: list[float | None], state: GuardState = GuardState()) -> list[GuardState]:
    """Feed the ratios one by one; the state after each."""
    seen: list[float | None] = []
    out = []
    for value in ratios:
        seen.append(value)
        state, _ = step(state, seen, R)
        out.append(state)
    return out


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
    _, decision = step(GuardState(Action.SLOW, nice=NICE_START), [2.5, 2.5], R)
    assert (decision.action, decision.reason) == (Action.PAUSE, REASON)


def test_slow_to_pause() -> None:
    assert [lvl for lvl, _ in run([1.6, 1.6, 2.2, 2.3])] == [Action.SLOW, Action.SLOW, Action.SLOW, Action.PAUSE]


def test_above_the_ratio_but_below_the_pause_threshold_the_run_slows_to_its_slowest_pace_and_never_pauses() -> None:
    states = trace([1.8] * 20)
    assert {st.level for st in states} == {Action.SLOW}
    assert [st.nice for st in states[:3]] == [NICE_START, 2 * NICE_START, 4 * NICE_START]
    assert states[-1].nice == NICE_MAX


def test_a_slowed_state_without_a_pace_gets_one() -> None:
    """A slowed state remembered by a version without `nice` (0.0) still slows down harder."""
    state, _ = step(GuardState(Action.SLOW), [1.8], R)
    assert state == GuardState(Action.SLOW, nice=NICE_START)


def test_slowed_the_run_sleeps_in_proportion_to_its_batches() -> None:
    _, decision = step(GuardState(Action.SLOW, nice=2.0), [1.3], R, batch_seconds=1.5)
    assert (decision.action, decision.sleep_seconds) == (Action.SLOW, pytest.approx(3.0))
    assert decision.batch_factor < 1
    _, decision = step(GuardState(Action.SLOW, nice=2.0), [1.3], R, batch_seconds=0.01)
    assert decision.sleep_seconds == MIN_SLOW_SLEEP
    _, decision = step(GuardState(Action.SLOW, nice=NICE_MAX), [1.3], R, batch_seconds=60.0)
    assert decision.sleep_seconds == MAX_SLOW_SLEEP


def test_slowed_batches_shrink_as_the_pace_slows() -> None:
    """Smaller batches at a slower pace: a commit of the application meets at most one
    small batch's WAL."""
    factors = []
    for nice in (NICE_START, 1.0, 2.0, 4.0, 8.0, NICE_MAX):
        _, decision = step(GuardState(Action.SLOW, nice=nice), [1.3], R, batch_seconds=0.1)
        factors.append(decision.batch_factor)
    assert factors == [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625]
    assert slow_batch_factor(0.0) == 0.5 and slow_batch_factor(100.0) == 0.015625


def test_a_run_starts_at_the_slowest_pace_and_eases_to_full_speed_on_calm_readings() -> None:
    assert START == GuardState(Action.SLOW, nice=NICE_MAX)
    states = trace([1.0] * (6 * CALM_READINGS), START)
    paces = [st.nice for st in states if st.level is Action.SLOW]
    assert sorted(set(paces), reverse=True) == [16.0, 8.0, 4.0, 2.0, 1.0, 0.5]
    assert states[-1] == GuardState() and states[-2].level is Action.SLOW


def test_a_run_felt_from_its_start_slows_further_not_from_full_speed() -> None:
    states = trace([1.7, 2.5, 2.5], START)
    assert states[0] == GuardState(Action.SLOW, nice=NICE_MAX)
    assert states[-1].level is Action.PAUSE


def test_pause_steps_down_to_the_slowest_pace_then_halves_it_then_runs() -> None:
    states = trace([1.0] * (8 * CALM_READINGS), GuardState(Action.PAUSE, nice=NICE_MAX))
    assert [st.level for st in states[:CALM_READINGS - 1]] == [Action.PAUSE] * (CALM_READINGS - 1)
    assert states[CALM_READINGS - 1] == GuardState(Action.SLOW, nice=NICE_MAX)
    paces = [st.nice for st in states if st.level is Action.SLOW]
    assert sorted(set(paces), reverse=True) == [16.0, 8.0, 4.0, 2.0, 1.0, 0.5]
    assert states[-1] == GuardState()


def test_the_guard_settles_at_the_pace_the_application_does_not_feel() -> None:
    """A closed loop: the application feels the run in proportion to the share of time the
    run spends in batches. The guard finds a pace and stays near it: no pause, no return to
    full speed, and the ratio around the threshold."""
    state, seen, paces = GuardState(), [], []
    for _ in range(400):
        busy_share = 1 / (1 + state.nice) if state.level is Action.SLOW else (0.0 if state.level else 0.9)
        seen.append(1.0 + 3.0 * busy_share)   # 1.5 needs at most 1/6 of the time in batches: nice >= 5
        state, _ = step(state, seen, R, batch_seconds=1.0)
        paces.append((state.level, state.nice))
    assert Action.PAUSE in {level for level, _ in paces[:10]}   # flat out, it was felt at twice the ratio
    settled = paces[50:]
    assert {level for level, _ in settled} == {Action.SLOW}
    assert {nice for _, nice in settled} <= {4.0, 8.0, 16.0}


def test_a_run_that_starts_slow_settles_at_the_same_pace_without_ever_pausing() -> None:
    """The same closed loop from `START`: the run eases off from the slowest pace to where the
    application starts to feel it, and settles there; it never works flat out or pauses."""
    state, seen, paces = START, [], []
    for _ in range(400):
        busy_share = 1 / (1 + state.nice) if state.level is Action.SLOW else (0.0 if state.level else 0.9)
        seen.append(1.0 + 3.0 * busy_share)
        state, _ = step(state, seen, R, batch_seconds=1.0)
        paces.append((state.level, state.nice))
    assert {level for level, _ in paces} == {Action.SLOW}
    assert {nice for _, nice in paces[50:]} <= {4.0, 8.0, 16.0}


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
