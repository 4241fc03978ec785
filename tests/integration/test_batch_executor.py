"""BatchExecutor against real PostgreSQL: bisection around rows that fail on data,
fencing of a stale cursor, the batch's SET LOCAL settings, and tenant scoping."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from backfills.batch import LostRace, Timeouts
from backfills.definition import Backfill
from backfills.keyset import Scope
from backfills.registry import Registry
from backfills.runs import RunStore
from tests.support.engine_helpers import (
    TIMEOUTS,
    drain,
    execute,
    executor_for,
    new_run,
    rows,
    scalar,
)

T1 = "11111111-1111-4111-8111-111111111111"
T2 = "22222222-2222-4222-8222-222222222222"

# Writes round(area_ha, 2) into NUMERIC(10,2) WITHOUT an invalid_reason: overflowing rows
# make the whole statement fail, and only bisection can save the good rows.
NO_CHECK = Backfill(
    name="area_no_check", table="aois", description="test: no validity check",
    needs="t.area_ha_new IS NULL AND t.area_ha IS NOT NULL",
    sets={"area_ha_new": "round(t.area_ha::numeric, 2)"}, tenant_column="tenant_id",
)
BAD_AREAS = ["1e12", "99999999.996", "-1e9", "Infinity", "-Infinity", "-99999999.996"]


def _tenants(engine: sa.Engine) -> None:
    execute(engine, f"INSERT INTO tenants (id, name) VALUES ('{T1}', 't1'), ('{T2}', 't2')")


def _aois(engine: sa.Engine, tenant: str, n: int, bad_every: int | None = None, prefix: str = "a") -> None:
    """n old rows (no trigger) of `tenant`; every `bad_every`-th gets a bad area in turn."""
    bad = ", ".join(f"'{v}'::float8" for v in BAD_AREAS)
    area = (f"CASE WHEN g % {bad_every} = 0 THEN (ARRAY[{bad}])[1 + (g / {bad_every}) % {len(BAD_AREAS)}] "
            f"ELSE g * 1.005 END" if bad_every else "g * 1.005")
    execute(engine, f"INSERT INTO aois (tenant_id, name, area_ha, status) "
                    f"SELECT '{tenant}', '{prefix}-' || g, {area}, NULL FROM generate_series(1, {n}) g",
            replica=True)


def _overflowing(engine: sa.Engine, tenant: str | None = None) -> set[str]:
    where = f" AND tenant_id = '{tenant}'" if tenant else ""
    return {str(r.id) for r in rows(engine, "SELECT id FROM aois WHERE (area_ha::text IN ('Infinity', '-Infinity') "
                                            "OR (area_ha::text <> 'NaN' AND abs(round(area_ha::numeric, 2)) >= 1e8))"
                                            + where)}


def _row_errors(engine: sa.Engine, run_id: str) -> dict[str, str]:
    return {r.key[0]: r.error for r in rows(
        engine, "SELECT key, error FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)", r=run_id)}


def _progress(engine: sa.Engine, run_id: str) -> sa.Row:
    return rows(engine, "SELECT cursor, rows_processed, rows_scanned, batches, row_errors FROM backfill.progress "
                        "WHERE run_id = CAST(:r AS uuid) AND part = 0", r=run_id)[0]


def _state(engine: sa.Engine) -> list[tuple]:
    """Everything a batch could write, to prove that nothing was."""
    return [tuple(r) for r in rows(engine, """
        SELECT 'aoi', id::text, coalesce(area_ha_new::text, '-') || coalesce(status, '-') || name FROM aois
        UNION ALL SELECT 'err', run_id::text || key::text, error FROM backfill.row_errors
        UNION ALL SELECT 'progress', run_id::text || part, concat_ws(',', cursor::text, rows_processed,
               rows_scanned, batches, row_errors, updated_at) FROM backfill.progress
        ORDER BY 1, 2""")]


# -- bisection ------------------------------------------------------------------------------------
def test_bisection_isolates_exactly_the_failing_rows_of_one_batch(engine: sa.Engine) -> None:
    _tenants(engine)
    _aois(engine, T1, 200, bad_every=29)
    bad = _overflowing(engine)
    assert len(bad) == 6
    run = new_run(engine, NO_CHECK.name)
    executor = executor_for(engine, NO_CHECK, run.id)

    result = executor.run(None, 500, TIMEOUTS)

    last_key = scalar(engine, "SELECT id::text FROM aois ORDER BY id DESC LIMIT 1")
    assert result.split and result.outcome == "split"
    assert (result.changed, result.rejected, result.scanned) == (194, 6, 200)
    assert result.last_key == [last_key]
    errors = _row_errors(engine, run.id)
    assert set(errors) == bad
    assert all(e == "numeric field overflow" for e in errors.values()), errors
    assert scalar(engine, "SELECT count(*) FROM aois WHERE area_ha_new IS DISTINCT FROM "
                          "CASE WHEN id = ANY(CAST(:bad AS uuid[])) THEN NULL ELSE round(area_ha::numeric, 2) END",
                  bad=sorted(bad)) == 0
    progress = _progress(engine, run.id)
    assert progress.cursor == [last_key]
    assert (progress.rows_processed, progress.row_errors, progress.rows_scanned) == (194, 6, 200)
    # the next batch finds nothing left
    assert executor.run(result.last_key, 500, TIMEOUTS).last_key is None


@pytest.mark.parametrize(("batch_size", "bad_every"), [(1, 7), (37, 3), (64, 1)])
def test_bisection_over_many_batches(engine: sa.Engine, batch_size: int, bad_every: int) -> None:
    _tenants(engine)
    _aois(engine, T1, 150, bad_every=bad_every)
    bad = _overflowing(engine)
    run = new_run(engine, NO_CHECK.name)
    results = list(drain(executor_for(engine, NO_CHECK, run.id), batch_size))

    assert set(_row_errors(engine, run.id)) == bad
    assert scalar(engine, "SELECT count(*) FROM aois WHERE area_ha_new IS NULL") == len(bad)
    assert sum(r.changed for r in results) == 150 - len(bad)
    assert sum(r.rejected for r in results) == len(bad)
    assert sum(r.scanned for r in results) == 150
    # a batch is split exactly when it held a bad row
    keys = [str(r.id) for r in rows(engine, "SELECT id FROM aois ORDER BY id")]
    chunks = [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)]
    assert [r.split for r in results[:-1]] == [bool(set(c) & bad) for c in chunks]
    progress = _progress(engine, run.id)
    assert (progress.rows_processed, progress.row_errors, progress.rows_scanned) == (150 - len(bad), len(bad), 150)


def test_rows_that_no_longer_need_it_are_skipped_during_bisection(engine: sa.Engine) -> None:
    _tenants(engine)
    _aois(engine, T1, 60, bad_every=10)
    execute(engine, "UPDATE aois SET area_ha_new = 1 WHERE name IN ('a-1', 'a-2', 'a-33')", replica=True)
    run = new_run(engine, NO_CHECK.name)
    result = executor_for(engine, NO_CHECK, run.id).run(None, 100, TIMEOUTS)
    assert (result.changed, result.rejected, result.scanned) == (51, 6, 60)
    assert scalar(engine, "SELECT count(*) FROM aois WHERE area_ha_new = 1") == 3


# -- fencing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_bad_rows", [False, True], ids=["plain", "bisecting"])
def test_a_stale_cursor_raises_lost_race_and_changes_nothing(engine: sa.Engine, with_bad_rows: bool) -> None:
    _tenants(engine)
    _aois(engine, T1, 100, bad_every=4 if with_bad_rows else None)
    run = new_run(engine, NO_CHECK.name)
    executor = executor_for(engine, NO_CHECK, run.id)
    first = executor.run(None, 10, TIMEOUTS)
    # another worker took the part over and moved its cursor on
    keys = [str(r.id) for r in rows(engine, "SELECT id FROM aois ORDER BY id")]
    RunStore(engine).set_cursor(run.id, 0, [keys[40]])
    before = _state(engine)

    with pytest.raises(LostRace):
        executor.run(first.last_key, 10, TIMEOUTS)
    assert _state(engine) == before

    # a worker that never saw the first batch (cursor None) is fenced too
    with pytest.raises(LostRace):
        executor.run(None, 10, TIMEOUTS)
    assert _state(engine) == before


# -- SET LOCAL ------------------------------------------------------------------------------------------
PROBE = Backfill(
    name="probe_settings", table="aois", description="test: write the session's settings into name",
    needs="t.name LIKE 'probe-%'",
    sets={"name": "concat_ws('|', current_setting('application_name'), current_setting('lock_timeout'), "
                  "current_setting('statement_timeout'), current_setting('app.is_system_admin', true), "
                  "current_setting('app.tenant_id', true))"},
    tenant_column="tenant_id",
)


_SESSION = ("SELECT current_setting('application_name'), current_setting('lock_timeout'), "
            "current_setting('statement_timeout'), current_setting('app.is_system_admin', true), "
            "coalesce(current_setting('app.tenant_id', true), '')")  # a GUC once set LOCAL reads '' after


def _session_settings(engine: sa.Engine) -> tuple:
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text(_SESSION)).one())


@pytest.mark.parametrize("tenant", [None, T1], ids=["all-tenants", "one-tenant"])
def test_batch_settings_are_set_local(engine: sa.Engine, tenant: str | None) -> None:
    _tenants(engine)
    _aois(engine, T1, 5, prefix="probe")
    baseline = _session_settings(engine)
    assert baseline[0] == "backfill" and baseline[1] != "1500ms" and baseline[2] != "7250ms"
    run = new_run(engine, PROBE.name, tenant=tenant)
    executor = executor_for(engine, PROBE, run.id, Scope(tenant=tenant))
    result = executor.run(None, 100, Timeouts(lock=1.5, statement=7.25))
    assert result.changed == 5

    names = {r.name for r in rows(engine, "SELECT name FROM aois")}
    admin = "false" if tenant else "true"
    assert names == {f"backfill:probe_settings|1500ms|7250ms|{admin}|{tenant or ''}"}
    # LOCAL: nothing leaks into the pooled connections afterwards
    for _ in range(3):
        assert _session_settings(engine) == baseline


def test_lock_timeout_applies_to_the_batch(engine: sa.Engine) -> None:
    """A table lock held by another session makes the batch fail fast with 55P03, changing nothing."""
    _tenants(engine)
    _aois(engine, T1, 20)
    run = new_run(engine, NO_CHECK.name)
    executor = executor_for(engine, NO_CHECK, run.id)
    with engine.connect() as blocker:
        blocker.begin()
        blocker.execute(sa.text("LOCK TABLE aois IN SHARE MODE"))
        with pytest.raises(sa.exc.OperationalError) as info:
            executor.run(None, 100, Timeouts(lock=0.2, statement=30))
        blocker.rollback()
    assert getattr(info.value.orig, "sqlstate", None) == "55P03"
    assert scalar(engine, "SELECT count(*) FROM aois WHERE area_ha_new IS NOT NULL") == 0
    assert _progress(engine, run.id).batches == 0


def _skipped(engine: sa.Engine, run_id: str) -> dict[str, bool]:
    """Skipped keys of the run -> whether they were resolved."""
    return {r.key[0]: r.resolved for r in rows(
        engine, "SELECT key, resolved_at IS NOT NULL AS resolved FROM backfill.skipped_rows "
                "WHERE run_id = CAST(:r AS uuid)", r=run_id)}


def test_rows_locked_by_another_session_are_skipped_then_revisited(engine: sa.Engine) -> None:
    """The batch never waits on a row lock: it changes the rows it can lock, records the
    others by key and counts them; a revisit does them once they are free."""
    _tenants(engine)
    _aois(engine, T1, 40, bad_every=13)
    definition = Registry.discover().get("aois_area_ha_numeric")
    run = new_run(engine, definition.name)
    executor = executor_for(engine, definition, run.id)
    locked_names = ("a-7", "a-13", "a-30")  # a-13 is a row that cannot be done
    with engine.connect() as blocker:
        blocker.begin()
        held = [str(r.id) for r in blocker.execute(sa.text(
            "SELECT id FROM aois WHERE name = ANY (:n) FOR UPDATE"), {"n": list(locked_names)})]
        started = time.monotonic()
        result = executor.run(None, 100, Timeouts(lock=30, statement=30))
        assert time.monotonic() - started < 5, "the batch waited on a row lock"
        assert (result.changed, result.skipped) == (40 - 3 - 3 + 1, 3)  # 3 bad rows, one of them locked
        first = executor.revisit(result.last_key, None, 100, Timeouts(lock=30, statement=30))
        assert (first.looked_up, first.changed, first.waiting) == (3, 0, 3)
        blocker.rollback()
    assert _skipped(engine, run.id) == {k: False for k in held}
    after = executor.revisit(result.last_key, None, 2, Timeouts(lock=30, statement=30))
    rest = executor.revisit(result.last_key, after.last_key, 2, Timeouts(lock=30, statement=30))
    done = executor.revisit(result.last_key, rest.last_key, 2, Timeouts(lock=30, statement=30))
    assert (after.looked_up + rest.looked_up, done.last_key) == (3, None)
    assert after.changed + rest.changed == 2 and after.rejected + rest.rejected == 1
    assert _skipped(engine, run.id) == {k: True for k in held}
    progress = rows(engine, "SELECT rows_processed, row_errors, rows_skipped FROM backfill.progress "
                            "WHERE run_id = CAST(:r AS uuid)", r=run.id)[0]
    assert tuple(progress) == (37, 3, 3)
    assert scalar(engine, "SELECT count(*) FROM aois WHERE area_ha_new IS NULL") == 3
    assert set(_row_errors(engine, run.id)) == _overflowing(engine)


# -- tenant scope ---------------------------------------------------------------------------------------
def test_a_tenant_scoped_executor_touches_only_that_tenant(engine: sa.Engine) -> None:
    _tenants(engine)
    _aois(engine, T1, 120, bad_every=9, prefix="one")
    _aois(engine, T2, 130, bad_every=7, prefix="two")
    status = Registry.discover().get("aois_status")
    run = new_run(engine, status.name, tenant=T1)
    results = list(drain(executor_for(engine, status, run.id, Scope(tenant=T1)), 25))

    counts = dict(rows(engine, "SELECT tenant_id::text || ':' || coalesce(status, 'NULL'), count(*) FROM aois "
                               "GROUP BY 1"))
    assert counts == {f"{T1}:ACTIVE": 120, f"{T2}:NULL": 130}
    assert len(results) == math_ceil(120, 25) + 1
    assert sum(r.scanned for r in results) == 120  # the other tenant's keys are not even visited
    assert _progress(engine, run.id).rows_processed == 120

    # a tenant-scoped bisection records only that tenant's bad rows
    bisecting = new_run(engine, NO_CHECK.name, tenant=T2)
    list(drain(executor_for(engine, NO_CHECK, bisecting.id, Scope(tenant=T2)), 1000))
    assert set(_row_errors(engine, bisecting.id)) == _overflowing(engine, T2)
    assert scalar(engine, f"SELECT count(*) FROM aois WHERE tenant_id = '{T1}' AND area_ha_new IS NOT NULL") == 0
    assert scalar(engine, f"SELECT count(*) FROM aois WHERE tenant_id = '{T2}' AND area_ha_new IS NULL") \
        == len(_overflowing(engine, T2)) > 0


def math_ceil(n: int, d: int) -> int:
    return -(-n // d)


# -- keys whose Python text differs from PostgreSQL's -----------------------------------------------
STAMPED = Backfill(
    name="stamped_fix", table="stamped", description="test: timestamp key",
    needs="t.fixed IS NULL", sets={"fixed": "t.raw::numeric(4,1)"},
)


def test_bisection_with_a_timestamp_key(engine: sa.Engine) -> None:
    execute(engine, "CREATE TABLE stamped (at timestamp PRIMARY KEY, raw float8 NOT NULL, fixed numeric(4,1))",
            "INSERT INTO stamped (at, raw) SELECT timestamp '2024-01-01' + g * interval '1.5 second', "
            "CASE WHEN g % 10 = 0 THEN 1e6 ELSE g END FROM generate_series(1, 40) g")
    run = new_run(engine, STAMPED.name)
    results = list(drain(executor_for(engine, STAMPED, run.id), 40))
    assert sum(r.rejected for r in results) == 4
    assert scalar(engine, "SELECT count(*) FROM stamped WHERE fixed IS NULL") == 4
    assert len(_row_errors(engine, run.id)) == 4
