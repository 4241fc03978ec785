"""What the application would feel, measured on the worker's own connections (IO only).

A reading times, a few times each, a tiny durable write transaction on the tool's own
table `backfill.probe` and an indexed read of one row of the target table by key, and
keeps the mean of each. A failed or timed-out probe is an unknown reading (None). One
reading per table is taken at most once a second for every worker of the database, and
shared through Redis, as the health readings are. The baseline (the same, measured
while the run is idle) is kept in Redis too.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis as redis_lib
import sqlalchemy as sa

from backfills.control import RunControl

__all__ = ["Latency", "LatencyProbe", "ForegroundMonitor", "ratio", "publish_run_ratio", "run_ratio"]

READING_INTERVAL = 1.0
SAMPLES = 3
FLOOR_MS = 1.0     # a millisecond more or less is below what an application notices: added to both sides
SAMPLE_KEYS = 16


@dataclass(frozen=True)
class Latency:
    """Mean commit and read latency in milliseconds; None fields are failed probes."""

    commit_ms: float | None
    read_ms: float | None
    at: float = 0.0

    @property
    def known(self) -> bool:
        """Whether both probes succeeded."""
        return self.commit_ms is not None and self.read_ms is not None


def ratio(now: Latency, baseline: Latency) -> float | None:
    """The worse of the two ratios of `now` over `baseline` (None when either is unknown)."""
    if now.commit_ms is None or now.read_ms is None or baseline.commit_ms is None or baseline.read_ms is None:
        return None
    return max((now.commit_ms + FLOOR_MS) / (baseline.commit_ms + FLOOR_MS),
               (now.read_ms + FLOOR_MS) / (baseline.read_ms + FLOOR_MS))


class LatencyProbe:
    """Times the two probes for one table (its keys are sampled once)."""

    def __init__(self, engine: sa.Engine, table: str, key_columns: tuple[str, ...],
                 timeout_ms: int = 2000) -> None:
        self.engine = engine
        self.table = table
        self.key_columns = key_columns
        self.timeout_ms = timeout_ms
        self.slot = os.getpid() % 100_000
        self._keys: list[tuple[object, ...]] = []
        self._next = 0

    def _settings(self, conn: sa.Connection) -> None:
        conn.execute(sa.text("SELECT set_config('statement_timeout', :t, true), "
                             "set_config('synchronous_commit', 'on', true), "
                             "set_config('application_name', 'backfill-probe', true), "
                             "set_config('app.is_system_admin', 'true', true)"), {"t": f"{self.timeout_ms}ms"})

    def _commit_ms(self) -> float:
        with self.engine.connect() as conn:
            started = time.perf_counter()
            with conn.begin():
                self._settings(conn)
                conn.execute(sa.text("INSERT INTO backfill.probe (slot, at) VALUES (:s, clock_timestamp()) "
                                     "ON CONFLICT (slot) DO UPDATE SET at = excluded.at"), {"s": self.slot})
            return (time.perf_counter() - started) * 1000

    def _read_ms(self) -> float:
        cols = ", ".join(f't."{c}"' for c in self.key_columns)
        with self.engine.connect() as conn:
            with conn.begin():
                self._settings(conn)
                if not self._keys:
                    self._keys = [tuple(r) for r in conn.execute(sa.text(
                        f"SELECT {cols} FROM {self.table} t TABLESAMPLE SYSTEM (1) LIMIT {SAMPLE_KEYS}"))]
                    if not self._keys:
                        self._keys = [tuple(r) for r in conn.execute(sa.text(
                            f"SELECT {cols} FROM {self.table} t LIMIT {SAMPLE_KEYS}"))]
                key = self._keys[self._next % len(self._keys)] if self._keys else ()
                self._next += 1
                where = " AND ".join(f't."{c}" = :k{i}' for i, c in enumerate(self.key_columns)) if key else "false"
                started = time.perf_counter()
                conn.execute(sa.text(f"SELECT * FROM {self.table} t WHERE {where}"),
                             {f"k{i}": v for i, v in enumerate(key)}).all()
                return (time.perf_counter() - started) * 1000

    def measure(self, samples: int = SAMPLES) -> Latency:
        """Mean of `samples` of each probe; a probe that fails is None."""
        return Latency(_mean_of(self._commit_ms, samples), _mean_of(self._read_ms, samples), time.time())


def _mean_of(probe: Callable[[], float], samples: int) -> float | None:
    """The mean (a stall in one sample shows, as it would in the application's tail)."""
    try:
        return float(statistics.fmean(probe() for _ in range(samples)))
    except sa.exc.DBAPIError:
        return None


class ForegroundMonitor:
    """The shared reading and baseline of one table, through Redis."""

    def __init__(self, probe: LatencyProbe, client: redis_lib.Redis, namespace: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.probe = probe
        self.client = client
        self.key = f"{namespace}:foreground:{probe.table}"
        self.clock = clock

    def reading(self) -> Latency:
        """A reading at most `READING_INTERVAL` old: another worker's, or a fresh one."""
        for _ in range(40):
            cached = self._get(self.key)
            if cached is not None and self.clock() - cached.at < READING_INTERVAL:
                return cached
            if self.client.set(f"{self.key}:taking", "1", nx=True, px=int(READING_INTERVAL * 2000)):
                fresh = self.probe.measure()
                self.client.set(self.key, json.dumps(asdict(fresh)), px=int(READING_INTERVAL * 5000))
                self.client.delete(f"{self.key}:taking")
                return fresh
            time.sleep(0.05)
        return self.probe.measure()

    def baseline(self) -> Latency | None:
        """The idle baseline, if one was taken."""
        return self._get(f"{self.key}:baseline")

    def set_baseline(self, latency: Latency) -> None:
        """Keep `latency` as the idle baseline (a day at most)."""
        self.client.set(f"{self.key}:baseline", json.dumps(asdict(latency)), ex=86_400)

    def _get(self, key: str) -> Latency | None:
        raw = self.client.get(key)
        return Latency(**json.loads(raw)) if raw else None


def publish_run_ratio(control: RunControl, value: float | None) -> None:
    """The guard's last ratio for a run, for `status` and the exporter (a minute at most)."""
    if value is None:
        control.client.delete(control.key("foreground_ratio"))
    else:
        control.client.set(control.key("foreground_ratio"), f"{value:.4f}", ex=60)


def run_ratio(control: RunControl) -> float | None:
    """The guard's last ratio for a run, if it took one in the last minute."""
    raw = control.client.get(control.key("foreground_ratio"))
    return float(raw) if raw else None
