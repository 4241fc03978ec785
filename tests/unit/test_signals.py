"""Each health signal: plain readings in, a decision out."""

from __future__ import annotations

import pytest

from backfills.health import HealthReadings, LockReading, ReplicaReading, VacuumReading
from backfills.signals import CONTINUE, Action, Decision, combine, decide, lock_signal, replication_signal, vacuum_signal


def replicas(*lags: float | None) -> tuple[ReplicaReading, ...]:
    return tuple(ReplicaReading(f"standby{i}", lag, 0) for i, lag in enumerate(lags))


@pytest.mark.parametrize(("lags", "paused_before", "action"), [
    ((), False, Action.CONTINUE),                      # no standby at all
    ((0.5,), False, Action.CONTINUE),
    ((None,), False, Action.CONTINUE),                 # caught up: the primary reports no lag
    ((10.0,), False, Action.CONTINUE),                 # at the limit: not above it
    ((10.5,), False, Action.PAUSE),
    ((1.0, 11.0), False, Action.PAUSE),                # the worst standby counts
    ((7.0,), True, Action.PAUSE),                      # hysteresis: paused until below half
    ((5.0,), True, Action.PAUSE),
    ((4.9,), True, Action.CONTINUE),
    ((7.0,), False, Action.CONTINUE),
])
def test_replication_lag_pauses_above_the_limit_and_resumes_below_half(lags, paused_before, action) -> None:
    decision = replication_signal(replicas(*lags), 10.0, paused_before)
    assert decision.action is action
    assert decision.reason == ("replication_lag" if action is Action.PAUSE else None)


def test_an_unknown_replication_reading_pauses() -> None:
    assert replication_signal(None, 10.0, False) == Decision(Action.PAUSE, "replication_lag_unknown")


@pytest.mark.parametrize(("reading", "action", "reason", "factor"), [
    (None, Action.CONTINUE, None, 1.0),
    (LockReading("aois", 0, 0.0, 0), Action.CONTINUE, None, 1.0),
    (LockReading("aois", 2, 0.4, 0), Action.SLOW, "lock_waiters", 0.75),
    (LockReading("aois", 3, 1.5, 2), Action.SLOW, "lock_contention", 0.5),
])
def test_lock_waiters_slow_down_and_shrink_the_batch(reading, action, reason, factor) -> None:
    decision = lock_signal((reading,) if reading else (), "aois")
    assert (decision.action, decision.reason, decision.batch_factor) == (action, reason, factor)
    if action is not Action.CONTINUE:
        assert decision.sleep_seconds > 0


def test_lock_waits_on_another_table_do_not_count() -> None:
    assert lock_signal((LockReading("jobs", 5, 3.0, 5),), "aois") == CONTINUE


def test_contention_waits_longer_when_the_application_has_waited_longer_but_is_capped() -> None:
    short = lock_signal((LockReading("aois", 1, 0.1, 1),), "aois")
    long = lock_signal((LockReading("aois", 1, 60.0, 1),), "aois")
    assert short.sleep_seconds < long.sleep_seconds <= 2.0


def test_unknown_lock_and_vacuum_readings_pause() -> None:
    assert lock_signal(None, "aois") == Decision(Action.PAUSE, "lock_contention_unknown")
    assert vacuum_signal(None, "aois") == Decision(Action.PAUSE, "vacuum_unknown")


@pytest.mark.parametrize(("vacuuming", "action"), [
    ((), Action.CONTINUE),
    ((VacuumReading("jobs", wraparound=True),), Action.CONTINUE),    # another table
    ((VacuumReading("aois", wraparound=False),), Action.CONTINUE),   # an ordinary vacuum works beside the run
    ((VacuumReading("aois", wraparound=True),), Action.SLOW),
    ((VacuumReading("aois", False), VacuumReading("aois", True)), Action.SLOW),
])
def test_only_an_autovacuum_to_prevent_wraparound_on_the_target_table_slows_down(vacuuming, action) -> None:
    decision = vacuum_signal(vacuuming, "aois")
    assert decision.action is action
    assert decision.reason == ("autovacuum" if action is Action.SLOW else None)


def test_combine_takes_the_most_severe_and_accumulates_factors_and_sleeps() -> None:
    slow = Decision(Action.SLOW, "lock_contention", 0.5, 0.3)
    vac = Decision(Action.SLOW, "autovacuum", 1.0, 0.5)
    pause = Decision(Action.PAUSE, "replication_lag", 1.0, 1.0)
    assert combine([CONTINUE, CONTINUE]) == CONTINUE
    assert combine([slow, vac]) == Decision(Action.SLOW, "lock_contention", 0.5, 0.8)
    assert combine([slow, pause, vac]).action is Action.PAUSE
    assert combine([slow, pause, vac]).reason == "replication_lag"


def test_decide_reads_every_signal() -> None:
    healthy = HealthReadings(replicas(0.1), (LockReading("aois", 0, 0, 0),), (), 0.0)
    assert decide(healthy, "aois", 10.0, False) == CONTINUE
    lagging = HealthReadings(replicas(30.0), (LockReading("aois", 0, 0, 0),), (), 0.0)
    assert decide(lagging, "aois", 10.0, False).reason == "replication_lag"
    broken = HealthReadings(None, None, None, 0.0)
    assert decide(broken, "aois", 10.0, False).action is Action.PAUSE


def test_readings_round_trip_through_json() -> None:
    readings = HealthReadings(replicas(1.5, None), (LockReading("aois", 2, 0.5, 1),), (VacuumReading("jobs", True),), 12.5)
    assert HealthReadings.from_json(readings.to_json()) == readings
    unknown = HealthReadings(None, None, None, 1.0)
    assert HealthReadings.from_json(unknown.to_json()) == unknown
    shared_by_an_older_worker = {**readings.to_json(), "vacuuming": ["jobs"]}
    assert HealthReadings.from_json(shared_by_an_older_worker).vacuuming == (VacuumReading("jobs", False),)
