"""Unit tests for backfills.retry: which failures are retried, and the back-off."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfills.retry import Failure, RetryPolicy, classify

CLASSIFY_TABLE = [
    # (sqlstate, connection_lost, expected)
    ("55P03", False, Failure.LOCK_TIMEOUT),        # lock_not_available (lock_timeout)
    ("55P03", True, Failure.LOCK_TIMEOUT),
    ("57014", False, Failure.STATEMENT_TIMEOUT),   # query_canceled (statement_timeout)
    ("57014", True, Failure.STATEMENT_TIMEOUT),
    ("57P01", False, Failure.TRANSIENT),           # admin_shutdown
    ("57P02", False, Failure.TRANSIENT),           # crash_shutdown
    ("57P03", False, Failure.TRANSIENT),           # cannot_connect_now (starting up)
    ("25006", False, Failure.TRANSIENT),           # read_only_sql_transaction (demoted primary)
    ("25P03", True, Failure.TRANSIENT),            # idle_in_transaction_session_timeout (a stalled batch)
    ("40001", False, Failure.TRANSIENT),           # serialization_failure
    ("40P01", False, Failure.TRANSIENT),           # deadlock_detected
    ("08006", False, Failure.TRANSIENT),           # connection_failure
    ("08001", True, Failure.TRANSIENT),
    (None, True, Failure.TRANSIENT),               # connection dropped, no SQLSTATE
    (None, False, Failure.FATAL),                  # no SQLSTATE and no lost connection: unknown
    ("23505", False, Failure.FATAL),               # unique_violation
    ("23505", True, Failure.FATAL),
    ("22003", False, Failure.FATAL),               # numeric_value_out_of_range
    ("42P01", False, Failure.FATAL),               # undefined_table
    ("42501", False, Failure.FATAL),               # insufficient_privilege
    ("53100", False, Failure.FATAL),               # disk_full: not retried blindly
]


@pytest.mark.parametrize(("state", "lost", "expected"), CLASSIFY_TABLE)
def test_classify(state: str | None, lost: bool, expected: Failure) -> None:
    assert classify(state, lost) is expected


@given(st.integers(min_value=-3, max_value=80), st.integers(min_value=0, max_value=2**32))
def test_delay_is_within_half_cap_and_cap(attempt: int, seed: int) -> None:
    policy = RetryPolicy(window_seconds=60, base_seconds=0.2, max_seconds=10.0)
    cap = min(10.0, 0.2 * 2 ** max(attempt - 1, 0))
    delay = policy.delay(attempt, random.Random(seed))
    assert cap / 2 <= delay <= cap
    assert 0 < delay <= policy.max_seconds


def test_delay_grows_exponentially_then_is_capped() -> None:
    policy = RetryPolicy(base_seconds=1.0, max_seconds=8.0)
    upper = [max(policy.delay(a, random.Random(s)) for s in range(200)) for a in range(1, 7)]
    lower = [min(policy.delay(a, random.Random(s)) for s in range(200)) for a in range(1, 7)]
    # caps 1, 2, 4, 8, 8, 8: every delay within [cap/2, cap]
    for got_low, got_high, cap in zip(lower, upper, [1, 2, 4, 8, 8, 8]):
        assert cap / 2 <= got_low <= got_high <= cap
    assert upper[3] > 4 and upper[5] <= 8  # the cap is reached, never passed


def test_delay_is_jittered() -> None:
    policy = RetryPolicy()
    rng = random.Random(1)
    assert len({policy.delay(5, rng) for _ in range(20)}) > 1


@pytest.mark.parametrize(("failing_for", "gives_up"), [
    (0.0, False), (1.0, False), (299.999, False), (300.0, True), (301.0, True), (1e9, True),
])
def test_gives_up_after_the_window(failing_for: float, gives_up: bool) -> None:
    assert RetryPolicy(window_seconds=300).gives_up(failing_for) is gives_up


def test_a_short_window_gives_up_sooner() -> None:
    assert RetryPolicy(window_seconds=5).gives_up(5.0)
    assert not RetryPolicy(window_seconds=5).gives_up(4.9)
