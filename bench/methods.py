"""The ways of doing one backfill that the benchmark compares, each on its own copy.

(a) one plain UPDATE (for the copy: one plain INSERT ... SELECT), the physical limit;
(b) the runbook's `DO $$` loop with 10k batches (verbatim, with its 0.1 s sleep; for the
copy: the runbook's one-statement sync); (c) our worker with throttling off (`--sleep 0`)
in key order, and (c') in physical order (block ranges); (d) our worker with defaults; and
bare keyset and block-range loops (the same batch statements in a Python loop, no Celery,
no Redis, no hooks) to price the framework.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

import psycopg

from backfills.batch import Timeouts
from backfills.executors import executor_for
from backfills.registry import Registry
from backfills.runs import RunOptions, RunStore
from bench import harness
from core.db import create_db_engine
from core.settings import Settings

__all__ = ["Measurement", "PLAIN", "PLAIN_SUBQUERY", "RUNBOOK", "plain_update", "runbook_loop", "bare_loop", "worker_run"]

PLAIN = {
    "aois_status": "UPDATE aois SET status = 'ACTIVE' WHERE status IS NULL",
    "aois_area_ha_numeric": "UPDATE aois SET area_ha_new = round(area_ha::numeric, 2) "
                            "WHERE area_ha_new IS NULL AND area_ha IS NOT NULL "
                            "AND area_ha NOT IN ('NaN', 'Infinity', '-Infinity') AND abs(area_ha) < 99999999.995",
    "jobs_tenant_id": "UPDATE jobs j SET tenant_id = a.tenant_id FROM aois a "
                      "WHERE a.id = j.aoi_id AND j.tenant_id IS NULL",
    # the runbook's rename, step 1: one INSERT ... SELECT
    "ai_assistant_threads_copy": "INSERT INTO ai_assistant_threads SELECT * FROM copilot_threads",
}

# The definition's own expression as one statement, where it differs from the fastest one.
PLAIN_SUBQUERY = {
    "jobs_tenant_id": "UPDATE jobs t SET tenant_id = (SELECT a.tenant_id FROM aois a WHERE a.id = t.aoi_id) "
                      "WHERE t.tenant_id IS NULL AND EXISTS (SELECT 1 FROM aois a WHERE a.id = t.aoi_id)",
}

# The runbook's loop (runbook-migrations.md, "Update 1M rows"), per backfill.
_LOOP = """DO $$
DECLARE
  batch_size INT := 10000;
  updated INT;
BEGIN
  LOOP
    {update};
    GET DIAGNOSTICS updated = ROW_COUNT;
    EXIT WHEN updated = 0;
    COMMIT;
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$"""
RUNBOOK = {
    "aois_status": _LOOP.format(update="UPDATE aois SET status = 'ACTIVE' WHERE id IN "
                                       "(SELECT id FROM aois WHERE status IS NULL LIMIT batch_size)"),
    "aois_area_ha_numeric": _LOOP.format(update="UPDATE aois SET area_ha_new = area_ha::NUMERIC(10,2) WHERE id IN "
                                                "(SELECT id FROM aois WHERE area_ha_new IS NULL "
                                                "AND area_ha IS NOT NULL LIMIT batch_size)"),
    "jobs_tenant_id": _LOOP.format(update="UPDATE jobs SET tenant_id = (SELECT tenant_id FROM aois "
                                          "WHERE aois.id = jobs.aoi_id) WHERE id IN (SELECT id FROM jobs "
                                          "WHERE tenant_id IS NULL LIMIT batch_size)"),
    # the runbook's rename has no loop: its step 3 ("sync") is one statement
    "ai_assistant_threads_copy": "INSERT INTO ai_assistant_threads SELECT * FROM copilot_threads "
                                 "WHERE id NOT IN (SELECT id FROM ai_assistant_threads)",
}


@dataclass
class Measurement:
    """One method on one copy."""

    method: str
    seconds: float
    rows: int
    batches: int = 0
    sleep_seconds: float = 0.0
    batch_p50: float | None = None
    batch_p99: float | None = None
    peak_rss_mb: float | None = None
    outcome: str = "ok"
    in_batches_seconds: float | None = None  # time inside the batch transactions
    wal_bytes: int | None = None  # WAL written during the measurement
    full_page_images: int | None = None
    checkpoints: int | None = None
    autovacuums: int | None = None  # autovacuum runs on the copy while this was measured
    throttle_seconds: dict[str, float] | None = None  # a worker run's time throttled, per reason

    def add_wal(self, wal: harness.WalCounters | None) -> None:
        """Attach the WAL written and the checkpoints taken while this was measured."""
        if wal is not None:
            self.wal_bytes, self.full_page_images, self.checkpoints = (wal.wal_bytes, wal.full_page_images,
                                                                       wal.checkpoints)

    @property
    def outside_batch_ms(self) -> float | None:
        """Per batch, the time spent outside the batch transaction and outside the designed
        sleeps: what the loop around the statement costs, measured within one run."""
        if self.in_batches_seconds is None or not self.batches:
            return None
        return (self.seconds - self.in_batches_seconds - self.sleep_seconds) / self.batches * 1000

    @property
    def rows_per_second(self) -> float:
        """Throughput over the whole wall time."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_per_row_working(self) -> float | None:
        """Cost per row, the designed sleeps left out."""
        return (self.seconds - self.sleep_seconds) / self.rows if self.rows else None


def _remaining(url: str, backfill: str) -> int:
    engine = create_db_engine(url, pooled=False)
    from backfills.operations import count_remaining
    try:
        return count_remaining(engine, Registry.discover().get(backfill))
    finally:
        engine.dispose()


def plain_update(url: str, backfill: str, subquery: bool = False) -> Measurement:
    """(a) one statement: the fastest a DBA would write, or (`subquery`) the definition's
    own expression (PLAIN_SUBQUERY)."""
    sql = PLAIN_SUBQUERY[backfill] if subquery else PLAIN[backfill]
    with psycopg.connect(url, autocommit=True, options="-c app.is_system_admin=true") as conn:
        started = time.perf_counter()
        rows = conn.execute(sql).rowcount
        return Measurement("plain_update_subquery" if subquery else "plain_update", time.perf_counter() - started,
                           rows)


def runbook_loop(url: str, backfill: str, cap_seconds: float) -> Measurement:
    """(b) the runbook's loop, stopped after `cap_seconds` if it has not ended by then."""
    before = _remaining(url, backfill)
    outcome = "ok"
    with psycopg.connect(url, autocommit=True, options="-c app.is_system_admin=true") as conn:
        timer = threading.Timer(cap_seconds, conn.cancel)
        timer.start()
        started = time.perf_counter()
        try:
            conn.execute(RUNBOOK[backfill])
        except psycopg.errors.QueryCanceled:
            outcome = f"did not finish within {cap_seconds:.0f}s"
        except psycopg.Error as exc:
            outcome = f"stopped: {str(exc).strip().splitlines()[0]}"
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
    rows = before - _remaining(url, backfill)
    batches = -(-rows // 10_000)
    return Measurement("runbook_loop", seconds, rows, batches, sleep_seconds=0.1 * batches, outcome=outcome)


def key_order_only(backfill: str) -> bool:
    """Whether the backfill is a copy, which walks its source in key order (`--order
    physical` is refused for it)."""
    return Registry.discover().get(backfill).kind == "copy"

def bare_loop(url: str, backfill: str, batch_size: int = 10_000, physical: bool = False) -> Measurement:
    """The batch statement alone, in a loop (key ranges, or block ranges when `physical`,
    striped as the worker stripes them): what the framework adds is measured against this."""
    engine = create_db_engine(url)
    definition = Registry.discover().get(backfill)
    order = "physical" if physical else "key"
    run = RunStore(engine).create(backfill, RunOptions(batch_size=batch_size, sleep=0, order=order), order=order)
    executor = executor_for(engine, run, 0, definition)
    durations: list[float] = []
    rows, cursor = 0, None
    started = time.perf_counter()
    while True:
        result = executor.run(cursor, batch_size, Timeouts(2, 30))
        if result.last_key is None:
            break
        durations.append(result.seconds)
        rows += result.changed
        cursor = result.last_key
    seconds = time.perf_counter() - started
    engine.dispose()
    return Measurement(f"bare_{'block' if physical else 'keyset'}_loop", seconds, rows, len(durations), 0.0,
                       statistics.median(durations),
                       harness.percentile(durations, 99), in_batches_seconds=sum(durations))


def worker_run(settings: Settings, backfill: str, options: list[str], method: str, sleep: float = 0.0,
               concurrency: int = 1) -> Measurement:
    """(c)/(d) a real `backfill worker` process, from enqueue to the run's end."""
    result = harness.run_worker(settings, backfill, options, concurrency=concurrency)
    return Measurement(method, result.engine_seconds, result.rows, result.batches, sleep * result.batches,
                       result.batch_p50, result.batch_p99, result.peak_rss_mb,
                       in_batches_seconds=result.in_batches_seconds, throttle_seconds=result.throttle_seconds)
