"""Unit tests for backfills.bisect.isolate_failures: a property over random key lists
and random bad subsets, with a fake `attempt` that fails iff its chunk holds a bad key."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfills.bisect import isolate_failures


class BadRow(Exception):
    """The fake data error: names the first bad key of the chunk."""

    def __init__(self, key: int) -> None:
        super().__init__(f"bad row {key}")
        self.key = key


class Recorder:
    """Applies chunks like the batch executor would, and checks its assumptions."""

    def __init__(self, keys: Sequence[int], bad: set[int]) -> None:
        self.keys = list(keys)
        self.bad = bad
        self.events: list[tuple[str, list[int]]] = []  # ("ok", chunk) / ("bad", [key]) in call order
        self.attempts: list[list[int]] = []
        self.errors: dict[int, BaseException] = {}
        self.done = 0  # index of the first key not yet committed or recorded

    def _check_contiguous_from_cursor(self, chunk: Sequence[int]) -> None:
        # The executor applies a chunk as the key range (cursor, chunk[-1]]: a chunk must
        # start exactly at the first key that is neither committed nor recorded.
        assert list(chunk) == self.keys[self.done:self.done + len(chunk)], (chunk, self.done)

    def attempt(self, chunk: Sequence[int]) -> BaseException | None:
        self._check_contiguous_from_cursor(chunk)
        self.attempts.append(list(chunk))
        bad = [k for k in chunk if k in self.bad]
        if bad:
            return BadRow(bad[0])
        self.events.append(("ok", list(chunk)))
        self.done += len(chunk)
        return None

    def record(self, key: int, error: BaseException) -> None:
        self._check_contiguous_from_cursor([key])
        self.events.append(("bad", [key]))
        self.errors[key] = error
        self.done += 1


@st.composite
def keys_and_bad(draw: st.DrawFn) -> tuple[list[int], set[int]]:
    keys = sorted(draw(st.sets(st.integers(min_value=-10**6, max_value=10**6), max_size=300)))
    if keys and draw(st.booleans()):
        bad = draw(st.sets(st.sampled_from(keys), max_size=min(len(keys), 12)))
    else:
        bad = set()
    if keys and draw(st.integers(0, 9)) == 0:  # now and then: everything is bad
        bad = set(keys)
    return keys, bad


@settings(max_examples=400, deadline=None)
@given(keys_and_bad(), st.booleans())
def test_isolates_exactly_the_bad_keys_in_order(case: tuple[list[int], set[int]], pass_first_error: bool) -> None:
    keys, bad = case
    rec = Recorder(keys, bad)
    first_error = None
    if pass_first_error and bad:
        # The executor has already seen the whole batch fail: it passes that error along.
        first_error = BadRow(min(bad))
    attempts = isolate_failures(keys, rec.attempt, rec.record, first_error=first_error)

    recorded = [e[1][0] for e in rec.events if e[0] == "bad"]
    committed = [k for kind, chunk in rec.events if kind == "ok" for k in chunk]
    # every bad key recorded exactly once, nothing else recorded
    assert sorted(recorded) == sorted(bad)
    assert len(recorded) == len(set(recorded))
    # every good key committed exactly once, in a successful chunk
    assert sorted(committed) == sorted(set(keys) - bad)
    assert len(committed) == len(set(committed))
    # commits and records interleave in ascending key order and cover every key
    assert [k for _, chunk in rec.events for k in chunk] == keys
    # each recorded key gets the error of its own (single-key) failure
    for key in recorded:
        assert isinstance(rec.errors[key], BadRow) and rec.errors[key].key == key
    # the return value counts attempt() calls
    assert attempts == len(rec.attempts)
    # about k*log2(n): a failing chunk costs two attempts (its halves) per level
    n = len(keys)
    depth = math.ceil(math.log2(n)) if n > 1 else 0
    assert attempts <= 1 + 2 * len(bad) * depth
    if not bad and keys:
        assert attempts == 1
    if first_error is not None and n > 0:
        # the whole batch is not tried again
        assert keys not in rec.attempts


def test_empty_batch_makes_no_attempt() -> None:
    calls: list[object] = []
    assert isolate_failures([], lambda c: calls.append(c), lambda k, e: calls.append(k)) == 0
    assert calls == []


def test_first_error_on_a_single_key_records_it_without_trying() -> None:
    seen: list[tuple[int, BaseException]] = []
    error = BadRow(7)

    def attempt(chunk: Sequence[int]) -> BaseException | None:
        raise AssertionError("the failing single key must not be tried again")

    assert isolate_failures([7], attempt, lambda k, e: seen.append((k, e)), first_error=error) == 0
    assert seen == [(7, error)]


def test_a_failing_record_stops_the_bisection() -> None:
    """An exception from `record` (e.g. LostRace) propagates; no later key is touched."""
    tried: list[list[int]] = []

    def attempt(chunk: Sequence[int]) -> BaseException | None:
        tried.append(list(chunk))
        return BadRow(chunk[0]) if 2 in chunk else None

    def record(key: int, error: BaseException) -> None:
        raise RuntimeError("lost race")

    with pytest.raises(RuntimeError):
        isolate_failures([1, 2, 3, 4], attempt, record)
    assert tried[0] == [1, 2, 3, 4]
    assert [c for c in tried[1:] if 3 in c or 4 in c] == []  # nothing after the bad key was tried
