"""`backfill exporter`: one process serving the metrics of `monitoring.metrics` on /metrics.

At every scrape its collector (a) reads what the workers recorded in Redis
(`monitoring.recorder`) and (b) samples the database (`monitoring.sampler`). A scrape
never hangs and never fails with an HTTP error: a reading that cannot be taken shows as
`backfill_exporter_database_up 0` or `backfill_exporter_redis_up 0`. The exporter keeps a
`CollectorRegistry` of its own; prometheus_client's global registry is never used.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Sequence
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis as redis_lib
import sqlalchemy as sa
from prometheus_client import make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from backfills.health import HealthReadings
from backfills.registry import Registry
from backfills.states import RunState
from monitoring import metrics as m
from monitoring.recorder import BackfillCounters
from monitoring.sampler import RunSample, Sampler, Scrape

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "BackfillCollector", "Exporter", "MetricsServer", "families"]

DEFAULT_PORT = 9187
DEFAULT_HOST = "127.0.0.1"


def _counter_families(counters: Sequence[BackfillCounters]) -> list[Metric]:
    rows, errors, locks = m.ROWS_PROCESSED.counter(), m.ROW_ERRORS.counter(), m.LOCK_TIMEOUTS.counter()
    batches, durations = m.BATCHES.counter(), m.BATCH_DURATION.histogram()
    for c in counters:
        rows.add_metric([c.backfill], c.rows_processed)
        errors.add_metric([c.backfill], c.row_errors)
        locks.add_metric([c.backfill], c.lock_timeouts)
        for outcome in m.OUTCOMES:
            batches.add_metric([c.backfill, outcome], c.batches.get(outcome, 0))
        durations.add_metric([c.backfill], list(c.duration_buckets), c.duration_sum)
    return [rows, batches, durations, errors, locks]


def _run_families(runs: Sequence[RunSample], latest_states: dict[str, str]) -> list[Metric]:
    gauges = {d: d.gauge() for d in (m.BATCH_SIZE, m.ROWS_REMAINING, m.ROWS_ESTIMATE, m.ETA, m.CHECKPOINT_AGE,
                                      m.FOREGROUND_LATENCY_RATIO)}
    throttled, states = m.THROTTLED.gauge(), m.RUN_STATE.gauge()
    for run in runs:
        for metric, value in ((m.BATCH_SIZE, run.batch_size), (m.ROWS_REMAINING, run.rows_remaining),
                              (m.ROWS_ESTIMATE, run.rows_estimate), (m.ETA, run.eta_seconds),
                              (m.CHECKPOINT_AGE, run.checkpoint_age_seconds),
                              (m.FOREGROUND_LATENCY_RATIO, run.foreground_latency_ratio)):
            if value is not None:
                gauges[metric].add_metric([run.backfill], value)
        active = run.throttled if run.state == RunState.RUNNING else frozenset()
        for reason in sorted(set(m.KNOWN_THROTTLE_REASONS) | active):
            throttled.add_metric([run.backfill, reason], 1.0 if reason in active else 0.0)
    for backfill, current in sorted(latest_states.items()):
        for state in m.RUN_STATES:
            states.add_metric([backfill, state], 1.0 if state == current else 0.0)
    return [*gauges.values(), throttled, states]


def _health_families(health: HealthReadings) -> list[Metric]:
    lag, lag_bytes = m.REPLICATION_LAG.gauge(), m.REPLICATION_LAG_BYTES.gauge()
    waiters, wait_max = m.LOCK_WAITERS.gauge(), m.LOCK_WAIT_MAX.gauge()
    blocked = m.LOCK_WAITERS_BLOCKED_BY_BACKFILL.gauge()
    for replica in health.replicas or ():
        lag.add_metric([replica.name], replica.lag_seconds or 0.0)
        if replica.lag_bytes is not None:
            lag_bytes.add_metric([replica.name], float(replica.lag_bytes))
    for lock in health.locks or ():
        waiters.add_metric([lock.table], lock.waiters)
        wait_max.add_metric([lock.table], lock.max_wait_seconds)
        blocked.add_metric([lock.table], lock.blocked_by_backfill)
    return [lag, lag_bytes, waiters, wait_max, blocked]


def families(scrape: Scrape) -> list[Metric]:
    """The metric families of one scrape's readings."""
    ups: list[Metric] = []
    for metric, value in ((m.DATABASE_UP, scrape.database_up), (m.REDIS_UP, scrape.redis_up),
                          (m.SCRAPE_SECONDS, scrape.seconds)):
        family = metric.gauge()
        family.add_metric([], float(value))
        ups.append(family)
    return [*_counter_families(scrape.counters), *_run_families(scrape.runs, scrape.latest_states),
            *_health_families(scrape.health), *ups]


class BackfillCollector(Collector):
    """Takes fresh readings at every scrape (one scrape at a time)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        """The metrics this collector serves (names only, no readings)."""
        return [d.family() for d in m.ALL_METRICS]

    def collect(self) -> Iterable[Metric]:
        """Read now and return every metric family."""
        with self._lock:
            scrape = self.sampler.sample()
        return families(scrape)


class Exporter:
    """The exporter's sampler over the connections it is given, and its own collector registry.

    The caller bounds those connections (session `statement_timeout` and Redis socket
    timeout of twice `timeout_ms`; the health readings set `timeout_ms` for themselves),
    so that a scrape never hangs.
    """

    def __init__(self, engine: sa.Engine, client: redis_lib.Redis, namespace: str, registry: Registry,
                 tables: Sequence[str] | None = None, timeout_ms: int = 1000) -> None:
        self.engine, self.redis = engine, client
        chosen = tuple(tables) if tables else tuple(sorted({d.table for d in registry}))
        self.sampler = Sampler(engine, client, namespace, registry, chosen, timeout_ms)
        self.metrics = CollectorRegistry()
        self.metrics.register(BackfillCollector(self.sampler))

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()
        self.redis.close()


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: object) -> None:
        return None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """An HTTP server exposing a collector registry (every path serves the metrics)."""

    def __init__(self, metrics: CollectorRegistry, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self.httpd = make_server(host, port, make_wsgi_app(metrics), server_class=server_class,
                                 handler_class=_QuietHandler)

    @property
    def url(self) -> str:
        """Where the metrics are served."""
        address = self.httpd.server_address
        host, port = str(address[0]), address[1]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def serve_forever(self) -> None:
        """Serve until `shutdown` (from another thread) or an interrupt."""
        self.httpd.serve_forever(poll_interval=0.5)

    def shutdown(self) -> None:
        """Stop `serve_forever` (call from another thread)."""
        self.httpd.shutdown()

    def close(self) -> None:
        """Release the socket."""
        self.httpd.server_close()
