"""Rows the application holds locked, beside a real worker: a batch never waits on them
(so it can never close a deadlock cycle), skips them, counts them, and does them later."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
import sqlalchemy as sa

from tests.acceptance.test_production_safety import enqueue, poll, status, wait
from tests.support.workers import run_cli
from worker import sample_data
from core.settings import Settings

pytestmark = pytest.mark.slow


def _skipped_records(engine: sa.Engine, run_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM backfill.skipped_rows WHERE run_id = CAST(:r AS uuid)"),
                            {"r": run_id}).scalar_one()


class Application:
    """Threads of application transactions: each updates its own rows, many per
    transaction, in random order; one more holds row locks for seconds at a time."""

    def __init__(self, url: str, ids: list[str], threads: int = 4) -> None:
        self.url, self.stop, self.errors = url, threading.Event(), []  # type: ignore[var-annotated]
        self.transactions = 0
        shares = [ids[i::threads + 1] for i in range(threads + 1)]
        self.threads = [threading.Thread(target=self._guarded, args=(self._updates, share, seed))
                        for seed, share in enumerate(shares[:-1])]
        self.threads.append(threading.Thread(target=self._guarded, args=(self._holds, shares[-1], 99)))

    def __enter__(self) -> Application:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _guarded(self, body: Callable[[psycopg.Connection, list[str], random.Random], None],
                 ids: list[str], seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(self.url) as conn:
            conn.execute("SET app.is_system_admin = 'true'")
            conn.commit()
            while not self.stop.is_set():
                try:
                    body(conn, ids, rng)
                    conn.commit()
                    self.transactions += 1
                except psycopg.Error as exc:
                    conn.rollback()
                    self.errors.append(f"{exc.sqlstate}: {exc}")

    @staticmethod
    def _updates(conn: psycopg.Connection, ids: list[str], rng: random.Random) -> None:
        for aoi in rng.sample(ids, 100):
            conn.execute("UPDATE aois SET name = name || '', updated_at = now() WHERE id = %s", (aoi,))

    def _holds(self, conn: psycopg.Connection, ids: list[str], rng: random.Random) -> None:
        conn.execute("SELECT 1 FROM aois WHERE id = ANY (%s) FOR UPDATE", (rng.sample(ids, 300),))
        self.stop.wait(2.0)


def test_application_transactions_never_fail_beside_a_run_and_every_row_is_done(
        db_url: str, engine: sa.Engine, settings: Settings, workers) -> None:
    sample_data.load(engine, sample_data.SampleSpec(aois=40_000, jobs=100, bad_rows=False))
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT id::text FROM aois"))]
        needing = conn.execute(sa.text("SELECT count(*) FROM aois WHERE status IS NULL")).scalar_one()
    workers()
    with Application(db_url, ids) as app:
        time.sleep(1.0)
        # the guard off: deadlocks are the batches' business, and whole 2,000-row transactions hold the most locks
        run_id = enqueue(settings, "aois_status", "--batch-size", "2000", "--sleep", "0", "--max-latency-ratio", "0")
        wait(settings, run_id, timeout=180)
        transactions = app.transactions
    assert app.errors == [], app.errors[:5]
    assert transactions > 20
    final = status(settings, run_id)
    assert final["state"] == "succeeded"
    assert final["rows_processed"] == needing
    assert final["rows_skipped_while_locked"] == _skipped_records(engine, run_id) > 0
    assert final["rows_still_locked"] == 0
    assert run_cli(settings, "verify", "aois_status").stdout.strip().splitlines()[-1] == "0"


def _hold_rows(engine: sa.Engine, url: str, count: int, offset: int, aois: int) -> psycopg.Connection:
    """`aois` sample AOIs loaded, and a session holding `count` of them locked (from the
    `offset`-th in key order) until it rolls back."""
    sample_data.load(engine, sample_data.SampleSpec(aois=aois, jobs=100, bad_rows=False))
    holder = psycopg.connect(url)
    holder.execute("SET app.is_system_admin = 'true'")
    # (a FOR UPDATE with an OFFSET would lock the rows it skips too)
    holder.execute("SELECT 1 FROM aois WHERE id IN (SELECT id FROM aois ORDER BY id LIMIT %s OFFSET %s) FOR UPDATE",
                   (count, offset))
    return holder


def test_rows_held_locked_are_skipped_shown_and_done_once_released(
        db_url: str, engine: sa.Engine, settings: Settings, workers) -> None:
    holder = _hold_rows(engine, db_url, 200, 5000, aois=20_000)
    workers()
    run_id = enqueue(settings, "aois_status", "--batch-size", "2000", "--sleep", "0", "--lock-timeout", "0.2",
                     "--max-latency-ratio", "0")  # about rows held locked, not the guard
    poll(lambda: status(settings, run_id)["rows_processed"] == 19_800, 60, "every free row done")
    time.sleep(1.5)
    blocked = status(settings, run_id)
    assert blocked["state"] == "running"
    assert (blocked["rows_skipped_while_locked"], blocked["rows_still_locked"]) == (200, 200)
    line = run_cli(settings, "status", run_id).stdout
    assert "rows skipped while locked 200 (200 still locked)" in line
    holder.rollback()
    holder.close()
    wait(settings, run_id)
    final = status(settings, run_id)
    assert (final["rows_processed"], final["rows_skipped_while_locked"], final["rows_still_locked"]) == (20_000, 200, 0)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM aois WHERE status IS NULL")).scalar_one() == 0


def test_a_row_locked_past_the_run_patience_is_reported_and_left_for_verify(
        db_url: str, engine: sa.Engine, settings: Settings, workers) -> None:
    holder = _hold_rows(engine, db_url, 3, 100, aois=5_000)
    try:
        workers(BACKFILL_RETRY_WINDOW_SECONDS="3")
        run_id = enqueue(settings, "aois_status", "--batch-size", "1000", "--sleep", "0",
                         "--max-latency-ratio", "0")  # about rows held locked, not the guard
        wait(settings, run_id, timeout=60)
        final = status(settings, run_id)
        assert (final["rows_processed"], final["rows_still_locked"]) == (4_997, 3)
        assert final["state"] == "succeeded"
        assert any("3 skipped row(s) stayed locked for more than 3s" in e for e in final["events"]), final["events"]
        verify = run_cli(settings, "verify", "aois_status")
        assert verify.returncode != 0 and verify.stdout.strip().splitlines()[-1] == "3"
    finally:
        holder.rollback()
        holder.close()
