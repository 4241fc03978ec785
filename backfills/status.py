"""A run's status: its durable record, its live checkpoints and events, at a given time.

`run_status` is pure (the time is passed in); `read_status` reads the run's Redis state
and the clock for it. The CLI table and line, `status --json`, `--watch`, the exporter and the demo all
read a `RunStatus`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from backfills.control import Checkpoint, RunControl
from backfills.foreground import run_ratio
from backfills.runs import Run
from backfills.states import TERMINAL, RunState

__all__ = ["RunStatus", "read_status", "run_status"]

EVENTS_SHOWN = 20


@dataclass(frozen=True)
class RunStatus:
    """What `status` shows of one run."""

    run: Run
    throttled: tuple[str, ...]
    batch_size: int
    checkpoint_age_seconds: float | None
    rows_per_second: float | None
    eta_seconds: float | None
    events: tuple[str, ...] = ()
    foreground_latency_ratio: float | None = None

    @property
    def percent(self) -> float:
        """Done fraction (0-100) from rows processed, row errors and the remaining estimate."""
        run = self.run
        if run.state in (RunState.SUCCEEDED, RunState.COMPLETED_WITH_ERRORS):
            return 100.0
        remaining = run.rows_remaining_estimate
        if remaining is None:
            return 0.0
        done = run.rows_processed + run.row_errors
        total = done + remaining
        return 100.0 * done / total if total else 100.0

    def to_json(self) -> dict[str, object]:
        """The `status --json` object (SPEC section 3): the reasons joined with ", "."""
        data = self.run.to_status_json()
        data["events"] = list(self.events)
        data["throttled"] = ", ".join(self.throttled) or None
        data["foreground_latency_ratio"] = self.foreground_latency_ratio
        data["batch_size"] = self.batch_size
        if self.checkpoint_age_seconds is not None:
            data["checkpoint_age_seconds"] = self.checkpoint_age_seconds
        data["rows_per_second"] = self.rows_per_second
        data["eta_seconds"] = self.eta_seconds
        return data


def run_status(run: Run, checkpoints: Mapping[int, Checkpoint], events: Sequence[str], now: float,
               latency_ratio: float | None = None) -> RunStatus:
    """The status of `run` given its parts' live checkpoints, its events and the foreground
    guard's last latency ratio, at `now` (seconds since the epoch)."""
    running = run.state == RunState.RUNNING
    reasons = sorted({cp.throttled for cp in checkpoints.values() if cp.throttled}) if running else []
    batch_size = max((cp.batch_size for cp in checkpoints.values()), default=run.options.batch_size)
    age = round(now - max(cp.at for cp in checkpoints.values()), 3) if checkpoints else None
    rate = _rate(run)
    remaining = run.rows_remaining_estimate
    eta: float | None = None
    if rate and remaining is not None and running:
        eta = round(remaining / rate, 1)
    elif run.state in TERMINAL:
        eta = 0
    return RunStatus(run, tuple(reasons), batch_size, age, round(rate, 1) if rate else None, eta, tuple(events),
                     latency_ratio if running else None)


def read_status(run: Run, control: RunControl, clock: Callable[[], float] = time.time) -> RunStatus:
    """`run_status` over the run's Redis state (`control`), at the time the clock gives
    once it is read."""
    checkpoints, events = control.checkpoints(), control.events(limit=EVENTS_SHOWN)
    ratio = run_ratio(control) if run.state == RunState.RUNNING else None
    return run_status(run, checkpoints, events, clock(), ratio)


def _rate(run: Run) -> float | None:
    if run.started_at is None or run.rows_processed == 0:
        return None
    end: datetime = run.finished_at or run.last_progress_at or run.started_at
    seconds = (end - run.started_at).total_seconds()
    return run.rows_processed / seconds if seconds > 0 else None
