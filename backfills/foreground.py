"""What the application would feel, measured on the worker's own connections (IO only).

A sample (see `backfills.latency`) times a tiny durable write transaction on the tool's
own table `backfill.probe` and an indexed read of one row of the target table by key,
and notes whether a backfill batch was in flight on the server then (a session whose
`application_name` is a batch's, in a transaction). A failed or timed-out probe is an
unknown time (None).

Samples are taken all the time while runs work, by one `ProbeSampler` thread per table
for every worker of the database (a lease in Redis), so they meet the batches' row
locks, WAL flushes and CPU, and not only the quiet moments between batches. The sampler
publishes a reading once a second in Redis; every worker's guard reads it there. The
baseline (measured while the run is idle) is kept in Redis too.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict

import redis as redis_lib
import sqlalchemy as sa

from backfills.control import RunControl
from backfills.latency import Latency, Reading, Sample, tail

__all__ = ["LatencyProbe", "ForegroundMonitor", "publish_run_ratio", "run_ratio", "reading_to_json",
           "reading_from_json", "foreground_key", "FRESH_FOR"]

SAMPLE_KEYS = 16
FRESH_FOR = 2.5     # seconds a published reading stays usable (the sampler publishes every second)
WAIT_FOR_READING = 1.5
_BUSY = ("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'backfill:%' "
         "AND state IN ('active', 'idle in transaction') AND pid <> pg_backend_pid()")


class LatencyProbe:
    """Times the two probes for one table (its keys are sampled once)."""

    def __init__(self, engine: sa.Engine, table: str, key_columns: tuple[str, ...],
                 timeout_ms: int = 1000) -> None:
        self.engine = engine
        self.table = table
        self.key_columns = key_columns
        self.timeout_ms = timeout_ms
        self._keys: list[tuple[object, ...]] = []
        self._next = 0

    def _settings(self, conn: sa.Connection) -> None:
        conn.execute(sa.text("SELECT set_config('statement_timeout', :t, true), "
                             "set_config('lock_timeout', :t, true), "
                             "set_config('synchronous_commit', 'on', true), "
                             "set_config('application_name', 'backfill-probe', true), "
                             "set_config('app.is_system_admin', 'true', true)"), {"t": f"{self.timeout_ms}ms"})

    def commit_ms(self) -> float:
        """The time of one durable commit of a one-row write on `backfill.probe`."""
        with self.engine.connect() as conn:
            started = time.perf_counter()
            with conn.begin():
                self._settings(conn)
                conn.execute(sa.text("INSERT INTO backfill.probe (slot, at) VALUES (:s, clock_timestamp()) "
                                     "ON CONFLICT (slot) DO UPDATE SET at = excluded.at"), {"s": _slot()})
            return (time.perf_counter() - started) * 1000

    def read_ms(self) -> float:
        """The time of one indexed read of a row of the table, by key."""
        cols = ", ".join(f't."{c}"' for c in self.key_columns)
        with self.engine.connect() as conn:
            with conn.begin():
                self._settings(conn)
                if not self._keys:
                    self._keys = self._sample_keys(conn, cols)
                key = self._keys[self._next % len(self._keys)] if self._keys else ()
                self._next += 1
                where = " AND ".join(f't."{c}" = :k{i}' for i, c in enumerate(self.key_columns)) if key else "false"
                started = time.perf_counter()
                conn.execute(sa.text(f"SELECT * FROM {self.table} t WHERE {where}"),
                             {f"k{i}": v for i, v in enumerate(key)}).all()
                return (time.perf_counter() - started) * 1000

    def _sample_keys(self, conn: sa.Connection, cols: str) -> list[tuple[object, ...]]:
        keys = [tuple(r) for r in conn.execute(sa.text(
            f"SELECT {cols} FROM {self.table} t TABLESAMPLE SYSTEM (1) LIMIT {SAMPLE_KEYS}"))]
        return keys or [tuple(r) for r in conn.execute(sa.text(
            f"SELECT {cols} FROM {self.table} t LIMIT {SAMPLE_KEYS}"))]

    def batches_in_flight(self) -> bool:
        """Whether a backfill batch is in a transaction on the server now."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(_BUSY)).scalar_one()) > 0

    def sample(self) -> Sample:
        """One timing of both probes; a probe that fails is None (an unknown `busy` is False)."""
        try:
            busy = self.batches_in_flight()
        except sa.exc.DBAPIError:
            busy = False
        return Sample(time.time(), busy, _or_none(self.commit_ms), _or_none(self.read_ms))

    def measure(self, samples: int) -> Latency:
        """The tail of `samples` timings of each probe (None for a probe that failed)."""
        commits, reads = [], []
        for _ in range(samples):
            commit, read = _or_none(self.commit_ms), _or_none(self.read_ms)
            if commit is None or read is None:
                return Latency(commit, read, time.time())
            commits.append(commit)
            reads.append(read)
        return Latency(tail(commits), tail(reads), time.time())


def _slot() -> int:
    """The probe row of this process and thread: two probes never wait on each other's row."""
    return (os.getpid() * 1009 + threading.get_native_id()) % 100_000


def _or_none(probe: Callable[[], float]) -> float | None:
    try:
        return probe()
    except sa.exc.DBAPIError:
        return None


def foreground_key(namespace: str, table: str) -> str:
    """The Redis key prefix of one table's readings, baseline and sampler lease."""
    return f"{namespace}:foreground:{table}"


def reading_to_json(reading: Reading) -> str:
    """A reading as stored in Redis."""
    return json.dumps(asdict(reading))


def reading_from_json(raw: str | bytes) -> Reading:
    """A reading stored by `reading_to_json`."""
    data = json.loads(raw)

    def latency(name: str) -> Latency | None:
        return Latency(**data[name]) if data.get(name) else None

    return Reading(data["at"], latency("busy"), latency("idle"), bool(data["failing"]), latency("recent"))


class ForegroundMonitor:
    """The shared reading and baseline of one table, through Redis. `ensure_sampling` keeps
    a sampler going in this process (it samples only while it holds the table's lease)."""

    def __init__(self, probe: LatencyProbe, client: redis_lib.Redis, namespace: str,
                 ensure_sampling: Callable[[], None], clock: Callable[[], float] = time.time) -> None:
        self.probe = probe
        self.client = client
        self.key = foreground_key(namespace, probe.table)
        self.ensure_sampling = ensure_sampling
        self.clock = clock

    def reading(self) -> Reading | None:
        """The latest published reading, if fresh (waits for one up to `WAIT_FOR_READING`
        seconds); None when none is: the sampler is failing, or was just started."""
        self.ensure_sampling()
        deadline = self.clock() + WAIT_FOR_READING
        while True:
            raw = self.client.get(f"{self.key}:reading")
            if raw:
                reading = reading_from_json(raw)
                if self.clock() - reading.at < FRESH_FOR:
                    return reading
            if self.clock() >= deadline:
                return None
            time.sleep(0.05)

    def baseline(self) -> Latency | None:
        """The idle baseline, if one was taken."""
        raw = self.client.get(f"{self.key}:baseline")
        return Latency(**json.loads(raw)) if raw else None

    def set_baseline(self, latency: Latency) -> None:
        """Keep `latency` as the idle baseline (a day at most)."""
        self.client.set(f"{self.key}:baseline", json.dumps(asdict(latency)), ex=86_400)


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
