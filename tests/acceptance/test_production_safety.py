"""Production safety with real servers and real workers: replication lag, failover, row
locks, statement timeouts, readings that fail."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from backfills.operations import RegistryGate
from backfills.registry import Registry
from core.db import create_db_engine
from core.settings import Settings
from migrations.executor import MigrationRunner
from migrations.files import load_migrations
from tests.conftest import role_url
from tests.support.replication import Pair, primary_and_standby
from tests.support.workers import WorkerProcess, run_cli
from worker import sample_data

pytestmark = pytest.mark.slow


def prepare(url: str, aois: int) -> None:
    """Schema 016 and `aois` sample AOIs in the database at `url`."""
    engine = create_db_engine(url, pooled=False)
    MigrationRunner(engine, load_migrations(), gate=RegistryGate(engine, Registry.discover()), log=lambda _: None).up("016")
    sample_data.load(engine, sample_data.SampleSpec(aois=aois, jobs=100, bad_rows=False))
    engine.dispose()


def status(settings: Settings, run_id: str) -> dict:
    result = run_cli(settings, "status", run_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def poll(check: Callable[[], object], timeout: float, what: str, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def enqueue(settings: Settings, *args: str) -> str:
    result = run_cli(settings, "enqueue", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def wait(settings: Settings, run_id: str, timeout: int = 120) -> None:
    result = run_cli(settings, "wait", run_id, "--timeout", str(timeout), timeout=timeout + 30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def pair() -> Iterator[Pair]:
    with primary_and_standby() as servers:
        yield servers


def test_replication_lag_pauses_the_run_and_resuming_replay_resumes_it(
        pair: Pair, settings: Settings, workers_for: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    prepare(pair.url(pair.primary), 80_000)
    own = replace(settings, database_url=pair.url(pair.primary))
    workers_for(own)
    pair.pause_replay()
    run_id = enqueue(own, "aois_status", "--batch-size", "1000", "--sleep", "0.05", "--max-replication-lag", "1",
                     "--max-latency-ratio", "0")  # the lag alone throttles it
    paused = poll(lambda: (s := status(own, run_id))["throttled"] == "replication_lag" and s, 60,
                  "the run to throttle on replication lag")
    processed = paused["rows_processed"]
    time.sleep(3)
    still = status(own, run_id)
    assert still["state"] == "running" and still["throttled"] == "replication_lag"
    assert still["rows_processed"] == processed, "no batch may run while the standby lags"
    assert still["rows_processed"] < 80_000
    pair.resume_replay()
    wait(own, run_id)
    done = status(own, run_id)
    assert done["rows_processed"] == 80_000
    events = run_cli(own, "status", run_id).stdout
    (tmp_path / "lag.log").write_text(json.dumps(done, indent=2) + "\n" + events)


def test_failover_to_a_promoted_standby_completes_the_run_with_exact_data(
        pair: Pair, settings: Settings, workers_for: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    prepare(pair.url(pair.primary), 60_000)
    own = replace(settings, database_url=pair.failover_url())
    worker = workers_for(own)
    run_id = enqueue(own, "aois_status", "--batch-size", "1000", "--sleep", "0.05", "--max-latency-ratio", "0")
    poll(lambda: status(own, run_id)["rows_processed"] >= 10_000, 60, "the run to get going")
    pair.primary.stop()          # the primary dies mid-run ...
    time.sleep(1.0)
    pair.standby.promote()       # ... and the standby is promoted: no manual step for the run
    wait(own, run_id, timeout=180)
    final = status(own, run_id)
    with psycopg.connect(pair.url(pair.standby)) as conn:
        conn.execute("SET app.is_system_admin = 'true'")
        left = conn.execute("SELECT count(*) FROM aois WHERE status IS DISTINCT FROM 'ACTIVE'").fetchone()[0]
        counted = conn.execute("SELECT sum(rows_processed) FROM backfill.progress WHERE run_id = %s",
                               (run_id,)).fetchone()[0]
    assert left == 0
    assert final["rows_processed"] == counted == 60_000
    assert final["state"] == "succeeded"
    log = run_cli(own, "status", run_id).stdout
    assert "recovered after" in log, log
    (tmp_path / "failover.log").write_text(log + "\n" + worker.log()[-4000:])
    print("\n--- failover run log ---\n" + log)


def test_a_foreground_update_never_waits_longer_than_one_batch(
        db_url: str, engine: sa.Engine, settings: Settings, workers, redis_client) -> None:
    from backfills.control import RunControl

    sample_data.load(engine, sample_data.SampleSpec(aois=60_000, jobs=100, bad_rows=False))
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT id::text FROM aois"))]
    workers()
    run_id = enqueue(settings, "aois_status", "--batch-size", "5000", "--sleep", "0.05", "--max-latency-ratio", "0")
    waits: list[float] = []
    stop = threading.Event()

    def foreground() -> None:
        import random
        rng = random.Random(7)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("SET app.is_system_admin = 'true'")
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute("UPDATE aois SET name = name WHERE id = %s", (rng.choice(ids),))
                waits.append(time.perf_counter() - started)

    thread = threading.Thread(target=foreground)
    thread.start()
    try:
        wait(settings, run_id)
    finally:
        stop.set()
        thread.join()
    batches = RunControl(redis_client, settings.namespace, run_id).batch_seconds()
    assert len(waits) > 100 and batches
    assert max(waits) <= max(batches) + 0.1, (max(waits), max(batches))


def test_statement_timeout_halves_the_batch_until_it_fits_and_skips_no_row(
        engine: sa.Engine, settings: Settings, workers, redis_client) -> None:
    from backfills.control import RunControl

    sample_data.load(engine, sample_data.SampleSpec(aois=30_000, jobs=100, bad_rows=False))
    workers()
    run_id = enqueue(settings, "aois_status", "--batch-size", "20000", "--sub-batch-size", "20000", "--sleep", "0",
                     "--statement-timeout", "0.03", "--max-latency-ratio", "0")
    wait(settings, run_id)
    control = RunControl(redis_client, settings.namespace, run_id)
    final = status(settings, run_id)
    assert final["rows_processed"] == 30_000
    assert any("statement_timeout" in e for e in control.events())
    assert max(cp.batch_size for cp in control.checkpoints().values()) < 20_000
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM aois WHERE status IS NULL")).scalar_one() == 0


def test_a_failed_health_reading_pauses_the_run_instead_of_running_blind(
        db_url: str, engine: sa.Engine, settings: Settings, worker_role: str, tmp_path: Path) -> None:
    sample_data.load(engine, sample_data.SampleSpec(aois=30_000, jobs=100, bad_rows=False))
    with engine.begin() as conn:
        conn.execute(sa.text("REVOKE EXECUTE ON FUNCTION pg_blocking_pids(integer) FROM PUBLIC"))
    as_role = replace(settings, database_url=role_url(db_url, worker_role))
    workers_proc = WorkerProcess(as_role, tmp_path / "health-worker.log")
    try:
        workers_proc.start()
        run_id = enqueue(as_role, "aois_status", "--batch-size", "1000", "--sleep", "0.02", "--max-latency-ratio", "0")
        poll(lambda: status(as_role, run_id)["throttled"] == "lock_contention_unknown", 60,
             "the run to stop on an unknown lock reading")
        before = status(as_role, run_id)["rows_processed"]
        time.sleep(2)
        assert status(as_role, run_id)["rows_processed"] == before
        with engine.begin() as conn:
            conn.execute(sa.text("GRANT EXECUTE ON FUNCTION pg_blocking_pids(integer) TO PUBLIC"))
        wait(as_role, run_id)
        assert status(as_role, run_id)["rows_processed"] == 30_000
    finally:
        workers_proc.stop()
