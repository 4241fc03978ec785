"""Seconds each run spent throttled, per reason, kept durably in `backfill.throttle_time`."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

__all__ = ["ThrottleTimeStore"]

_ADD = sa.text("""
INSERT INTO backfill.throttle_time (run_id, reason, seconds)
SELECT CAST(:run_id AS uuid), r.reason, r.seconds
FROM unnest(CAST(:reasons AS text[]), CAST(:seconds AS float8[])) AS r(reason, seconds)
ON CONFLICT (run_id, reason) DO UPDATE SET seconds = backfill.throttle_time.seconds + excluded.seconds
""")


class ThrottleTimeStore:
    """Adds up the throttle time of runs (`Run.throttle_seconds` reads it)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add(self, run_id: str, seconds: Mapping[str, float]) -> None:
        """Add `seconds` (reason -> seconds) to the run's totals."""
        spent = {reason: s for reason, s in seconds.items() if s > 0}
        if not spent:
            return
        with self.engine.begin() as conn:
            conn.execute(_ADD, {"run_id": run_id, "reasons": list(spent), "seconds": list(spent.values())})
