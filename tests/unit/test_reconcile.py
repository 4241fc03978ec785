"""Unit tests for backfills.reconcile.stale_parts: which run parts to re-queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backfills.reconcile import PartReading, stale_parts

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STALE = 60.0
OLD = NOW - timedelta(seconds=600)       # long past stale_seconds
FRESH = NOW - timedelta(seconds=5)       # well within stale_seconds


def part(i: int, *, done: bool = False, lease: bool = False, at: datetime = OLD) -> PartReading:
    return PartReading(part=i, done=done, lease_held=lease, last_activity=at)


CASES = [
    # (id, state, readings, checkpoints, expected)
    ("old part without lease is stale", "running", [part(0)], {}, [0]),
    ("queued run: lost task message", "queued", [part(0)], {}, [0]),
    ("lease held: not stale", "running", [part(0, lease=True)], {}, []),
    ("recent activity: not stale", "running", [part(0, at=FRESH)], {}, []),
    ("exactly stale_seconds old is stale", "running", [part(0, at=NOW - timedelta(seconds=STALE))], {}, [0]),
    ("just under stale_seconds is not", "running", [part(0, at=NOW - timedelta(seconds=STALE - 0.5))], {}, []),
    ("checkpoint newer than last_activity keeps it fresh", "running", [part(0)], {0: FRESH}, []),
    ("old checkpoint does not help", "running", [part(0)], {0: OLD - timedelta(seconds=10)}, [0]),
    ("checkpoint of another part does not help", "running", [part(0), part(1)], {1: FRESH}, [0]),
    ("done parts are skipped", "running", [part(0, done=True), part(1), part(2, lease=True)], {}, [1]),
    ("several stale parts, in part order", "running", [part(0), part(1, at=FRESH), part(2), part(3)], {}, [0, 2, 3]),
    ("all done + running: part 0 finishes it", "running", [part(0, done=True), part(1, done=True)], {}, [0]),
    ("all done + a lease still held: leave it", "running", [part(0, done=True), part(1, done=True, lease=True)], {}, []),
    ("all done, recent activity: still finish it", "running", [part(0, done=True, at=FRESH)], {}, [0]),
    ("paused run: never", "paused", [part(0)], {}, []),
    ("succeeded: never", "succeeded", [part(0)], {}, []),
    ("completed_with_errors: never", "completed_with_errors", [part(0, done=True)], {}, []),
    ("failed: never", "failed", [part(0)], {}, []),
    ("cancelled: never", "cancelled", [part(0)], {}, []),
    ("no parts: nothing", "running", [], {}, []),
]


@pytest.mark.parametrize(("state", "readings", "checkpoints", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_stale_parts(state: str, readings: list[PartReading], checkpoints: dict[int, datetime],
                     expected: list[int]) -> None:
    assert stale_parts(state, readings, checkpoints, NOW, STALE) == expected


def test_stale_seconds_is_honoured() -> None:
    readings = [part(0, at=NOW - timedelta(seconds=30))]
    assert stale_parts("running", readings, {}, NOW, stale_seconds=20) == [0]
    assert stale_parts("running", readings, {}, NOW, stale_seconds=40) == []


def test_a_part_whose_message_waits_in_the_broker_is_not_stale() -> None:
    from datetime import datetime, timedelta, timezone

    from backfills.reconcile import PartReading, stale_parts

    now = datetime.now(timezone.utc)
    old = now - timedelta(seconds=600)
    waiting = PartReading(0, False, False, old, queued=True)
    lost = PartReading(1, False, False, old, queued=False)
    assert stale_parts("running", [waiting, lost], {}, now, 60) == [1]
    assert stale_parts("queued", [waiting], {}, now, 60) == []
    finishing = [PartReading(0, True, False, old, queued=True), PartReading(1, True, False, old)]
    assert stale_parts("running", finishing, {}, now, 60) == []
