"""Every metric `backfill exporter` serves, defined once (SPEC §6 plus the exporter's own).

Names, types and labels here are a contract: dashboards, alert rules and users' scripts
query them. Label `backfill` is always the backfill's name, never a run id or a key.

Nothing is registered anywhere at import time: `MetricDef.family()` builds an empty
metric family for one scrape, and the exporter's collector fills it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric

from backfills.states import STATES
from backfills.reasons import ThrottleReason

__all__ = [
    "ALL_METRICS",
    "BATCHES",
    "BATCH_DURATION",
    "BATCH_DURATION_BUCKETS",
    "BATCH_SIZE",
    "CHECKPOINT_AGE",
    "DATABASE_UP",
    "ETA",
    "EXPORTER_METRICS",
    "FOREGROUND_LATENCY_RATIO",
    "KNOWN_THROTTLE_REASONS",
    "LOCK_TIMEOUTS",
    "LOCK_WAITERS",
    "LOCK_WAITERS_BLOCKED_BY_BACKFILL",
    "LOCK_WAIT_MAX",
    "OUTCOMES",
    "REDIS_UP",
    "REPLICATION_LAG",
    "REPLICATION_LAG_BYTES",
    "ROWS_ESTIMATE",
    "ROWS_PROCESSED",
    "ROWS_REMAINING",
    "ROW_ERRORS",
    "RUN_STATE",
    "RUN_STATES",
    "SCRAPE_SECONDS",
    "SPEC_METRICS",
    "THROTTLED",
    "MetricDef",
    "bucket_label",
]

OUTCOMES: tuple[str, ...] = ("ok", "retried", "split", "failed")
"""`backfill_batches_total{outcome}`: committed (`ok`), committed after bisecting around bad
rows (`split`), an attempt that failed transiently and was retried (`retried`), a batch that
failed the run (`failed`)."""

RUN_STATES: tuple[str, ...] = STATES
"""`backfill_run_state{state}` has one series per state, 1 for the current one."""

KNOWN_THROTTLE_REASONS: tuple[str, ...] = tuple(sorted(reason.value for reason in ThrottleReason))
"""Reasons a run can be throttled for: `backfill_throttled{reason}` is 0 or 1 for each of them."""

BATCH_DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                             30.0, 60.0, float("inf"))
"""Upper bounds of `backfill_batch_duration_seconds` (a batch is bounded by its statement timeout)."""

_F = TypeVar("_F", bound=Metric)

_KINDS = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}


@dataclass(frozen=True)
class MetricDef:
    """One metric: its exposed name, Prometheus type, help text and label names."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()

    def family(self) -> Metric:
        """An empty metric family of this metric, to fill for one scrape."""
        family: Metric = _KINDS[self.kind](self.name, self.help, labels=list(self.labels))
        return family

    def counter(self) -> CounterMetricFamily:
        """`family()` of a counter."""
        return self._of(CounterMetricFamily)

    def gauge(self) -> GaugeMetricFamily:
        """`family()` of a gauge."""
        return self._of(GaugeMetricFamily)

    def histogram(self) -> HistogramMetricFamily:
        """`family()` of a histogram."""
        return self._of(HistogramMetricFamily)

    def _of(self, kind: type[_F]) -> _F:
        family = self.family()
        if not isinstance(family, kind):
            raise TypeError(f"{self.name} is a {self.kind}, not a {kind.__name__}")
        return family

    @property
    def sample_names(self) -> tuple[str, ...]:
        """The names of the samples this metric exposes (histograms expose three)."""
        if self.kind == "histogram":
            return tuple(f"{self.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        return (self.name,)


def bucket_label(bound: float) -> str:
    """The `le` label of a histogram bucket, as Prometheus writes it (`0.5`, `10.0`, `+Inf`)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


_B = ("backfill",)

# -- SPEC §6 ------------------------------------------------------------------------------
ROWS_PROCESSED = MetricDef("backfill_rows_processed_total", "counter",
                           "Rows changed by committed batches.", _B)
BATCHES = MetricDef("backfill_batches_total", "counter",
                    "Batch attempts by outcome: ok, split (bisected around bad rows), retried, failed.",
                    ("backfill", "outcome"))
BATCH_DURATION = MetricDef("backfill_batch_duration_seconds", "histogram",
                           "Duration of committed batches.", _B)
BATCH_SIZE = MetricDef("backfill_batch_size", "gauge", "Current batch size of the active run.", _B)
ROWS_REMAINING = MetricDef("backfill_rows_remaining", "gauge",
                           "Rows the active run still has to do (its lag, in rows).", _B)
ETA = MetricDef("backfill_eta_seconds", "gauge", "Estimated seconds until the active run ends.", _B)
FOREGROUND_LATENCY_RATIO = MetricDef("backfill_foreground_latency_ratio", "gauge",
                                     "The foreground guard's last latency reading over its idle baseline.", _B)
CHECKPOINT_AGE = MetricDef("backfill_checkpoint_age_seconds", "gauge",
                           "Seconds since the active run last wrote a checkpoint.", _B)
RUN_STATE = MetricDef("backfill_run_state", "gauge",
                      "State of the backfill's latest run: 1 for the current state, 0 for the others.",
                      ("backfill", "state"))
ROW_ERRORS = MetricDef("backfill_row_errors_total", "counter", "Rows recorded as failed (row errors).", _B)
LOCK_TIMEOUTS = MetricDef("backfill_lock_timeouts_total", "counter",
                          "Batch attempts that hit lock_timeout.", _B)
THROTTLED = MetricDef("backfill_throttled", "gauge",
                      "1 while the active run is throttled for this reason, else 0.", ("backfill", "reason"))
REPLICATION_LAG = MetricDef("backfill_replication_lag_seconds", "gauge",
                            "Replication lag of each standby, as the primary sees it.", ("replica",))
LOCK_WAITERS = MetricDef("backfill_lock_waiters", "gauge",
                         "Sessions waiting on a lock of the table.", ("table",))
LOCK_WAIT_MAX = MetricDef("backfill_lock_wait_max_seconds", "gauge",
                          "Longest current wait on a lock of the table.", ("table",))

# -- the exporter's own -------------------------------------------------------------------
ROWS_ESTIMATE = MetricDef("backfill_rows_estimate", "gauge",
                          "Rows the active run set out to do (for progress %).", _B)
LOCK_WAITERS_BLOCKED_BY_BACKFILL = MetricDef(
    "backfill_lock_waiters_blocked_by_backfill", "gauge",
    "Sessions waiting on a lock of the table that a backfill session holds.", ("table",))
REPLICATION_LAG_BYTES = MetricDef("backfill_replication_lag_bytes", "gauge",
                                  "WAL bytes each standby has not replayed yet.", ("replica",))
DATABASE_UP = MetricDef("backfill_exporter_database_up", "gauge",
                        "1 when every database reading of this scrape succeeded.")
REDIS_UP = MetricDef("backfill_exporter_redis_up", "gauge", "1 when Redis could be read during this scrape.")
SCRAPE_SECONDS = MetricDef("backfill_exporter_scrape_duration_seconds", "gauge",
                           "How long this scrape's readings took.")

SPEC_METRICS: tuple[MetricDef, ...] = (
    ROWS_PROCESSED, BATCHES, BATCH_DURATION, BATCH_SIZE, ROWS_REMAINING, ETA, CHECKPOINT_AGE, RUN_STATE,
    ROW_ERRORS, LOCK_TIMEOUTS, THROTTLED, FOREGROUND_LATENCY_RATIO, REPLICATION_LAG, LOCK_WAITERS, LOCK_WAIT_MAX,
)
EXPORTER_METRICS: tuple[MetricDef, ...] = (
    ROWS_ESTIMATE, LOCK_WAITERS_BLOCKED_BY_BACKFILL, REPLICATION_LAG_BYTES, DATABASE_UP, REDIS_UP, SCRAPE_SECONDS,
)
ALL_METRICS: tuple[MetricDef, ...] = SPEC_METRICS + EXPORTER_METRICS
