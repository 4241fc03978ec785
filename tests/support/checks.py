"""Shared helpers and assertions for acceptance tests with real workers.

Everything here is computed independently of the product: expected values come from
plain SQL over the application tables (never from the engine's own predicates), and
the counters are read straight from `backfill.progress`.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from core.settings import Settings
from tests.support.workers import run_cli

# -- independent definitions of the two aois backfills ------------------------------------

# A row whose area_ha cannot become NUMERIC(10,2): NaN, +/-Infinity, or |round(x, 2)| >= 10^8.
# CASE (not OR) so that the rounding is only evaluated for finite values.
BAD_AREA = ("CASE WHEN area_ha IS NULL THEN false "
            "WHEN area_ha = 'NaN'::float8 OR area_ha = 'Infinity'::float8 OR area_ha = '-Infinity'::float8 THEN true "
            "ELSE abs(round(area_ha::numeric, 2)) >= 100000000 END")


@dataclass(frozen=True)
class AreaBaseline:
    """What `aois_area_ha_numeric` has to do, counted before the run is enqueued."""

    to_change: int            # rows needing it whose value fits NUMERIC(10,2)
    bad_ids: frozenset[str]   # rows needing it that must become row errors

    @property
    def needs(self) -> int:
        return self.to_change + len(self.bad_ids)


def area_baseline(engine: sa.Engine) -> AreaBaseline:
    with engine.connect() as conn:
        needing = "area_ha_new IS NULL AND area_ha IS NOT NULL"
        to_change = conn.execute(sa.text(
            f"SELECT count(*) FROM aois WHERE {needing} AND NOT ({BAD_AREA})")).scalar_one()
        bad = conn.execute(sa.text(f"SELECT id::text FROM aois WHERE {needing} AND ({BAD_AREA})")).scalars().all()
    return AreaBaseline(int(to_change), frozenset(bad))


def status_baseline(engine: sa.Engine) -> int:
    """Rows `aois_status` has to change."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM aois WHERE status IS NULL")).scalar_one())


def table_rows(engine: sa.Engine, table: str = "aois") -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


# -- reading a run ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Counters:
    """The durable counters of a run, summed over its parts, and its state."""

    state: str
    rows_processed: int
    rows_scanned: int
    batches: int
    row_errors: int
    done: bool


def counters(engine: sa.Engine, run_id: str) -> Counters:
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT r.state, coalesce(sum(p.rows_processed), 0) AS rows_processed, "
            "coalesce(sum(p.rows_scanned), 0) AS rows_scanned, coalesce(sum(p.batches), 0) AS batches, "
            "coalesce(sum(p.row_errors), 0) AS row_errors, coalesce(bool_and(p.done), false) AS done "
            "FROM backfill.runs r LEFT JOIN backfill.progress p ON p.run_id = r.id "
            "WHERE r.id = CAST(:r AS uuid) GROUP BY r.state"), {"r": run_id}).one()
    return Counters(row.state, int(row.rows_processed), int(row.rows_scanned), int(row.batches),
                    int(row.row_errors), bool(row.done))


def run_record(engine: sa.Engine, run_id: str) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM backfill.runs WHERE id = CAST(:r AS uuid)"), {"r": run_id}).one()


@contextmanager
def precondition(what: str) -> Iterator[None]:
    """For `xfail(raises=AssertionError)` tests: a failed setup step is a real failure, never the
    expected one (so the marker cannot hide a broken test)."""
    try:
        yield
    except AssertionError as exc:
        pytest.fail(f"precondition failed ({what}): {exc}")


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_batches(engine: sa.Engine, run_id: str, at_least: int, timeout: float = 60) -> Counters:
    """Block until the run has committed `at_least` batches; returns its counters then."""
    def reached() -> Counters | None:
        c = counters(engine, run_id)
        return c if c.batches >= at_least else None
    return wait_until(reached, timeout, f"run {run_id} to commit {at_least} batches")  # type: ignore[return-value]


# -- the command line ---------------------------------------------------------------------------

def cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, *args, timeout=timeout)


def enqueue(settings: Settings, name: str, *options: str) -> str:
    """`backfill enqueue NAME OPTIONS`; returns the run id (the last line of stdout)."""
    result = cli(settings, "enqueue", name, *options)
    assert result.returncode == 0, f"enqueue {name} exited {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout.strip().splitlines()[-1]


def enqueue_many(settings: Settings, *runs: Sequence[str]) -> list[str]:
    """Several `enqueue` commands in parallel (each `(name, *options)`); run ids in order."""
    return parallel([lambda r=r: enqueue(settings, *r) for r in runs])


def wait_run(settings: Settings, run_id: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`backfill wait RUN --timeout`; returns the completed process (the caller checks the code)."""
    return cli(settings, "wait", run_id, "--timeout", str(timeout), timeout=timeout + 60)


def wait_runs(settings: Settings, run_ids: Sequence[str],
              timeout: float = 90) -> list[subprocess.CompletedProcess[str]]:
    return parallel([lambda r=r: wait_run(settings, r, timeout) for r in run_ids])


def status_json(settings: Settings, run_id: str) -> dict[str, object]:
    result = cli(settings, "status", run_id, "--json")
    assert result.returncode == 0, f"status exited {result.returncode}: {result.stderr}"
    data = json.loads(result.stdout)
    assert isinstance(data, dict), data
    return data


def parallel(calls: Sequence[Callable[[], object]]) -> list:  # type: ignore[type-arg]
    """Run the calls in threads (CLI subprocesses are slow to start); results in order, errors re-raised."""
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], object]) -> None:
        try:
            results[i] = call()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def deliver_again(settings: Settings, run_id: str, times: int, gap: float) -> None:
    """Send the run's part-0 task `times` more times, `gap` seconds apart (duplicate deliveries)."""
    from worker.runtime import celery_app
    app = celery_app(settings)
    try:
        for _ in range(times):
            app.send_task("backfill.run_part", args=[run_id, 0], queue=settings.queue)
            time.sleep(gap)
    finally:
        app.close()


def expect_exit(result: subprocess.CompletedProcess[str], code: int, what: str) -> None:
    assert result.returncode == code, (f"{what}: expected exit {code}, got {result.returncode}\n"
                                       f"stdout: {result.stdout}\nstderr: {result.stderr}")


# -- the data is exactly right -------------------------------------------------------------

def assert_status_backfill_exact(engine: sa.Engine, run_id: str, needed: int, total_rows: int | None = None) -> None:
    """Every aois.status is 'ACTIVE'; the run changed exactly `needed` rows, no row errors."""
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM aois WHERE status IS DISTINCT FROM 'ACTIVE'")).scalar_one()
        errors = conn.execute(sa.text("SELECT count(*) FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)"),
                              {"r": run_id}).scalar_one()
    c = counters(engine, run_id)
    assert left == 0, f"{left} aois rows still have a status other than 'ACTIVE'"
    assert c.state == "succeeded", c
    assert c.done, c
    assert c.rows_processed == needed, f"rows_processed {c.rows_processed} != {needed} rows that needed it"
    assert c.row_errors == 0 and errors == 0, (c, errors)
    _assert_scanned(engine, run_id, c, total_rows)


def _assert_scanned(engine: sa.Engine, run_id: str, c: Counters, total_rows: int | None) -> None:
    """Key order visits each key once; physical order visits each row version in each pass
    (its own new versions included), so at least every row."""
    if total_rows is None:
        return
    if run_record(engine, run_id).batch_order == "physical":
        assert c.rows_scanned >= total_rows, f"rows_scanned {c.rows_scanned} < {total_rows} rows: rows were skipped"
    else:
        assert c.rows_scanned == total_rows, (
            f"rows_scanned {c.rows_scanned} != {total_rows} keys: a batch was lost or redone")


def assert_area_backfill_exact(engine: sa.Engine, run_id: str, baseline: AreaBaseline,
                               total_rows: int | None = None) -> None:
    """area_ha_new = round(area_ha, 2) for every valid row, NULL for bad ones, one row error per
    bad row (and no other), and exact counters."""
    with engine.connect() as conn:
        wrong = conn.execute(sa.text(
            f"SELECT count(*) FROM aois WHERE area_ha IS NOT NULL AND NOT ({BAD_AREA}) "
            f"AND area_ha_new IS DISTINCT FROM round(area_ha::numeric, 2)")).scalar_one()
        bad_filled = conn.execute(sa.text(
            f"SELECT count(*) FROM aois WHERE (area_ha IS NULL OR ({BAD_AREA})) "
            f"AND area_ha_new IS NOT NULL")).scalar_one()
        error_keys = conn.execute(sa.text(
            "SELECT key FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)"), {"r": run_id}).scalars().all()
    c = counters(engine, run_id)
    assert wrong == 0, f"{wrong} valid rows do not have area_ha_new = round(area_ha::numeric, 2)"
    assert bad_filled == 0, f"{bad_filled} bad or NULL rows got an area_ha_new"
    flat = [k[0] if isinstance(k, list) and len(k) == 1 else k for k in error_keys]
    assert len(flat) == len(set(map(str, flat))), "a row was recorded as a row error more than once"
    assert set(map(str, flat)) == set(baseline.bad_ids), (
        f"row errors {sorted(map(str, flat))} != bad rows {sorted(baseline.bad_ids)}")
    assert c.state == "completed_with_errors", c
    assert c.done, c
    assert c.rows_processed == baseline.to_change, (
        f"rows_processed {c.rows_processed} != {baseline.to_change} rows that needed the backfill")
    assert c.row_errors == len(baseline.bad_ids), f"row_errors {c.row_errors} != {len(baseline.bad_ids)} bad rows"
    _assert_scanned(engine, run_id, c, total_rows)


def load_aois(engine: sa.Engine, rows: int, bad_rows: bool = True) -> None:
    """Realistic aois (and no jobs) through the product's sample-data loader."""
    from worker.sample_data import SampleSpec, load

    load(engine, SampleSpec(aois=rows, jobs=0, bad_rows=bad_rows))
