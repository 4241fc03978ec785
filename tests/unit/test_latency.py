"""The guard's readings from plain samples: tails, busy and idle windows, the ratio."""

from __future__ import annotations

import random

import pytest

from backfills.latency import (BUSY_WINDOW, IDLE_WINDOW, Latency, Reading, Sample, guard_ratio, latest,
                               summarize, tail)


def samples(at: float, busy: bool, commit: float, read: float, n: int, every: float = 0.1) -> list[Sample]:
    return [Sample(at + i * every, busy, commit, read) for i in range(n)]


def test_tail_is_the_p90_or_the_mean_whichever_is_larger() -> None:
    assert tail([1.0] * 8 + [30.0, 50.0]) == pytest.approx(30.0 + 0.1 * 20)  # p90 above the mean (8.8)
    assert tail([1.0, 1.0, 1.0, 1.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0]) == 100.0
    assert tail([3.0]) == 3.0
    # one stall among many quiet samples lifts the mean above a p90 that misses it
    assert tail([1.0] * 19 + [200.0]) == pytest.approx((19 + 200) / 20)


def test_summarize_splits_busy_and_idle_samples_by_window() -> None:
    now = 100.0
    old_busy = samples(now - BUSY_WINDOW - 1, True, 50.0, 50.0, 5)  # too old to count as busy
    idle = samples(now - 10, False, 1.0, 0.5, 10)
    busy = samples(now - 1, True, 8.0, 2.0, 5)
    reading = summarize([*old_busy, *idle, *busy], now)
    assert reading.busy == Latency(8.0, 2.0, now)
    assert reading.idle == Latency(1.0, 0.5, now)
    assert not reading.failing


def test_idle_samples_older_than_the_idle_window_are_left_out() -> None:
    now = 100.0
    reading = summarize([*samples(now - IDLE_WINDOW - 5, False, 9.0, 9.0, 10), *samples(now - 1, False, 1.0, 1.0, 5)],
                        now)
    assert reading.idle == Latency(1.0, 1.0, now)


def test_too_few_samples_make_no_tail() -> None:
    reading = summarize(samples(99.0, True, 5.0, 5.0, 2), 100.0)
    assert reading.busy is None and reading.idle is None and not reading.failing


def test_failed_samples_are_left_out_and_a_second_without_success_is_failing() -> None:
    now = 100.0
    ok = samples(now - 3, False, 1.0, 1.0, 5)
    failed = [Sample(now - 0.9 + i * 0.1, False, None, 1.0) for i in range(9)]
    reading = summarize([*ok, *failed], now)
    assert reading.failing
    assert reading.idle == Latency(1.0, 1.0, now)
    assert not summarize([*ok, *failed, Sample(now, False, 1.0, 1.0)], now).failing


def test_the_run_effect_is_recent_over_idle() -> None:
    reading = Reading(0.0, busy=Latency(9.0, 1.0), idle=Latency(1.0, 1.0), recent=Latency(5.0, 1.0))
    assert guard_ratio(reading, Latency(1.0, 1.0)) == pytest.approx(6.0 / 2.0)
    older = Reading(0.0, busy=Latency(5.0, 1.0), idle=Latency(1.0, 1.0))  # published without `recent`
    assert guard_ratio(older, Latency(1.0, 1.0)) == pytest.approx(6.0 / 2.0)


@pytest.mark.parametrize(("share", "felt"), [(0.9, True), (0.3, True), (0.05, False)])
def test_the_share_of_time_in_batches_is_what_the_effect_sees(share: float, felt: bool) -> None:
    """Batches that make a commit take 10 ms instead of 1: the application feels them in
    proportion to how much of its time they fill, and so does the ratio."""
    now = 100.0
    cycle = 20  # samples per batch-and-sleep cycle
    loud = round(cycle * share)
    stream = [Sample(now - 20 + i * 0.2, i % cycle < loud, 10.0 if i % cycle < loud else 1.0, 0.5)
              for i in range(101)]
    ratio_now = guard_ratio(summarize(stream, now), None)
    assert ratio_now is not None and (ratio_now > 1.5) is felt, ratio_now


def test_load_on_both_sides_cancels_in_the_effect_but_shows_as_stress() -> None:
    busy_machine = Reading(0.0, busy=Latency(9.0, 9.0), idle=Latency(9.0, 9.0))
    assert guard_ratio(busy_machine, None) == pytest.approx(1.0)
    assert guard_ratio(busy_machine, Latency(1.0, 1.0)) == pytest.approx(10.0 / 2.0)


def test_without_idle_samples_busy_is_compared_with_the_baseline() -> None:
    reading = Reading(0.0, busy=Latency(3.0, 1.0), idle=None)
    assert guard_ratio(reading, Latency(1.0, 1.0)) == pytest.approx(4.0 / 2.0)
    assert guard_ratio(reading, None) is None


def test_latest_prefers_idle_then_recent_then_busy_and_knows_nothing_of_a_failing_reading() -> None:
    busy, idle, recent = Latency(3.0, 1.0), Latency(1.0, 1.0), Latency(2.0, 1.0)
    assert latest(Reading(0.0, busy, idle, recent=recent)) == idle
    assert latest(Reading(0.0, busy, None, recent=recent)) == recent
    assert latest(Reading(0.0, busy, None)) == busy
    assert latest(Reading(0.0, None, None)) is None
    assert latest(Reading(0.0, busy, idle, failing=True, recent=recent)) is None


def test_a_failing_reading_or_an_empty_one_is_unknown() -> None:
    assert guard_ratio(Reading(0.0, Latency(1.0, 1.0), Latency(1.0, 1.0), failing=True), Latency(1.0, 1.0)) is None
    assert guard_ratio(Reading(0.0, None, None), Latency(1.0, 1.0)) is None


@pytest.mark.parametrize("seed", range(20))
def test_noise_on_a_busy_machine_stays_below_the_default_ratio_when_batches_add_nothing(seed: int) -> None:
    """The same noise in busy and idle samples (the machine's, the application's) does not
    read as the run's effect: the ratio stays under 1.5."""
    rng = random.Random(seed)
    now = 100.0
    noisy = [Sample(now - 20 + i * 0.1, rng.random() < 0.8, rng.lognormvariate(1.0, 0.5),
                    rng.lognormvariate(0.0, 0.5)) for i in range(200)]
    reading = summarize(noisy, now)
    idle_baseline = summarize([s for s in noisy if not s.busy], now).idle
    assert guard_ratio(reading, idle_baseline) < 1.5
