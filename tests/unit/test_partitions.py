"""Partition boundaries: contiguous ranges that cover the key space exactly once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backfills.partitions import choose_bounds, part_ranges


def test_bounds_are_evenly_spaced_quantiles() -> None:
    histogram = [f"{i:03d}" for i in range(101)]
    assert choose_bounds(histogram, 4) == ["025", "050", "075"]
    assert choose_bounds(histogram, 1) == []
    assert choose_bounds(["a"], 3) == []


def test_ranges_are_open_at_both_ends() -> None:
    assert part_ranges([]) == [(None, None)]
    assert part_ranges(["m"]) == [(None, ["m"]), (["m"], None)]


@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=200, unique=True), st.integers(1, 16),
       st.lists(st.integers(-100, 20_000), max_size=100))
def test_every_key_falls_in_exactly_one_range(histogram, parts, keys) -> None:
    ordered = [f"{v:06d}" for v in sorted(histogram)]
    ranges = part_ranges(choose_bounds(ordered, parts))
    assert 1 <= len(ranges) <= parts
    for key in (f"{k:06d}" if k >= 0 else f"-{-k:05d}" for k in keys):
        hits = [r for r in ranges if (r[0] is None or key > r[0][0]) and (r[1] is None or key <= r[1][0])]
        assert len(hits) == 1
    for (_, upper), (lower, _) in zip(ranges, ranges[1:]):
        assert upper == lower   # contiguous: each range starts where the previous ends
