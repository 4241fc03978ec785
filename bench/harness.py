"""Shared machinery: servers, identical database copies, a real worker, measurements."""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg
import sqlalchemy as sa

from backfills.control import RunControl
from core.databases import create_database, unique_name
from core.connections import ConnectionProfile, open_engine, open_redis
from core.db import create_db_engine
from core.settings import Settings
from worker.embedded import EmbeddedPostgres, EmbeddedRedis, scratch_dir

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
# The embedded server is sized like a small production box: the tables fit in shared
# buffers and checkpoints do not fire mid-measurement. Recorded in bench.json.
SERVER_CONF = {"shared_buffers": "4GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min",
               "track_wal_io_timing": "on"}
# A server like a managed service's: shared buffers far below the 5M tables, JIT on, WAL and
# checkpoints at their usual values; the binaries are the operator's (BACKFILL_PG_BIN or --pg-bin).
PRODUCTION_CONF = {"shared_buffers": "256MB", "jit": "on", "max_wal_size": "2GB", "checkpoint_timeout": "5min",
                   "track_wal_io_timing": "on"}
PROFILES = ("embedded", "production")


class BenchSetupError(Exception):
    """The benchmark cannot start its server as asked; the message says why."""


def production_binaries(pg_bin: str | None) -> Path:
    """The PostgreSQL binaries of the production profile, checked before anything starts."""
    if not pg_bin:
        raise BenchSetupError("--server production needs the PostgreSQL binaries to run: set BACKFILL_PG_BIN "
                              "or give --pg-bin (e.g. /usr/lib/postgresql/15/bin)")
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (Path(pg_bin) / name).is_file()]
    if missing:
        raise BenchSetupError(f"--pg-bin {pg_bin}: no {', '.join(missing)} there; give the directory that "
                              f"holds the PostgreSQL server binaries (`pg_config --bindir`)")
    return Path(pg_bin)


def require_jit(admin_url: str, pg_bin: Path) -> None:
    """The production profile measures what JIT costs: refuse a server that cannot compile
    (pg_jit_available() loads the JIT provider, so a missing llvmjit.so shows here)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        available = conn.execute("SELECT pg_jit_available()").fetchone()[0]  # type: ignore[index]
    if not available:
        raise BenchSetupError(f"the PostgreSQL in {pg_bin} has no working JIT (pg_jit_available() is false: "
                              f"built without LLVM, or its llvmjit library is not installed)")


@dataclass(frozen=True)
class Servers:
    """The PostgreSQL server (admin URL) and Redis used by one benchmark session."""

    admin_url: str
    redis_url: str


@contextmanager
def servers(sized: bool = True, profile: str = "embedded", pg_bin: str | None = None) -> Iterator[Servers]:
    """Servers of their own, stopped on exit, unless DATABASE_URL/REDIS_URL are set (durable
    commits). `embedded`: the packaged PostgreSQL with SERVER_CONF when `sized`, else its
    small defaults (smoke runs); `production`: the binaries in `pg_bin` with PRODUCTION_CONF."""
    pg = rd = None
    admin = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if profile == "production" and admin:
        raise BenchSetupError("--server production starts its own server from the given binaries; "
                              "unset DATABASE_URL")
    bin_dir = production_binaries(pg_bin) if profile == "production" else None
    try:
        if not admin:
            conf = PRODUCTION_CONF if bin_dir else (SERVER_CONF if sized else {})
            pg = EmbeddedPostgres(scratch_dir("backfill-bench-") / "pg", fast=False, extra_conf=conf,
                                  **({"bin_dir": bin_dir} if bin_dir else {}))
            pg.start()
            admin = pg.url()
            if bin_dir:
                require_jit(admin, bin_dir)
        if not redis_url:
            rd = EmbeddedRedis(scratch_dir("backfill-bench-redis-")).start()
            redis_url = rd.url
        yield Servers(admin, redis_url)
    finally:
        if rd:
            rd.stop()
        if pg:
            pg.destroy()


def clone(admin_url: str, template: str) -> str:
    """An identical copy of `template` (its files copied); returns its name."""
    name = unique_name("bench")
    create_database(admin_url, name, template, file_copy=True)
    return name


def server_settings(admin_url: str) -> dict[str, str]:
    """The server settings that shape the numbers, for the results file."""
    names = ("server_version", "shared_buffers", "max_wal_size", "fsync", "synchronous_commit", "work_mem", "jit")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        found = {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]
        found["jit_available"] = str(conn.execute("SELECT pg_jit_available()").fetchone()[0])  # type: ignore[index]
    return found


@dataclass(frozen=True)
class WalCounters:
    """Server-wide WAL written and checkpoints taken so far (nothing else runs during a
    measurement, so the difference across one is that measurement's)."""

    wal_bytes: int
    full_page_images: int
    checkpoints: int

    def since(self, before: WalCounters) -> WalCounters:
        """What happened between `before` and this reading."""
        return WalCounters(self.wal_bytes - before.wal_bytes, self.full_page_images - before.full_page_images,
                           self.checkpoints - before.checkpoints)


def wal_counters(admin_url: str) -> WalCounters | None:
    """pg_stat_wal and the checkpoint count (PostgreSQL 14+; None before that)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.info.server_version < 140000:
            return None
        wal = conn.execute("SELECT wal_bytes::bigint, wal_fpi FROM pg_stat_wal").fetchone()
        view = ("SELECT num_timed + num_requested FROM pg_stat_checkpointer" if conn.info.server_version >= 170000
                else "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        checkpoints = conn.execute(view).fetchone()
    return WalCounters(int(wal[0]), int(wal[1]), int(checkpoints[0]))  # type: ignore[index]


def autovacuums(url: str) -> int:
    """Autovacuum runs on the database's tables so far, one still in progress included. A
    fresh copy starts at 0: its statistics are its own."""
    with psycopg.connect(url, autocommit=True) as conn:
        done = conn.execute("SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables").fetchone()
        running = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                               " AND datname = current_database()").fetchone()
    return int(done[0]) + int(running[0])  # type: ignore[index]


def checkpoint(url: str) -> None:
    """CHECKPOINT + ANALYZE so each measured step starts from the same state."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        conn.execute("ANALYZE")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): the smallest value with at least q% of the
    values at or below it (p99 of 100 batches is the second slowest, not the slowest)."""
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(0, min(len(ordered), rank) - 1)]


@dataclass
class WorkerRunResult:
    """What one run through the real worker measured."""

    wall_seconds: float
    engine_seconds: float
    rows: int
    batches: int
    batch_p50: float
    batch_p99: float
    peak_rss_mb: float
    in_batches_seconds: float  # the sum of the batch transactions' durations
    throttle_seconds: dict[str, float]  # time the run spent throttled, per reason


def _peak_rss_mb(pgid: int) -> float:
    """Highest VmHWM (peak resident set) among the worker's processes, in MiB."""
    peak = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return peak / 1024


@dataclass(frozen=True)
class WorkerProcess:
    """A running `backfill worker`: its process group, and the environment the CLI needs
    to talk to it."""

    pgid: int
    env: dict[str, str]


@contextmanager
def worker_process(settings: Settings, concurrency: int = 1) -> Iterator[WorkerProcess]:
    """A real `backfill worker` process, started and warmed up. Stopped on exit as an
    operator stops one (SIGTERM: the batch in flight finishes and the slice records its
    throttle time), then its whole process group."""
    env = {**os.environ, "DATABASE_URL": settings.require_database(), "REDIS_URL": settings.require_redis(),
           "BACKFILL_NAMESPACE": settings.namespace, "BACKFILL_QUEUE": settings.queue}
    log = open(REPO / "bench" / "results" / "worker.log.tmp", "w")  # noqa: SIM115 (closed in finally)
    worker = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--concurrency", str(concurrency),
                               "--loglevel", "WARNING"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        time.sleep(4)  # worker start-up is not part of any measurement
        yield WorkerProcess(worker.pid, env)
    finally:
        worker.terminate()
        with suppress(subprocess.TimeoutExpired):
            worker.wait(60)
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # pool processes left behind, if any
        worker.wait()
        log.close()


def enqueue(env: dict[str, str], backfill: str, options: list[str]) -> str:
    """`backfill enqueue`; returns the run id."""
    out = subprocess.run([sys.executable, "-m", "worker.cli", "enqueue", backfill, *options], env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def run_worker(settings: Settings, backfill: str, options: list[str], concurrency: int = 1) -> WorkerRunResult:
    """Enqueue on a real worker, wait for the run to end, and measure it."""
    with worker_process(settings, concurrency) as worker:
        started = time.perf_counter()
        run_id = enqueue(worker.env, backfill, options)
        subprocess.run([sys.executable, "-m", "worker.cli", "wait", run_id], env=worker.env, capture_output=True,
                       text=True)
        wall = time.perf_counter() - started
        peak = _peak_rss_mb(worker.pgid)
    return _measured_run(settings, run_id, wall, peak)


def load_during_run(settings: Settings, backfill: str, options: list[str], load: Callable[[], T],
                    settle_seconds: float = 0.0) -> T:
    """Run `load` while a real worker runs the backfill, `settle_seconds` after the enqueue;
    the worker is stopped when the load ends."""
    return load_beside_run(settings, backfill, options, load, settle_seconds)[0]


def load_beside_run(settings: Settings, backfill: str, options: list[str], load: Callable[[], T],
                    settle_seconds: float = 0.0) -> tuple[T, str, int]:
    """Like `load_during_run`, and also the run's id (its totals are read once the worker,
    stopped when the load ends, recorded them at the end of its slice) and the rows it had
    changed when the load started."""
    with worker_process(settings) as worker:
        run_id = enqueue(worker.env, backfill, options)
        time.sleep(settle_seconds)
        rows_before = run_totals(settings, run_id)[0] if settle_seconds else 0
        return load(), run_id, rows_before


_READER = ConnectionProfile(application_name="backfill-bench", pooled=False)


def _throttled(conn: sa.Connection, run_id: str) -> dict[str, float]:
    return {reason: round(float(seconds), 1) for reason, seconds in conn.execute(sa.text(
        "SELECT reason, seconds FROM backfill.throttle_time WHERE run_id = CAST(:id AS uuid) ORDER BY reason"),
        {"id": run_id})}


def run_totals(settings: Settings, run_id: str) -> tuple[int, dict[str, float]]:
    """Rows a run changed so far, and the seconds it spent throttled per reason."""
    engine = open_engine(settings, _READER)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT coalesce(sum(rows_processed), 0) FROM backfill.progress "
                                    "WHERE run_id = CAST(:id AS uuid)"), {"id": run_id}).scalar_one()
        throttled = _throttled(conn, run_id)
    engine.dispose()
    return int(rows), throttled


def _measured_run(settings: Settings, run_id: str, wall: float, peak_rss_mb: float) -> WorkerRunResult:
    engine = open_engine(settings, _READER)
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT r.state, extract(epoch FROM r.finished_at - r.started_at) AS secs, sum(p.rows_processed) AS rows,"
            " sum(p.batches) AS batches FROM backfill.runs r JOIN backfill.progress p ON p.run_id = r.id"
            " WHERE r.id = CAST(:id AS uuid) GROUP BY r.id"), {"id": run_id}).one()
        throttled = _throttled(conn, run_id)
    engine.dispose()
    durations = RunControl(open_redis(settings, _READER), settings.namespace, run_id).batch_seconds()
    if row.state not in ("succeeded", "completed_with_errors"):
        raise RuntimeError(f"run {run_id} ended {row.state}")
    return WorkerRunResult(wall, float(row.secs), int(row.rows), int(row.batches),
                           statistics.median(durations), percentile(durations, 99), peak_rss_mb, sum(durations),
                           throttled)


def build_template(admin_url: str, aois: int, jobs: int, threads: int = 0) -> str:
    """A database at schema 016 with sample data and numbered keys for the foreground load;
    with `threads`, also the rename's old table as it was before 003, that many threads in
    it and none copied yet."""
    from backfills.operations import RegistryGate
    from backfills.registry import Registry
    from migrations.executor import MigrationRunner
    from migrations.files import load_migrations
    from worker import sample_data

    name = unique_name("bench_tpl")
    url = create_database(admin_url, name)
    engine = create_db_engine(url, pooled=False)
    MigrationRunner(engine, load_migrations(), gate=RegistryGate(engine, Registry.discover()), log=lambda _: None).up("016")
    sample_data.load(engine, sample_data.SampleSpec(aois=aois, jobs=jobs))
    if threads:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE copilot_threads (LIKE ai_assistant_threads INCLUDING ALL)"))
        sample_data.load_threads(engine, threads)
    engine.dispose()
    checkpoint(url)
    return name
