"""The exporter against real PostgreSQL and Redis: run gauges from the durable record and
the live checkpoints, lock waits that move with real waiting sessions, replication lag
that moves with a real standby whose replay is paused, and scrapes that stay quick and
return 200 when the database or Redis cannot be read."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace

import psycopg
import pytest
import redis as redis_lib
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from backfills.control import Checkpoint, RunControl
from backfills.registry import Registry
from backfills.runs import RunOptions, RunStore
from backfills.operations import RegistryGate
from core.db import create_db_engine
from core.settings import Settings
from migrations.executor import MigrationRunner
from migrations.files import load_migrations
from monitoring.exporter import Exporter, MetricsServer
from monitoring.metrics import KNOWN_THROTTLE_REASONS, RUN_STATES
from monitoring.recorder import MetricsRecorder
from tests.support.replication import primary_and_standby
from tests.support.workers import REPO, worker_env
from worker.runtime import Runtime, exporter_profile
from worker.sample_data import SampleSpec, load

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, timeout: float = 10) -> Samples:
    """Every sample of one scrape, by (name, labels)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def exporter(settings: Settings) -> Iterator[Callable[..., str]]:
    """`exporter(settings=..., tables=...)` serves an in-process exporter; returns its URL."""
    started: list[tuple[Exporter, MetricsServer, threading.Thread]] = []

    def start(settings: Settings = settings, tables: list[str] | None = None, timeout_ms: int = 1000) -> str:
        runtime = Runtime.from_settings(settings, exporter_profile(timeout_ms))
        service = Exporter(runtime.engine, runtime.redis, settings.namespace, runtime.registry, tables, timeout_ms)
        server = MetricsServer(service.metrics, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((service, server, thread))
        return server.url

    yield start
    for service, server, thread in started:
        server.shutdown()
        thread.join(5)
        server.close()
        service.close()


@pytest.fixture
def sample(engine: sa.Engine) -> sa.Engine:
    load(engine, SampleSpec(aois=2000, jobs=200, tenants=2))
    return engine


def test_run_gauges_come_from_the_run_record_and_its_live_checkpoints(
        sample: sa.Engine, settings: Settings, redis_client: redis_lib.Redis,
        exporter: Callable[..., str]) -> None:
    store = RunStore(sample)
    old = store.create("aois_status", RunOptions(), rows_estimate=10)
    store.transition(old.id, "failed")
    run = store.create("aois_status", RunOptions(batch_size=500), rows_estimate=2000)
    store.transition(run.id, "running")
    RunControl(redis_client, settings.namespace, run.id).write_checkpoint(0, Checkpoint(
        cursor=None, rows_processed=0, batches=0, row_errors=0, at=time.time() - 42, batch_size=321,
        last_batch_seconds=0.2, throttled="lock_waiters"))
    MetricsRecorder(redis_client, settings.namespace).record_batch("aois_status", "ok", 100, 2, 0.2)

    got = scrape(exporter())

    b = {"backfill": "aois_status"}
    assert value(got, "backfill_exporter_database_up") == 1
    assert value(got, "backfill_exporter_redis_up") == 1
    assert value(got, "backfill_batch_size", **b) == 321
    assert 42 <= value(got, "backfill_checkpoint_age_seconds", **b) < 60
    assert value(got, "backfill_rows_remaining", **b) == 2000
    assert value(got, "backfill_rows_estimate", **b) == 2000
    assert value(got, "backfill_eta_seconds", **b) is None, "no rate yet, so no ETA"
    assert {s: value(got, "backfill_run_state", state=s, **b) for s in RUN_STATES} == {
        s: float(s == "running") for s in RUN_STATES}
    assert {r: value(got, "backfill_throttled", reason=r, **b) for r in KNOWN_THROTTLE_REASONS} == {
        r: float(r == "lock_waiters") for r in KNOWN_THROTTLE_REASONS}
    assert value(got, "backfill_rows_processed_total", **b) == 100
    assert value(got, "backfill_row_errors_total", **b) == 2
    assert value(got, "backfill_batches_total", outcome="ok", **b) == 1
    assert value(got, "backfill_batches_total", outcome="failed", **b) == 0
    assert value(got, "backfill_batch_duration_seconds_count", **b) == 1
    assert value(got, "backfill_batch_duration_seconds_bucket", le="0.25", **b) == 1
    assert value(got, "backfill_batch_duration_seconds_bucket", le="0.1", **b) == 0
    assert value(got, "backfill_lock_waiters", table="aois") == 0
    assert value(got, "backfill_lock_waiters", table="jobs") == 0, "every registered backfill's table by default"
    assert value(got, "backfill_rows_processed_total", backfill="jobs_tenant_id") == 0, \
        "registered backfills start at 0, so that their first increase is seen"
    names = {d.name for d in Registry.discover()}
    assert {dict(labels).get("backfill") for _, labels in got} <= names | {None}, \
        "label `backfill` is the backfill's name, never a run id"


def test_eta_follows_the_observed_rate(sample: sa.Engine, settings: Settings, exporter: Callable[..., str]) -> None:
    store = RunStore(sample)
    run = store.create("aois_status", RunOptions(), rows_estimate=2000)
    store.transition(run.id, "running")
    with sample.begin() as conn:  # 500 rows done in the 10 s since the run started
        conn.execute(sa.text("UPDATE backfill.runs SET started_at = now() - interval '10 seconds' "
                             "WHERE id = CAST(:r AS uuid)"), {"r": run.id})
        conn.execute(sa.text("UPDATE backfill.progress SET rows_processed = 500, updated_at = now() "
                             "WHERE run_id = CAST(:r AS uuid)"), {"r": run.id})

    got = scrape(exporter())

    assert value(got, "backfill_rows_remaining", backfill="aois_status") == 1500
    assert value(got, "backfill_eta_seconds", backfill="aois_status") == pytest.approx(30, rel=0.1)
    assert value(got, "backfill_checkpoint_age_seconds", backfill="aois_status") < 5, \
        "without a live checkpoint, the durable progress is the heartbeat"


def test_lock_readings_cover_the_configured_tables_and_those_of_active_runs(
        sample: sa.Engine, exporter: Callable[..., str]) -> None:
    url = exporter(tables=["jobs"])
    assert {dict(l)["table"] for n, l in scrape(url) if n == "backfill_lock_waiters"} == {"jobs"}
    store = RunStore(sample)
    store.transition(store.create("aois_status", RunOptions()).id, "running")
    assert {dict(l)["table"] for n, l in scrape(url) if n == "backfill_lock_waiters"} == {"aois", "jobs"}


def test_lock_waiters_and_the_longest_wait_move_with_real_waiting_sessions(
        sample: sa.Engine, db_url: str, exporter: Callable[..., str]) -> None:
    url = exporter(tables=["aois"])
    holder = psycopg.connect(db_url, application_name="backfill:aois_status")
    holder.execute("LOCK TABLE aois IN ACCESS EXCLUSIVE MODE")
    waiter = psycopg.connect(db_url, autocommit=True)
    waiting = threading.Thread(target=lambda: waiter.execute("SELECT count(*) FROM aois"), daemon=True)
    waiting.start()

    def waits_seen() -> Samples | None:
        got = scrape(url)
        waiters = value(got, "backfill_lock_waiters", table="aois") or 0
        return got if waiters >= 1 and (value(got, "backfill_lock_wait_max_seconds", table="aois") or 0) > 0.5 else None

    try:
        got = wait_for(waits_seen, 15, "the exporter to see the waiting session")
        assert value(got, "backfill_lock_waiters_blocked_by_backfill", table="aois") >= 1  # type: ignore[arg-type]
        assert value(got, "backfill_exporter_database_up") == 1  # type: ignore[arg-type]
    finally:
        holder.rollback()
        waiting.join(10)
        holder.close()
        waiter.close()
    after = scrape(url)
    assert value(after, "backfill_lock_waiters", table="aois") == 0
    assert value(after, "backfill_lock_wait_max_seconds", table="aois") == 0


def test_an_unreachable_database_and_redis_are_metrics_not_errors(
        settings: Settings, exporter: Callable[..., str]) -> None:
    port = free_port()  # nothing listens there
    down = replace(settings, database_url=f"postgresql://postgres@127.0.0.1:{port}/nowhere",
                   redis_url=f"redis://127.0.0.1:{port}/0", broker_url=f"redis://127.0.0.1:{port}/0")
    url = exporter(settings=down)
    started = time.monotonic()
    got = scrape(url)
    assert time.monotonic() - started < 5
    assert value(got, "backfill_exporter_database_up") == 0
    assert value(got, "backfill_exporter_redis_up") == 0


def test_without_redis_the_database_readings_are_still_served(
        sample: sa.Engine, settings: Settings, exporter: Callable[..., str]) -> None:
    store = RunStore(sample)
    store.transition(store.create("aois_status", RunOptions(), rows_estimate=2000).id, "running")
    closed = f"redis://127.0.0.1:{free_port()}/0"
    got = scrape(exporter(settings=replace(settings, redis_url=closed, broker_url=closed)))
    assert value(got, "backfill_exporter_redis_up") == 0
    assert value(got, "backfill_exporter_database_up") == 1
    assert value(got, "backfill_rows_remaining", backfill="aois_status") == 2000
    assert value(got, "backfill_run_state", backfill="aois_status", state="running") == 1
    assert value(got, "backfill_lock_waiters", table="aois") == 0


def test_a_reading_stuck_behind_a_lock_times_out_instead_of_hanging(
        sample: sa.Engine, db_url: str, exporter: Callable[..., str]) -> None:
    url = exporter(timeout_ms=300)
    assert value(scrape(url), "backfill_exporter_database_up") == 1
    blocker = psycopg.connect(db_url)
    blocker.execute("LOCK TABLE backfill.runs IN ACCESS EXCLUSIVE MODE")
    try:
        started = time.monotonic()
        got = scrape(url)
        assert time.monotonic() - started < 3
        assert value(got, "backfill_exporter_database_up") == 0
        assert value(got, "backfill_exporter_redis_up") == 1
    finally:
        blocker.close()
    assert value(scrape(url), "backfill_exporter_database_up") == 1


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (Linux /proc/net/tcp)."""
    found = set()
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp to see bound addresses")
def test_the_cli_serves_on_localhost_by_default_and_stops_on_sigterm(sample: sa.Engine, settings: Settings) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "exporter", "--port", str(port)],
                            env=worker_env(settings), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        got = wait_for(lambda: _try_scrape(f"http://127.0.0.1:{port}/metrics"), 30, "the exporter to serve")
        assert value(got, "backfill_exporter_database_up") == 1  # type: ignore[arg-type]
        assert _listening_addresses(port) == {"127.0.0.1"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert f"serving metrics on http://127.0.0.1:{port}/metrics" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _try_scrape(url: str) -> Samples | None:
    try:
        return scrape(url, timeout=2)
    except OSError:
        return None


def test_replication_lag_moves_with_a_standby_whose_replay_is_paused(
        settings: Settings, exporter: Callable[..., str]) -> None:
    with primary_and_standby() as pair:
        primary_url = pair.url(pair.primary)
        engine = create_db_engine(primary_url, pooled=False)
        MigrationRunner(engine, load_migrations(), gate=RegistryGate(engine, Registry.discover()), log=lambda _: None).up("016")
        url = exporter(settings=replace(settings, database_url=primary_url))
        replicas = wait_for(lambda: [dict(l)["replica"] for (n, l) in scrape(url)
                                     if n == "backfill_replication_lag_seconds"], 30, "the standby to be reported")
        replica = replicas[0]  # type: ignore[index]
        pair.pause_replay()
        try:
            def lagging() -> Samples | None:
                with engine.begin() as conn:
                    conn.execute(sa.text("INSERT INTO tenants (name) SELECT 'lag-' || g FROM generate_series(1, 100) g"))
                got = scrape(url)
                return got if (value(got, "backfill_replication_lag_seconds", replica=replica) or 0) > 2 else None
            got = wait_for(lagging, 60, "replication lag to grow while replay is paused")
            assert value(got, "backfill_replication_lag_bytes", replica=replica) > 0  # type: ignore[arg-type, operator]
        finally:
            pair.resume_replay()
        wait_for(lambda: (value(scrape(url), "backfill_replication_lag_bytes", replica=replica) or 0) == 0, 60,
                 "the standby to catch up once replay resumes")
        engine.dispose()
