"""Worker-side counters kept in Redis, so that every process on every machine adds to the
same numbers and a recycled Celery child loses nothing.

Layout (all under the settings' namespace):

- `{ns}:metrics:backfills`: set of the backfill names that recorded something;
- `{ns}:metrics:backfill:{name}`: one hash per backfill with integer fields
  `rows_processed`, `row_errors`, `lock_timeouts`, `batches:{outcome}`,
  `duration:count`, `duration:le:{bound}` (per bucket, not cumulative) and the float
  field `duration:sum`.

A batch is recorded with one pipelined MULTI/EXEC round trip, so a scrape never sees a
histogram whose count and buckets disagree. The exporter reads everything back with two
round trips at scrape time. Counters have no TTL: they only ever grow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib

from monitoring.metrics import BATCH_DURATION_BUCKETS, OUTCOMES, bucket_label

__all__ = ["BackfillCounters", "MetricsRecorder", "bucket_for"]


def bucket_for(seconds: float) -> str:
    """The `le` label of the smallest bucket that holds `seconds`."""
    return bucket_label(next(b for b in BATCH_DURATION_BUCKETS if seconds <= b))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class BackfillCounters:
    """What the workers recorded for one backfill, read back from Redis."""

    backfill: str
    rows_processed: int = 0
    row_errors: int = 0
    lock_timeouts: int = 0
    batches: Mapping[str, int] = field(default_factory=dict)
    duration_buckets: tuple[tuple[str, int], ...] = ()
    duration_sum: float = 0.0
    duration_count: int = 0

    @classmethod
    def from_hash(cls, backfill: str, raw: Mapping[Any, Any]) -> BackfillCounters:
        """Parse one backfill's hash; histogram buckets come back cumulative, as exposed."""
        fields = {_text(k): _text(v) for k, v in raw.items()}

        def count(name: str) -> int:
            return int(fields.get(name) or 0)

        cumulative, running = [], 0
        for bound in BATCH_DURATION_BUCKETS:
            running += count(f"duration:le:{bucket_label(bound)}")
            cumulative.append((bucket_label(bound), running))
        return cls(backfill, rows_processed=count("rows_processed"), row_errors=count("row_errors"),
                   lock_timeouts=count("lock_timeouts"),
                   batches={outcome: count(f"batches:{outcome}") for outcome in OUTCOMES},
                   duration_buckets=tuple(cumulative), duration_sum=float(fields.get("duration:sum") or 0.0),
                   duration_count=count("duration:count"))


class MetricsRecorder:
    """Adds to the Redis counters of a namespace, and reads them all back."""

    def __init__(self, client: redis_lib.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.names_key = f"{namespace}:metrics:backfills"

    def key(self, backfill: str) -> str:
        """The hash of one backfill's counters."""
        return f"{self.namespace}:metrics:backfill:{backfill}"

    def record_batch(self, backfill: str, outcome: str, rows: int, row_errors: int, seconds: float) -> None:
        """A committed batch (`ok` or `split`): rows, row errors, outcome and duration."""
        self._add(backfill, {"rows_processed": rows, "row_errors": row_errors, f"batches:{outcome}": 1,
                             "duration:count": 1, f"duration:le:{bucket_for(seconds)}": 1},
                  duration=seconds)

    def record_attempt(self, backfill: str, outcome: str, lock_timeout: bool) -> None:
        """A batch attempt that did not commit: `retried` or `failed`, and whether it hit lock_timeout."""
        self._add(backfill, {f"batches:{outcome}": 1, "lock_timeouts": int(lock_timeout)})

    def _add(self, backfill: str, increments: Mapping[str, int], duration: float | None = None) -> None:
        if any(k.startswith("batches:") and k[len("batches:"):] not in OUTCOMES for k in increments):
            raise ValueError(f"unknown batch outcome in {sorted(increments)}; known: {', '.join(OUTCOMES)}")
        key = self.key(backfill)
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self.names_key, backfill)
        for name, amount in increments.items():
            if amount:
                pipe.hincrby(key, name, amount)
        if duration is not None:
            pipe.hincrbyfloat(key, "duration:sum", max(0.0, duration))
        pipe.execute()

    def read(self) -> list[BackfillCounters]:
        """Every backfill's counters, by name."""
        names = sorted(_text(n) for n in self.client.smembers(self.names_key))
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.key(name))
        return [BackfillCounters.from_hash(name, raw) for name, raw in zip(names, pipe.execute())]
