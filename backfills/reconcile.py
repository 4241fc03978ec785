"""Which run parts have no live worker and must be re-queued. Pure.

A part is stale when no message for it waits in the broker, nobody holds its lease,
and nothing has moved it (no Redis checkpoint, no durable progress, no state change)
for `stale_seconds`: its task message was lost (a killed worker, a Redis that
restarted). Re-queuing is always safe: the lease lets only one worker run a part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from backfills.states import RunState

__all__ = ["PartReading", "stale_parts"]


@dataclass(frozen=True)
class PartReading:
    """What is known of one part of an active run."""

    part: int
    done: bool
    lease_held: bool
    last_activity: datetime
    queued: bool = False


def stale_parts(state: str, readings: list[PartReading], checkpoint_at: Mapping[int, datetime],
                now: datetime, stale_seconds: float) -> list[int]:
    """Parts of a `queued`/`running` run to re-queue. A running run whose parts are all
    done (its final transition was lost) yields part 0, which finishes it."""
    if state not in (RunState.QUEUED, RunState.RUNNING):
        return []
    if readings and all(r.done for r in readings):
        return [] if any(r.lease_held or r.queued for r in readings) else [0]
    stale = []
    for reading in readings:
        if reading.done or reading.lease_held or reading.queued:
            continue
        latest = max(reading.last_activity, checkpoint_at.get(reading.part, reading.last_activity))
        if (now - latest).total_seconds() >= stale_seconds:
            stale.append(reading.part)
    return stale
