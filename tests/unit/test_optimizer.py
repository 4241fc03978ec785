"""The adaptive batch size: smoothed, clamped, quick to shrink."""

from __future__ import annotations

import pytest

from backfills.optimizer import OptimizerState, halved, next_batch_size


def state(seconds: float) -> OptimizerState:
    return OptimizerState(seconds)


@pytest.mark.parametrize(("size", "smoothed", "target", "expected"), [
    (10_000, None, 1.0, 10_000),        # nothing observed yet: keep
    (10_000, 0.5, 1.0, 12_000),         # twice too fast: grow, but at most 20%
    (10_000, 0.95, 1.0, 10_000),        # within the ±10% dead band: keep
    (10_000, 1.08, 1.0, 10_000),
    (10_000, 1.25, 1.0, 8_000),         # 25% too slow: shrink in proportion
    (10_000, 4.0, 1.0, 5_000),          # far too slow: at most halve per step
    (150, 10.0, 1.0, 100),              # never below the minimum
    (95_000, 0.01, 1.0, 100_000),       # never above the maximum
])
def test_next_batch_size_moves_toward_the_target(size, smoothed, target, expected) -> None:
    assert next_batch_size(size, state(smoothed) if smoothed else OptimizerState(), target) == expected


def test_contention_halves_at_once_within_the_optimizer_range() -> None:
    assert next_batch_size(10_000, state(0.1), 1.0, contention=True) == 5_000
    assert next_batch_size(150, state(0.1), 1.0, contention=True) == 100


@pytest.mark.parametrize(("size", "expected"), [(10_000, 5_000), (3, 1), (2, 1), (1, 1)])
def test_a_timeout_halves_the_batch_down_to_one_row(size: int, expected: int) -> None:
    assert halved(size) == expected


def test_smoothing_damps_a_single_outlier() -> None:
    steady = OptimizerState().observe(1.0, 10_000, 10_000)
    spiked = steady.observe(5.0, 10_000, 10_000)
    assert steady.smoothed_seconds == 1.0
    assert spiked.smoothed_seconds == pytest.approx(0.3 * 5.0 + 0.7 * 1.0)
    assert next_batch_size(10_000, spiked, 1.0) == 5_000  # slower, but not 5x smaller


def test_a_short_last_batch_is_scaled_to_a_full_one() -> None:
    observed = OptimizerState().observe(0.1, 1_000, 10_000)
    assert observed.smoothed_seconds == pytest.approx(1.0)


def test_converges_on_a_linear_cost_model() -> None:
    """Batch time = 0.05 ms per row: the size settles near target / cost and stays there."""
    size, st = 1_000, OptimizerState()
    history = []
    for _ in range(40):
        st = st.observe(size * 0.00005, size, size)
        size = next_batch_size(size, st, 0.5)
        history.append(size)
    assert all(9_000 <= s <= 11_000 for s in history[-10:])
    assert len(set(history[-5:])) == 1   # settled, not oscillating
