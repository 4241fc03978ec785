"""The foreground guard with a real worker: a foreground load that raises what the
application would feel slows the run down, then pauses it (`foreground_latency`); the
run resumes by itself when the load stops and finishes with exact results. A probe that
fails is an unknown reading, and the run waits."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
import sqlalchemy as sa

from tests.acceptance.test_production_safety import enqueue, poll, status, wait
from worker import sample_data
from core.settings import Settings

pytestmark = pytest.mark.slow


class LockBursts:
    """A session that holds a lock on the guard's probe table for `hold` seconds out of
    every `hold + gap`: each probe commit then waits for it, as an application's commit
    would wait on a busy server."""

    def __init__(self, url: str, hold: float, gap: float) -> None:
        self.url, self.hold, self.gap = url, hold, gap
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> LockBursts:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.url) as conn:
            while not self.stop.is_set():
                conn.execute("LOCK TABLE backfill.probe IN SHARE MODE")
                self.stop.wait(self.hold)
                conn.rollback()
                self.stop.wait(self.gap)


def _progress_stalls(settings: Settings, run_id: str, seconds: float) -> bool:
    before = status(settings, run_id)["rows_processed"]
    time.sleep(seconds)
    return status(settings, run_id)["rows_processed"] == before


def test_foreground_load_slows_then_pauses_the_run_which_resumes_when_it_stops(
        db_url: str, engine: sa.Engine, settings: Settings, workers) -> None:
    sample_data.load(engine, sample_data.SampleSpec(aois=60_000, jobs=100, bad_rows=False))
    workers()
    # a ratio well above a shared test server's own noise; the bursts raise it far more
    run_id = enqueue(settings, "aois_status", "--batch-size", "1000", "--sleep", "0.1", "--max-latency-ratio", "3")
    poll(lambda: status(settings, run_id)["rows_processed"] > 3_000, 60, "the run to start working")
    assert status(settings, run_id)["foreground_latency_ratio"] is not None
    with LockBursts(db_url, hold=0.8, gap=0.01):  # the probe waits up to 0.8 s: far above twice the ratio
        poll(lambda: status(settings, run_id)["throttled"] == "foreground_latency", 30, "the guard to act")
        try:
            poll(lambda: _progress_stalls(settings, run_id, 2.0), 30, "the guard to pause the run")
        except AssertionError:
            s = status(settings, run_id)
            raise AssertionError(json.dumps({k: s[k] for k in ("rows_processed", "foreground_latency_ratio", "throttled", "events", "batch_size")})) from None
        held = status(settings, run_id)
        assert held["state"] == "running" and held["rows_processed"] < 60_000
        assert held["foreground_latency_ratio"] >= 5.0
    wait(settings, run_id, timeout=180)
    final = status(settings, run_id)
    assert final["state"] == "succeeded" and final["rows_processed"] == 60_000
    assert final["throttle_seconds"]["foreground_latency"] > 2.0
    events = final["events"]
    assert any("throttled: foreground_latency;" in e for e in events), events
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM aois WHERE status IS NULL")).scalar_one() == 0


def test_a_failed_probe_is_unknown_and_the_run_waits(
        db_url: str, engine: sa.Engine, settings: Settings, workers) -> None:
    sample_data.load(engine, sample_data.SampleSpec(aois=20_000, jobs=100, bad_rows=False))
    workers()
    # what is tested is the wait on an unknown reading: a ratio above a shared test server's noise
    run_id = enqueue(settings, "aois_status", "--batch-size", "1000", "--sleep", "0.1", "--max-latency-ratio", "3")
    poll(lambda: status(settings, run_id)["rows_processed"] > 2_000, 60, "the run to start working")
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE backfill.probe IN ACCESS EXCLUSIVE MODE")  # every probe times out
        poll(lambda: status(settings, run_id)["throttled"] == "foreground_latency_unknown", 30,
             "the run to wait on an unknown reading")
        assert _progress_stalls(settings, run_id, 3.0)
        blocker.rollback()
    wait(settings, run_id, timeout=120)
    final = status(settings, run_id)
    assert final["state"] == "succeeded" and final["rows_processed"] == 20_000


def test_max_latency_ratio_0_turns_the_guard_off(
        db_url: str, engine: sa.Engine, settings: Settings, workers) -> None:
    sample_data.load(engine, sample_data.SampleSpec(aois=20_000, jobs=100, bad_rows=False))
    workers()
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE backfill.probe IN ACCESS EXCLUSIVE MODE")
        run_id = enqueue(settings, "aois_status", "--batch-size", "2000", "--sleep", "0",
                         "--max-latency-ratio", "0")
        wait(settings, run_id, timeout=120)
        blocker.rollback()
    final = status(settings, run_id)
    assert final["rows_processed"] == 20_000 and "foreground_latency" not in final["throttle_seconds"]
