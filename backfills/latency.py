"""What the application would feel, as plain numbers: samples, readings and the guard's
ratio. Pure, no IO.

A *sample* is one timing of the two probes (a durable commit, an indexed read), tagged
with whether a backfill batch was in flight on the server when it was taken. A
*reading* sums up the recent samples: the tail of all of them (`recent`, the last
`RECENT_WINDOW` seconds), of the ones taken while batches were in flight (`busy`, the
last `BUSY_WINDOW` seconds) and of the ones taken while none was (`idle`, the last
`IDLE_WINDOW` seconds). A tail is the 90th percentile or the mean, whichever is larger:
one stall shows, as it would in the application's own p99.

The guard's ratio is the larger of two:
- the run's *effect*: recent over idle, both measured in the same minute, so the
  machine's own noise and the application's own load are on both sides and cancel.
  `recent` mixes the moments in a batch and between batches as the application meets
  them, so a run that sleeps longer between batches lowers it: that is the guard's lever.
- the database's *stress*: idle now over the baseline measured before the run started
  (or re-measured during a long pause), so a database already in trouble is left alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Latency", "Sample", "Reading", "ratio", "tail", "summarize", "guard_ratio", "latest",
           "BUSY_WINDOW", "IDLE_WINDOW", "RECENT_WINDOW", "MIN_SAMPLES", "FLOOR_MS"]

FLOOR_MS = 1.0      # a millisecond more or less is below what an application notices: added to both sides
BUSY_WINDOW = 2.0   # seconds of in-flight samples in a reading
RECENT_WINDOW = 10.0  # seconds of all samples in a reading (busy and idle, as the application meets them)
IDLE_WINDOW = 20.0  # seconds of idle samples in a reading (batches leave few idle moments)
MIN_SAMPLES = 3     # fewer samples than this make no tail
FAILING_AFTER = 1.0  # seconds without one successful sample: the reading is unknown


@dataclass(frozen=True)
class Latency:
    """Commit and read latency in milliseconds; None fields are failed probes."""

    commit_ms: float | None
    read_ms: float | None
    at: float = 0.0

    @property
    def known(self) -> bool:
        """Whether both probes succeeded."""
        return self.commit_ms is not None and self.read_ms is not None


@dataclass(frozen=True)
class Sample:
    """One timing of both probes at `at`; `busy` when a batch was in flight."""

    at: float
    busy: bool
    commit_ms: float | None
    read_ms: float | None

    @property
    def ok(self) -> bool:
        """Whether both probes succeeded."""
        return self.commit_ms is not None and self.read_ms is not None


@dataclass(frozen=True)
class Reading:
    """The recent samples summed up at `at` (None: too few samples of that kind);
    `failing` when no probe has succeeded for `FAILING_AFTER` seconds."""

    at: float
    busy: Latency | None
    idle: Latency | None
    failing: bool = False
    recent: Latency | None = None


def ratio(now: Latency, baseline: Latency) -> float | None:
    """The worse of the two ratios of `now` over `baseline` (None when either is unknown)."""
    if now.commit_ms is None or now.read_ms is None or baseline.commit_ms is None or baseline.read_ms is None:
        return None
    return max((now.commit_ms + FLOOR_MS) / (baseline.commit_ms + FLOOR_MS),
               (now.read_ms + FLOOR_MS) / (baseline.read_ms + FLOOR_MS))


def tail(values: Sequence[float]) -> float:
    """The 90th percentile or the mean, whichever is larger (`values` not empty)."""
    if len(values) == 1:
        return float(values[0])
    p90 = statistics.quantiles(values, n=10, method="inclusive")[-1]
    return float(max(p90, statistics.fmean(values)))


def _tail_of(samples: Sequence[Sample], at: float) -> Latency | None:
    if len(samples) < MIN_SAMPLES:
        return None
    return Latency(tail([s.commit_ms for s in samples if s.commit_ms is not None]),
                   tail([s.read_ms for s in samples if s.read_ms is not None]), at)


def summarize(samples: Sequence[Sample], now: float) -> Reading:
    """The reading at `now` from `samples` (oldest first)."""
    ok = [s for s in samples if s.ok]
    busy = [s for s in ok if s.busy and now - s.at <= BUSY_WINDOW]
    idle = [s for s in ok if not s.busy and now - s.at <= IDLE_WINDOW]
    recent = [s for s in ok if now - s.at <= RECENT_WINDOW]
    failing = not any(now - s.at <= FAILING_AFTER for s in ok)
    return Reading(now, _tail_of(busy, now), _tail_of(idle, now), failing, _tail_of(recent, now))


def guard_ratio(reading: Reading, baseline: Latency | None) -> float | None:
    """The guard's ratio from a reading and the idle baseline: the larger of the run's
    effect (recent over idle) and the database's stress (idle, or recent when no idle tail
    is known, over the baseline). None (unknown) when the probes fail or nothing is known.
    (A reading without `recent` takes `busy` in its place.)"""
    if reading.failing:
        return None
    recent = reading.recent or reading.busy
    effect = ratio(recent, reading.idle) if recent is not None and reading.idle is not None else None
    now = latest(reading)
    stress = ratio(now, baseline) if now is not None and baseline is not None else None
    known = [r for r in (effect, stress) if r is not None]
    return max(known) if known else None


def latest(reading: Reading) -> Latency | None:
    """The latency of the database as it is now, apart from the batches as far as known:
    between batches, else all recent samples, else those in flight (None when the
    probes fail or nothing is known)."""
    if reading.failing:
        return None
    return reading.idle or reading.recent or reading.busy
