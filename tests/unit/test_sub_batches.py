"""Sub-batches: how a batch is cut into transactions, and how their results add up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfills.batch import BatchResult
from backfills.sub_batches import combine, sub_batch_limits


def test_a_batch_is_cut_into_whole_sub_batches_then_the_rest() -> None:
    assert list(sub_batch_limits(10_000, 1_000)) == [1_000] * 10
    assert list(sub_batch_limits(2_500, 1_000)) == [1_000, 1_000, 500]


def test_a_sub_batch_as_large_as_the_batch_is_one_transaction() -> None:
    assert list(sub_batch_limits(500, 1_000)) == [500]
    assert list(sub_batch_limits(1_000, 1_000)) == [1_000]


@pytest.mark.parametrize(("batch", "sub"), [(0, 10), (10, 0), (-1, 5)])
def test_sizes_below_one_are_refused(batch: int, sub: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        list(sub_batch_limits(batch, sub))


@given(st.integers(1, 50_000), st.integers(1, 5_000))
def test_the_sub_batches_add_up_to_the_batch_and_none_is_larger_than_asked(batch: int, sub: int) -> None:
    limits = list(sub_batch_limits(batch, sub))
    assert sum(limits) == batch
    assert all(0 < limit <= sub for limit in limits)
    assert len(limits) == -(-batch // sub)


def test_combined_results_keep_the_last_cursor_and_add_up_the_rest() -> None:
    done = [BatchResult(["a"], 10, 8, 1, 0.5, skipped=1), BatchResult(["b"], 5, 4, 0, 0.25, split=True)]
    assert combine(done) == BatchResult(["b"], 15, 12, 1, 0.75, split=True, skipped=1)


def test_no_sub_batch_means_the_part_has_no_rows_left() -> None:
    assert combine([]).last_key is None
