"""Physical-order runs of every shipped backfill with real workers while the application
writes: a writer updates other columns of rows that still need the backfill (their new
versions land anywhere, some behind the cursor) and inserts new rows that need it. The
closing passes catch them all: the data is checked row by row against independent SQL,
and the counters are exact. Also: `--order physical` refused where it cannot work, and
`status --json` saying which order and why.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.support.checks import (assert_area_backfill_exact, assert_status_backfill_exact, area_baseline, cli,
                                  counters, enqueue, expect_exit, status_json, wait_for_batches, wait_run)
from core.settings import Settings

ROWS = 30_000
# not about the guard, which may hold runs back on a small test machine
OPTIONS = ("--batch-size", "1000", "--sleep", "0.05", "--order", "physical", "--max-latency-ratio", "0")
ERROR_TEXT = "coalesce(nullif(left(btrim(result ->> 'error', E' \\t\\r\\n'), 4000), ''), " \
             "'unknown: failed before error tracking')"


@dataclass(frozen=True)
class Case:
    """One shipped backfill: what still needs it, what the writer touches and inserts."""

    name: str
    table: str
    needs: str
    touch: str           # SET clause on columns the backfill does not write
    insert: str          # INSERT of rows that need the backfill; `:n` rows
    replica: bool = False  # insert with triggers off (the dual-write trigger would fill the column)


CASES = [
    Case("aois_status", "aois", "status IS NULL", "name = name || '.'",
         "INSERT INTO aois (tenant_id, name, status) SELECT (SELECT min(id::text)::uuid FROM tenants), "
         "'w' || g, NULL FROM generate_series(1, :n) g"),
    Case("aois_area_ha_numeric", "aois", "area_ha_new IS NULL AND area_ha IS NOT NULL", "name = name || '.'",
         "INSERT INTO aois (tenant_id, name, area_ha) SELECT (SELECT min(id::text)::uuid FROM tenants), "
         "'w' || g, g * 1.125 FROM generate_series(1, :n) g", replica=True),
    Case("jobs_tenant_id", "jobs", "tenant_id IS NULL", "updated_at = now()",
         "INSERT INTO jobs (aoi_id, job_type) SELECT (SELECT id FROM aois ORDER BY id LIMIT 1), 'w' "
         "FROM generate_series(1, :n) g"),
    Case("jobs_error_message", "jobs", "status = 'FAILED' AND error_message IS NULL", "updated_at = now()",
         "INSERT INTO jobs (aoi_id, job_type, status, result) SELECT NULL, 'w', 'FAILED', "
         "jsonb_build_object('error', '  boom ' || g) FROM generate_series(1, :n) g"),
]


class Writer:
    """The application: touches rows that still need the backfill and inserts new ones."""

    def __init__(self, engine: sa.Engine, case: Case) -> None:
        self.engine, self.case = engine, case
        self.stop, self.inserted, self.touched, self.errors = threading.Event(), 0, 0, []  # type: ignore[var-annotated]
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        c = self.case
        try:
            while not self.stop.is_set():
                with self.engine.begin() as conn:
                    self.touched += conn.execute(sa.text(
                        f"UPDATE {c.table} SET {c.touch} WHERE id IN (SELECT id FROM {c.table} "
                        f"WHERE {c.needs} ORDER BY random() LIMIT 40)")).rowcount
                    if c.replica:
                        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
                    self.inserted += conn.execute(sa.text(c.insert), {"n": 10}).rowcount
                time.sleep(0.02)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def _check_jobs(engine: sa.Engine, case: Case, run_id: str, expected_changes: int, bad: set[str]) -> None:
    if case.name == "jobs_tenant_id":
        wrong = _count(engine, "SELECT count(*) FROM jobs j JOIN aois a ON a.id = j.aoi_id "
                               "WHERE j.tenant_id IS DISTINCT FROM a.tenant_id")
    else:
        wrong = _count(engine, f"SELECT count(*) FROM jobs WHERE status = 'FAILED' AND error_message IS DISTINCT "
                               f"FROM (CASE WHEN jsonb_typeof(result) = 'object' THEN {ERROR_TEXT} ELSE "
                               f"'unknown: failed before error tracking' END)")
    with engine.connect() as conn:
        keys = {k[0] for k in conn.execute(sa.text("SELECT key FROM backfill.row_errors WHERE run_id = "
                                                   "CAST(:r AS uuid)"), {"r": run_id}).scalars()}
    c = counters(engine, run_id)
    assert wrong == 0, f"{wrong} jobs rows differ from the independent computation"
    assert keys == bad, (len(keys), len(bad))
    assert c.done and c.state == ("completed_with_errors" if bad else "succeeded"), c
    assert (c.rows_processed, c.row_errors) == (expected_changes, len(bad)), c


def _bad_jobs(engine: sa.Engine, case: Case) -> set[str]:
    if case.name != "jobs_tenant_id":
        return set()
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT j.id::text FROM jobs j WHERE j.tenant_id IS NULL AND (j.aoi_id IS NULL OR NOT EXISTS "
            "(SELECT 1 FROM aois a WHERE a.id = j.aoi_id))")).scalars())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_physical_run_under_concurrent_writes_leaves_nothing_behind(settings: Settings, engine: sa.Engine,
                                                                      workers, case: Case) -> None:
    from worker.sample_data import SampleSpec, load

    load(engine, SampleSpec(aois=ROWS, jobs=ROWS if case.table == "jobs" else 0, bad_rows=True))
    area = area_baseline(engine)
    bad = _bad_jobs(engine, case)
    needed = _count(engine, f"SELECT count(*) FROM {case.table} WHERE {case.needs}") - len(bad)
    workers(concurrency=2)
    run_id = enqueue(settings, case.name, *OPTIONS)
    with Writer(engine, case) as writer:
        wait_for_batches(engine, run_id, 8)
    assert not writer.errors, writer.errors
    assert writer.touched > 0 and writer.inserted > 0
    assert counters(engine, run_id).state == "running", "the run ended before the writer stopped"
    status = status_json(settings, run_id)
    assert status["order"] == "physical" and "--order physical" in str(status["order_reason"])
    waited = wait_run(settings, run_id, 180)
    assert waited.returncode in (0, 3), waited.stderr
    assert _count(engine, f"SELECT count(*) FROM {case.table} WHERE {case.needs}") == len(bad) + (
        len(area.bad_ids) if case.name == "aois_area_ha_numeric" else 0)
    if case.name == "aois_status":
        assert_status_backfill_exact(engine, run_id, needed + writer.inserted)
    elif case.name == "aois_area_ha_numeric":
        from dataclasses import replace
        done = replace(area, to_change=needed - len(area.bad_ids) + writer.inserted)
        assert_area_backfill_exact(engine, run_id, done)
    else:
        _check_jobs(engine, case, run_id, needed + writer.inserted, bad)
    parts = status_json(settings, run_id)["parts"]
    assert parts[0]["closing_pass"] >= 1  # it looked again once the cursor reached the end


def test_order_is_chosen_reported_and_refused_where_it_cannot_work(settings: Settings, engine: sa.Engine) -> None:
    from worker.sample_data import SampleSpec, load

    load(engine, SampleSpec(aois=5_000, jobs=0, bad_rows=False))
    checked = cli(settings, "check", "aois_status")
    expect_exit(checked, 0, "check aois_status")
    assert "batch order: physical (physical order: the key's order is unrelated to the heap order" \
        in checked.stdout, checked.stdout
    assert "an index covers a column it sets, so each block range is one transaction" in checked.stdout  # status
    striped = cli(settings, "check", "aois_area_ha_numeric")
    expect_exit(striped, 0, "check aois_area_ha_numeric")
    assert "no index covers a column it sets, so each block range commits in 4 stripes" in striped.stdout, \
        striped.stdout
    keyed = cli(settings, "check", "aois_status", "--order", "key")
    assert "batch order: key (key order was asked for (--order key))" in keyed.stdout, keyed.stdout
    bad = cli(settings, "check", "aois_status", "--order", "sideways")
    expect_exit(bad, 2, "an unknown --order")
    run_id = enqueue(settings, "aois_status", "--order", "key", "--batch-size", "100000")
    assert status_json(settings, run_id)["order"] == "key"
    shown = cli(settings, "status", run_id)
    assert "order: key (key order was asked for (--order key))" in shown.stdout, shown.stdout
