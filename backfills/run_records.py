"""The records of a run as read from PostgreSQL: `Run`, its parts (`Progress`) and its
`RowError`s. Plain frozen values with their JSON forms (`status --json`, SPEC section 3);
`backfills.runs.RunStore` reads and writes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backfills.options import RunOptions
from backfills.states import RunState

__all__ = ["Key", "Progress", "RowError", "Run"]

Key = list[str]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class Progress:
    """One key range of a run (a row of `backfill.progress`): bounds, cursor and counters."""

    part: int
    lower_key: Key | None
    upper_key: Key | None
    cursor: Key | None
    done: bool
    rows_processed: int
    rows_scanned: int
    batches: int
    row_errors: int
    updated_at: datetime
    rows_skipped: int = 0
    rows_still_locked: int = 0
    closing_pass: int = 0
    pass_start_rows: int = 0

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Progress:
        """From a `get_parts` result row."""
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict (timestamps as ISO 8601)."""
        data = dataclasses.asdict(self)
        data["updated_at"] = _iso(self.updated_at)
        return data


@dataclass(frozen=True)
class RowError:
    """A row that could not be changed: its key and why."""

    key: Key
    error: str
    created_at: datetime

    def to_json(self) -> dict[str, object]:
        """`key`, `error` (SPEC §3 `errors --json`) and `created_at`."""
        return {"key": self.key, "error": self.error, "created_at": _iso(self.created_at)}


@dataclass(frozen=True)
class Run:
    """A run record with its parts. Counters are sums over the parts."""

    id: str
    backfill: str
    state: RunState
    options: RunOptions
    tenant: str | None
    parent_run_id: str | None
    rows_estimate: int | None
    last_error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    order: str = "key"
    order_reason: str | None = None
    parts: tuple[Progress, ...] = field(default_factory=tuple)
    throttle_seconds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], parts: Sequence[Progress]) -> Run:
        """From a `get_run` / `list_runs` result row and the run's parts."""
        names = [f.name for f in dataclasses.fields(cls)
                 if f.name not in ("state", "options", "parts", "throttle_seconds")]
        return cls(**{n: row[n] for n in names}, state=RunState(row["state"]),
                   options=RunOptions.from_json(row["options"]), parts=tuple(parts),
                   throttle_seconds={k: float(v) for k, v in row["throttle_seconds"].items()})

    @property
    def rows_processed(self) -> int:
        """Rows changed so far."""
        return sum(p.rows_processed for p in self.parts)

    @property
    def rows_scanned(self) -> int:
        """Keys visited so far."""
        return sum(p.rows_scanned for p in self.parts)

    @property
    def batches(self) -> int:
        """Batches committed so far."""
        return sum(p.batches for p in self.parts)

    @property
    def row_errors(self) -> int:
        """Rows recorded as failed so far."""
        return sum(p.row_errors for p in self.parts)

    @property
    def rows_skipped(self) -> int:
        """Rows a batch skipped because another session held their lock (revisited later)."""
        return sum(p.rows_skipped for p in self.parts)

    @property
    def rows_still_locked(self) -> int:
        """Skipped rows not done yet (still waiting, or left after the run's patience)."""
        return sum(p.rows_still_locked for p in self.parts)

    @property
    def done(self) -> bool:
        """Whether every part has reached its end."""
        return all(p.done for p in self.parts)

    @property
    def last_progress_at(self) -> datetime | None:
        """When a part last moved (None without parts)."""
        return max((p.updated_at for p in self.parts), default=None)

    @property
    def rows_remaining_estimate(self) -> int | None:
        """`rows_estimate` minus rows done or failed, never below 0; None without an estimate."""
        if self.rows_estimate is None:
            return None
        return max(self.rows_estimate - self.rows_processed - self.row_errors, 0)

    def to_status_json(self) -> dict[str, object]:
        """The `status --json` object (SPEC §3). `throttled` and `eta_seconds` are None here:
        the caller fills them from Redis and the observed rate."""
        return {
            "run_id": self.id, "backfill": self.backfill, "state": self.state,
            "rows_processed": self.rows_processed, "rows_remaining_estimate": self.rows_remaining_estimate,
            "batches": self.batches, "row_errors": self.row_errors,
            "rows_skipped_while_locked": self.rows_skipped, "rows_still_locked": self.rows_still_locked,
            "throttle_seconds": dict(self.throttle_seconds),
            "batch_size": self.options.batch_size, "throttled": None,
            "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at), "eta_seconds": None, "tenant": self.tenant,
            "last_error": self.last_error, "parent_run_id": self.parent_run_id,
            "rows_estimate": self.rows_estimate, "rows_scanned": self.rows_scanned,
            "updated_at": _iso(self.updated_at), "last_progress_at": _iso(self.last_progress_at),
            "parts": [p.to_json() for p in self.parts], "options": self.options.to_json(),
            "order": self.order, "order_reason": self.order_reason,
        }
