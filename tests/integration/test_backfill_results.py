"""Each shipped backfill's result equals an independent computation in SQL (SPEC §4),
on a dataset holding bad rows of every kind, run to completion in-process by the real
SliceRunner against real PostgreSQL and Redis; aois_area_ha_numeric runs while a
concurrent writer keeps updating area_ha of random rows.

The expectation is snapshotted in SQL before each run, written from the SPEC's words,
not from the definitions. An audit trigger records every row UPDATE and the session's
application_name, so "rows changed by the backfill" is counted independently of the
run's own counters.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis as redis_lib
import sqlalchemy as sa

from backfills.runs import Run, RunOptions, RunStore
from tests.support.engine_helpers import (
    execute,
    new_run,
    rows,
    run_to_completion,
    scalar,
    slice_runner,
)
from worker.sample_data import SampleSpec, load

UNKNOWN = "unknown: failed before error tracking"

# Extra bad (and borderline) areas, beyond worker.sample_data's own.
EXTRA_AREAS = [
    ("neg-overflow", "-99999999.996"), ("neg-fits", "-99999999.994"), ("pos-fits", "99999999.994"),
    ("rounds-to-1e8", "99999999.995"), ("exactly-1e8", "1e8"), ("max-fit", "99999999.99"),
    ("neg-1e8", "-1e8"), ("tiny", "1e-300"), ("denormal", "5e-324"), ("neg-zero", "-0"),
    ("half-cent", "0.005"), ("neg-half-cent", "-0.005"), ("largest-double", "1.7976931348623157e308"),
    ("neg-huge", "-1e300"), ("nan-2", "NaN"), ("inf-2", "Infinity"), ("neg-inf-2", "-Infinity"),
]
# Extra `result` shapes of FAILED jobs, beyond worker.sample_data's own.
EXTRA_RESULTS = [
    "jsonb_build_object('error', E' \\t\\n\\r ')",                       # whitespace of every kind
    "to_jsonb(E'  \\t '::text)",                                         # a JSON string of whitespace
    "'null'::jsonb",
    "jsonb_build_object('error', NULL)",
    "jsonb_build_object('error', 42)",
    "jsonb_build_object('error', true)",
    "jsonb_build_object('error', jsonb_build_array('a', 'b'))",
    "jsonb_build_object('error', jsonb_build_object('code', 42, 'detail', jsonb_build_object('x', 1)))",
    "jsonb_build_object('Error', 'wrong case')",
    "jsonb_build_object('error', E'\\t  ' || repeat('é', 4100) || E'  \\n')",  # multibyte, > 4000
    "jsonb_build_object('error', repeat('a', 3999) || '   ' || repeat('b', 10))",
    "jsonb_build_object('error', repeat('z', 4000))",
    "jsonb_build_object('error', repeat('y', 4001))",
    "jsonb_build_object('error', E'  multi\\nline  ')",
    "jsonb_build_object('error', 'plain', 'other', 1)",
    "jsonb_build_object('error', E'\\n' || repeat(' ', 5000) || 'late start')",
]

AUDIT = [
    "CREATE TABLE test_audit (tbl text NOT NULL, id uuid NOT NULL, app text NOT NULL)",
    """CREATE FUNCTION test_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO test_audit VALUES (TG_TABLE_NAME, NEW.id, current_setting('application_name'));
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER test_audit_aois AFTER UPDATE ON aois FOR EACH ROW EXECUTE FUNCTION test_audit_row()",
    "CREATE TRIGGER test_audit_jobs AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION test_audit_row()",
]


def _load_dataset(engine: sa.Engine) -> None:
    load(engine, SampleSpec(aois=20_000, jobs=10_000))
    first_tenant = "(SELECT id FROM tenants ORDER BY name LIMIT 1)"
    other_tenant = "(SELECT id FROM tenants ORDER BY name DESC LIMIT 1)"
    first_aoi = "(SELECT id FROM aois WHERE tenant_id = (SELECT id FROM tenants ORDER BY name LIMIT 1) " \
                "ORDER BY name LIMIT 1)"
    values = ", ".join(f"('extra-{label}', '{v}'::float8)" for label, v in EXTRA_AREAS)
    results = ", ".join(f"({r})" for r in EXTRA_RESULTS)
    # Rows as they were before the expand migrations: no trigger, no FK check.
    execute(
        engine,
        f"INSERT INTO aois (tenant_id, name, area_ha, status) SELECT {first_tenant}, v.name, v.area, NULL "
        f"FROM (VALUES {values}) v(name, area)",
        f"INSERT INTO aois (tenant_id, name, area_ha, status) SELECT {first_tenant}, 'archived-' || g, 12.5, "
        f"'ARCHIVED' FROM generate_series(1, 3) g",
        f"INSERT INTO jobs (aoi_id, job_type, status, result) SELECT {first_aoi}, 'extra', 'FAILED', r "
        f"FROM (VALUES {results}) v(r)",
        f"INSERT INTO jobs (aoi_id, job_type, status, result, error_message) SELECT {first_aoi}, 'kept', 'FAILED', "
        f"jsonb_build_object('error', 'new'), 'already set' FROM generate_series(1, 2)",
        f"INSERT INTO jobs (aoi_id, job_type, status, result) SELECT {first_aoi}, 'not-failed', s, "
        f"jsonb_build_object('error', 'x') FROM unnest(ARRAY['QUEUED', 'RUNNING', 'DONE']) s",
        f"INSERT INTO jobs (aoi_id, job_type, status, tenant_id) SELECT {first_aoi}, 'has-tenant', 'DONE', "
        f"{other_tenant} FROM generate_series(1, 2)",
        replica=True,
    )
    # A job whose AOI is deleted by the application: ON DELETE SET NULL makes it an orphan.
    execute(
        engine,
        f"INSERT INTO aois (tenant_id, name, area_ha) VALUES ({first_tenant}, 'doomed', 1)",
        "INSERT INTO jobs (aoi_id, job_type, status) SELECT id, 'doomed', 'DONE' FROM aois WHERE name = 'doomed'",
        "DELETE FROM aois WHERE name = 'doomed'",
    )
    execute(engine, *AUDIT)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))


@pytest.fixture
def dataset(engine: sa.Engine) -> sa.Engine:
    _load_dataset(engine)
    return engine


def _run(engine: sa.Engine, client: redis_lib.Redis, namespace: str, name: str) -> Run:
    run = new_run(engine, name, RunOptions(batch_size=1000, sleep=0, max_latency_ratio=0))
    outcomes = run_to_completion(slice_runner(engine, client, namespace), run.id)
    assert outcomes[-1].value == "done"
    return RunStore(engine).get(run.id)


def _audited(engine: sa.Engine, table: str, name: str) -> dict[str, int]:
    """id -> how many times the backfill `name` updated that row."""
    return {str(r.id): r.n for r in rows(
        engine, "SELECT id, count(*) AS n FROM test_audit WHERE tbl = :t AND app = :app GROUP BY id",
        t=table, app=f"backfill:{name}")}


def _errors(engine: sa.Engine, run_id: str) -> dict[str, list[str]]:
    """row key -> reasons recorded for it in the run."""
    found: dict[str, list[str]] = {}
    for r in rows(engine, "SELECT key, error FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)", r=run_id):
        assert isinstance(r.key, list) and len(r.key) == 1, r.key
        found.setdefault(r.key[0], []).append(r.error)
    return found


# -- aois_status ---------------------------------------------------------------------------
def test_aois_status_sets_active_exactly_where_null(dataset: sa.Engine, redis_client: redis_lib.Redis,
                                                      namespace: str) -> None:
    engine = dataset
    execute(engine, "CREATE TABLE before_aois AS SELECT * FROM aois")
    to_do = scalar(engine, "SELECT count(*) FROM aois WHERE status IS NULL")
    assert to_do == 20_000 + len(EXTRA_AREAS)
    run = _run(engine, redis_client, namespace, "aois_status")

    assert run.state == "succeeded"
    assert scalar(engine, "SELECT count(*) FROM aois a JOIN before_aois b USING (id) "
                          "WHERE a.status IS DISTINCT FROM coalesce(b.status, 'ACTIVE')") == 0
    assert scalar(engine, "SELECT count(*) FROM aois") == scalar(engine, "SELECT count(*) FROM before_aois")
    assert scalar(engine, "SELECT count(*) FROM aois WHERE status = 'ARCHIVED'") == 3
    assert scalar(engine, "SELECT count(*) FROM aois WHERE status IS DISTINCT FROM 'ACTIVE'") == 3
    # nothing else changed
    assert scalar(engine, """SELECT count(*) FROM aois a JOIN before_aois b USING (id) WHERE
        (a.tenant_id, a.farm_id, a.name, a.area_ha::text, a.area_ha_new, a.created_at, a.updated_at)
        IS DISTINCT FROM (b.tenant_id, b.farm_id, b.name, b.area_ha::text, b.area_ha_new, b.created_at, b.updated_at)
    """) == 0
    audited = _audited(engine, "aois", "aois_status")
    assert len(audited) == to_do and set(audited.values()) == {1}
    assert run.rows_processed == to_do
    assert run.row_errors == 0 and _errors(engine, run.id) == {}
    assert run.rows_scanned == scalar(engine, "SELECT count(*) FROM aois")


# -- aois_area_ha_numeric, with a concurrent writer --------------------------------------------
class AreaWriter(threading.Thread):
    """The application: keeps setting area_ha of random rows to new finite values."""

    def __init__(self, engine: sa.Engine, ids: list[str], seed: int = 7) -> None:
        super().__init__(daemon=True)
        self.engine, self.ids, self.rng = engine, ids, random.Random(seed)
        self.halt = threading.Event()
        self.touched: set[str] = set()
        self.writes = 0
        self.failure: Exception | None = None

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                row_id = self.rng.choice(self.ids)
                value = round(self.rng.uniform(-5000, 5000), 3)
                with self.engine.begin() as conn:
                    conn.execute(sa.text("UPDATE aois SET area_ha = :v WHERE id = CAST(:i AS uuid)"),
                                 {"v": value, "i": row_id})
                self.touched.add(row_id)
                self.writes += 1
                time.sleep(0.003)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc


EXPECTED_AREA_NEW = """CASE
    WHEN area_ha IS NULL OR area_ha::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL
    WHEN abs(round(area_ha::numeric, 2)) < 100000000 THEN round(area_ha::numeric, 2)
END"""


def test_aois_area_ha_numeric_under_a_concurrent_writer(dataset: sa.Engine, redis_client: redis_lib.Redis,
                                                         namespace: str) -> None:
    engine = dataset
    execute(engine, "CREATE TABLE before_aois AS SELECT * FROM aois", f"""
        CREATE TABLE expected_area AS SELECT id, area_ha,
            CASE WHEN area_ha::text IN ('NaN', 'Infinity', '-Infinity') THEN area_ha::text
                 WHEN abs(round(area_ha::numeric, 2)) >= 100000000 THEN 'overflow'
                 ELSE 'ok' END AS kind,
            {EXPECTED_AREA_NEW} AS expected
        FROM aois WHERE area_ha_new IS NULL AND area_ha IS NOT NULL""")
    kinds = dict(rows(engine, "SELECT kind, count(*) FROM expected_area GROUP BY kind"))
    # every kind of bad row is there
    assert {"NaN", "Infinity", "-Infinity", "overflow", "ok"} <= set(kinds), kinds
    assert kinds["overflow"] >= 6 and kinds["NaN"] >= 2 and kinds["-Infinity"] >= 2
    bad_ids = {str(r.id) for r in rows(engine, "SELECT id FROM expected_area WHERE kind <> 'ok'")}
    good_ids = [str(r.id) for r in rows(engine, "SELECT id FROM aois ORDER BY id")]
    good_ids = [i for i in good_ids if i not in bad_ids]

    writer = AreaWriter(engine, good_ids)
    writer.start()
    time.sleep(0.1)
    writes_before = writer.writes
    try:
        run = _run(engine, redis_client, namespace, "aois_area_ha_numeric")
        writes_during = writer.writes - writes_before
    finally:
        writer.halt.set()
        writer.join(10)
    assert writer.failure is None, f"the application's write failed: {writer.failure!r}"
    assert writes_during >= 20, f"the writer was not concurrent enough ({writes_during} writes during the run)"

    # EVERY row: area_ha_new = round(area_ha::numeric, 2) when finite and below 1e8, else NULL
    wrong = rows(engine, f"""SELECT id, area_ha::text AS area_ha, area_ha_new FROM aois
        WHERE area_ha_new IS DISTINCT FROM ({EXPECTED_AREA_NEW}) LIMIT 10""")
    assert wrong == [], wrong
    # the writer's rows really changed under the run, and the values match the latest write
    assert scalar(engine, "SELECT count(*) FROM aois a JOIN before_aois b USING (id) "
                          "WHERE a.area_ha IS DISTINCT FROM b.area_ha") > 0
    # nothing but area_ha (the writer) and area_ha_new changed
    assert scalar(engine, """SELECT count(*) FROM aois a JOIN before_aois b USING (id) WHERE
        (a.tenant_id, a.farm_id, a.name, a.status, a.created_at, a.updated_at)
        IS DISTINCT FROM (b.tenant_id, b.farm_id, b.name, b.status, b.created_at, b.updated_at)""") == 0

    # every row still bad has exactly one row error, naming why
    still_bad = {str(r.id): r.kind for r in rows(engine, """
        SELECT id, CASE WHEN area_ha::text IN ('NaN', 'Infinity', '-Infinity') THEN area_ha::text
                        ELSE 'overflow' END AS kind
        FROM aois WHERE area_ha IS NOT NULL AND area_ha_new IS NULL""")}
    assert set(still_bad) == bad_ids
    errors = _errors(engine, run.id)
    assert set(errors) == set(still_bad)
    for row_id, kind in still_bad.items():
        assert len(errors[row_id]) == 1
        reason = errors[row_id][0]
        if kind == "NaN":
            assert "NaN" in reason and "Infinity" not in reason, reason
        elif kind == "Infinity":
            assert "Infinity" in reason and "-Infinity" not in reason, reason
        elif kind == "-Infinity":
            assert "-Infinity" in reason, reason
        else:
            assert "does not fit" in reason, reason

    # counters: rows changed by the backfill, counted by the audit trigger
    audited = _audited(engine, "aois", "aois_area_ha_numeric")
    assert set(audited.values()) <= {1}, "a row was updated twice by the backfill"
    expected_ok = {str(r.id) for r in rows(engine, "SELECT id FROM expected_area WHERE kind = 'ok'")}
    assert set(audited) <= expected_ok
    assert expected_ok - writer.touched <= set(audited), "rows left for the backfill were not done"
    assert run.rows_processed == len(audited)
    assert run.row_errors == len(bad_ids)
    assert run.state == "completed_with_errors"
    assert run.rows_scanned == scalar(engine, "SELECT count(*) FROM aois")
    assert scalar(engine, "SELECT count(*) FROM aois WHERE area_ha_new IS NULL AND area_ha IS NOT NULL") \
        == len(bad_ids)


# -- jobs_tenant_id --------------------------------------------------------------------------
def test_jobs_tenant_id_from_the_aoi_and_orphans_as_row_errors(dataset: sa.Engine, redis_client: redis_lib.Redis,
                                                                namespace: str) -> None:
    engine = dataset
    execute(engine, "CREATE TABLE before_jobs AS SELECT * FROM jobs", """
        CREATE TABLE expected_tenant AS
        SELECT j.id, j.aoi_id, a.tenant_id AS expected,
               CASE WHEN j.aoi_id IS NULL THEN 'no_aoi' WHEN a.id IS NULL THEN 'gone' ELSE 'ok' END AS kind
        FROM jobs j LEFT JOIN aois a ON a.id = j.aoi_id WHERE j.tenant_id IS NULL""")
    kinds = dict(rows(engine, "SELECT kind, count(*) FROM expected_tenant GROUP BY kind"))
    assert kinds == {"ok": kinds["ok"], "no_aoi": 4, "gone": 2}, kinds  # 3 sample + the doomed one; 2 gone

    run = _run(engine, redis_client, namespace, "jobs_tenant_id")

    wrong = rows(engine, """SELECT j.id, j.tenant_id, e.expected FROM jobs j JOIN expected_tenant e USING (id)
                            WHERE j.tenant_id IS DISTINCT FROM e.expected LIMIT 10""")
    assert wrong == [], wrong
    # jobs that had a tenant keep it; no other column changed
    assert scalar(engine, """SELECT count(*) FROM jobs j JOIN before_jobs b USING (id)
                             WHERE b.tenant_id IS NOT NULL AND j.tenant_id IS DISTINCT FROM b.tenant_id""") == 0
    assert scalar(engine, """SELECT count(*) FROM jobs j JOIN before_jobs b USING (id) WHERE
        (j.aoi_id, j.job_type, j.status, j.result, j.error_message, j.created_at, j.updated_at)
        IS DISTINCT FROM (b.aoi_id, b.job_type, b.status, b.result, b.error_message, b.created_at, b.updated_at)
    """) == 0
    orphans = {str(r.id): (r.kind, str(r.aoi_id)) for r in rows(
        engine, "SELECT id, kind, aoi_id FROM expected_tenant WHERE kind <> 'ok'")}
    errors = _errors(engine, run.id)
    assert set(errors) == set(orphans)
    for job_id, (kind, aoi_id) in orphans.items():
        assert len(errors[job_id]) == 1
        reason = errors[job_id][0]
        if kind == "no_aoi":
            assert reason.startswith("aoi_id is NULL"), reason
        else:
            assert reason.startswith("AOI ") and aoi_id in reason and "does not exist" in reason, reason
    audited = _audited(engine, "jobs", "jobs_tenant_id")
    assert set(audited.values()) == {1}
    assert len(audited) == kinds["ok"] == run.rows_processed
    assert run.row_errors == len(orphans) == 6
    assert run.state == "completed_with_errors"


# -- jobs_error_message ------------------------------------------------------------------------
EXPECTED_MESSAGE = f"""coalesce(
    nullif(left(regexp_replace(result ->> 'error', '^\\s+|\\s+$', '', 'g'), 4000), ''),
    '{UNKNOWN}')"""


def test_jobs_error_message_follows_the_spec_formula(dataset: sa.Engine, redis_client: redis_lib.Redis,
                                                      namespace: str) -> None:
    engine = dataset
    execute(engine, "CREATE TABLE before_jobs AS SELECT * FROM jobs", f"""
        CREATE TABLE expected_msg AS SELECT id, {EXPECTED_MESSAGE} AS expected
        FROM jobs WHERE status = 'FAILED' AND error_message IS NULL""")
    to_do = scalar(engine, "SELECT count(*) FROM expected_msg")
    assert to_do > 4000
    # the spec cases are really in the data
    for expected in (UNKNOWN, '{"code": 42, "detail": {"x": 1}}', "42", "true", '["a", "b"]', "é" * 4000, "a" * 3999 + " ",
                     "z" * 4000, "y" * 4000, "multi\nline", "plain", "late start", "x" * 4000):
        assert scalar(engine, "SELECT count(*) FROM expected_msg WHERE expected = :e", e=expected) > 0, expected[:40]

    run = _run(engine, redis_client, namespace, "jobs_error_message")

    wrong = rows(engine, """SELECT j.id, left(j.error_message, 60) AS got, left(e.expected, 60) AS expected
                            FROM jobs j JOIN expected_msg e USING (id)
                            WHERE j.error_message IS DISTINCT FROM e.expected LIMIT 10""")
    assert wrong == [], wrong
    assert scalar(engine, "SELECT max(length(error_message)) FROM jobs") == 4000
    # non-FAILED jobs untouched (NULL); FAILED jobs that had a message keep it
    assert scalar(engine, "SELECT count(*) FROM jobs WHERE status <> 'FAILED' AND error_message IS NOT NULL") == 0
    assert scalar(engine, "SELECT count(*) FROM jobs WHERE error_message = 'already set'") == 2
    assert scalar(engine, """SELECT count(*) FROM jobs j JOIN before_jobs b USING (id) WHERE
        (j.aoi_id, j.job_type, j.status, j.result, j.tenant_id, j.created_at, j.updated_at)
        IS DISTINCT FROM (b.aoi_id, b.job_type, b.status, b.result, b.tenant_id, b.created_at, b.updated_at)
        OR (b.error_message IS NOT NULL AND j.error_message IS DISTINCT FROM b.error_message)""") == 0
    audited = _audited(engine, "jobs", "jobs_error_message")
    assert set(audited.values()) == {1}
    assert set(audited) == {str(r.id) for r in rows(engine, "SELECT id FROM expected_msg")}
    assert run.rows_processed == to_do
    assert run.row_errors == 0 and _errors(engine, run.id) == {}
    assert run.state == "succeeded"


# -- the sample data itself ----------------------------------------------------------------------
def test_sample_data_puts_every_result_shape_on_failed_jobs(engine: sa.Engine) -> None:
    load(engine, SampleSpec(aois=2000, jobs=1000))
    shapes = dict(rows(engine, """SELECT CASE
            WHEN result IS NULL THEN 'null'
            WHEN jsonb_typeof(result) <> 'object' THEN 'not an object: ' || jsonb_typeof(result)
            WHEN NOT result ? 'error' THEN 'no error key'
            WHEN jsonb_typeof(result -> 'error') <> 'string' THEN 'error is ' || jsonb_typeof(result -> 'error')
            WHEN btrim(result ->> 'error') = '' THEN 'blank error'
            WHEN result ->> 'error' <> btrim(result ->> 'error', E' \\t\\r\\n') THEN 'padded error'
            ELSE 'plain error' END, count(*)
        FROM jobs WHERE status = 'FAILED' GROUP BY 1"""))
    assert {"null", "not an object: array", "not an object: string", "no error key", "error is object",
            "blank error", "padded error", "plain error"} <= set(shapes), shapes
