"""Integration tests for migrations.executor.MigrationRunner against a real PostgreSQL."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from backfills.operations import RegistryGate
from backfills.registry import Registry
from core.db import create_db_engine, libpq_url
from migrations.executor import (
    BackfillRequired,
    MigrationFailed,
    MigrationRunner,
    RunnerOptions,
)
from migrations.files import SQL_DIR, MigrationError, load_migrations
from tests.support.migrations_support import (
    applied_versions,
    catalog_dump,
    write_migrations,
)

ALL_APP = [f"{n:03d}" for n in range(1, 20)]
TOOL = ["101", "102", "103"]
ALL_VERSIONS = [*TOOL, *ALL_APP]  # the order `up` applies them in on an empty database


class Log:
    """A thread-safe list of the runner's log lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def matching(self, text: str) -> list[str]:
        with self._lock:
            return [line for line in self.lines if text in line]


@pytest.fixture
def empty_engine(empty_db_url: str) -> Iterator[sa.Engine]:
    eng = create_db_engine(empty_db_url)
    yield eng
    eng.dispose()


def runner(engine: sa.Engine, directory: Path = SQL_DIR, log: Log | None = None, **options: object) -> MigrationRunner:
    return MigrationRunner(engine, load_migrations(directory), gate=RegistryGate(engine, Registry.discover()),
                           options=RunnerOptions(**options), log=log or Log())  # type: ignore[arg-type]


def scalar(engine: sa.Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def migration_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"))]


# -- up / down / up -----------------------------------------------------------------------


def test_up_down_up_gives_an_identical_schema(empty_engine: sa.Engine) -> None:
    run = runner(empty_engine)
    assert run.up() == ALL_VERSIONS
    first = catalog_dump(empty_engine)

    # sanity: the dump really describes the end state of 019 (so equality means something)
    assert any(c[1] == "aois" and c[3] == "status" and c[4] == "text" and c[5] is True and c[6] == "'ACTIVE'::text"
               for c in first["columns"])
    assert any(c[1] == "aois" and c[3] == "area_ha" and c[4] == "numeric(10,2)" for c in first["columns"])
    assert any(c[1] == "jobs" and c[3] == "tenant_id" and c[5] is True for c in first["columns"])
    assert any(k[2] == "jobs_tenant_fk" and k[5] is True for k in first["constraints"])
    assert all(i[4] is True for i in first["indexes"]), "no INVALID index after a clean up"
    assert len(first["policies"]) == 16
    assert sum(1 for r in first["row_security"] if r[2] and r[3]) == 8
    assert ("backfill",) in first["schemas"]
    assert not any(t[2] == "aois_sync_area_ha_new" for t in first["triggers"]), "019 removed the sync trigger"
    assert any(r[1] == "progress" and "fillfactor=50" in r[3] for r in first["relations"])

    tool_schema = catalog_dump(empty_engine, ("backfill",))
    assert [r[1] for r in tool_schema["relations"] if r[2] == "r"] == ["probe", "progress", "row_errors", "runs", "skipped_rows",
                                                                     "throttle_time"]
    rows_before = migration_rows(empty_engine)
    assert run.up() == []
    assert migration_rows(empty_engine) == rows_before, "a second up changes nothing"
    assert catalog_dump(empty_engine) == first

    assert run.down("001") == list(reversed(ALL_APP))
    assert applied_versions(empty_engine) == TOOL, "down 001 leaves the tool track alone"
    emptied = catalog_dump(empty_engine, ("public",))
    assert [r[1] for r in emptied["relations"]] == ["schema_migrations"]
    assert emptied["functions"] == [] and emptied["policies"] == [] and emptied["triggers"] == []
    assert catalog_dump(empty_engine, ("backfill",)) == tool_schema

    assert run.up() == ALL_APP
    second = catalog_dump(empty_engine)
    for kind in first:
        assert second[kind] == first[kind], f"{kind} differ after up/down/up"
    assert applied_versions(empty_engine) == sorted(ALL_VERSIONS)


def test_down_to_016_and_up_again_gives_an_identical_schema(empty_engine: sa.Engine) -> None:
    run = runner(empty_engine)
    run.up()
    first = catalog_dump(empty_engine)
    assert run.down("016") == ["019", "018", "017", "016"]
    middle = catalog_dump(empty_engine)
    assert any(c[1] == "aois" and c[3] == "area_ha" and c[4] == "double precision" for c in middle["columns"])
    assert any(c[1] == "aois" and c[3] == "area_ha_new" and c[4] == "numeric(10,2)" for c in middle["columns"])
    assert not any(c[1] == "jobs" and c[3] == "tenant_id" for c in middle["columns"])
    assert any(t[2] == "aois_sync_area_ha_new" for t in middle["triggers"])
    assert run.up() == ["016", "017", "018", "019"]
    assert catalog_dump(empty_engine) == first


def test_down_of_the_tool_track_leaves_the_app_track(empty_engine: sa.Engine) -> None:
    run = runner(empty_engine)
    run.up("003")
    assert run.down("101") == list(reversed(TOOL))
    assert applied_versions(empty_engine) == ["001", "002", "003"]
    assert scalar(empty_engine, "SELECT to_regnamespace('backfill')") is None
    assert scalar(empty_engine, "SELECT to_regclass('public.ai_assistant_threads')") == "ai_assistant_threads"


def test_up_to_target_stops_there(empty_engine: sa.Engine) -> None:
    run = runner(empty_engine)
    assert run.up("005") == [*TOOL, "001", "002", "003", "004", "005"]
    assert run.up("5") == []
    assert [v.version for v in run.plan()] == [f"{n:03d}" for n in range(6, 20)]
    with pytest.raises(MigrationError, match="unknown migration version '999'"):
        run.up("999")
    assert applied_versions(empty_engine) == ["001", "002", "003", "004", "005", *TOOL]


# -- drift --------------------------------------------------------------------------------


def test_changed_applied_file_is_refused_as_drift(engine: sa.Engine, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(SQL_DIR, tmp_path / "sql"))
    edited = copy / "004_add_jobs_error_message.sql"
    edited.write_text(edited.read_text() + "\nALTER TABLE jobs ADD COLUMN IF NOT EXISTS extra text;\n")
    rows_before = migration_rows(engine)
    drifted = runner(engine, copy)
    for action in (drifted.up, drifted.plan, lambda: drifted.down("016")):
        with pytest.raises(MigrationError) as err:
            action()
        assert "004_add_jobs_error_message.sql" in str(err.value)
        assert "changed" in str(err.value)
    assert migration_rows(engine) == rows_before
    assert scalar(engine, "SELECT count(*) FROM information_schema.columns "
                          "WHERE table_name = 'jobs' AND column_name = 'extra'") == 0
    assert scalar(engine, "SELECT count(*) FROM information_schema.columns "
                          "WHERE table_name = 'jobs' AND column_name = 'tenant_id'") == 1


def test_missing_applied_file_is_refused_as_drift(engine: sa.Engine, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(SQL_DIR, tmp_path / "sql"))
    (copy / "016_add_jobs_tenant_id.sql").unlink()
    with pytest.raises(MigrationError) as err:
        runner(engine, copy).up()
    assert "016_add_jobs_tenant_id" in str(err.value)
    assert "missing" in str(err.value)
    assert "017" not in applied_versions(engine)


# -- concurrency --------------------------------------------------------------------------


def _race_two_runners(url: str) -> tuple[list[list[str] | None], list[BaseException], dict[str, int], Log]:
    """Two runners on an empty database, the second started while the first holds the
    migrate lock, and kept waiting for it until the first is about to apply 001 (so the
    second is still waiting when the first reaches the CREATE INDEX CONCURRENTLY of 006).
    Returns each runner's applied versions (None on error), the errors, the
    `schema_migrations` version counts, and the second runner's log."""
    engines = [create_db_engine(url), create_db_engine(url)]
    results: list[list[str] | None] = [None, None]
    errors: list[BaseException] = []
    first_has_lock = threading.Event()
    second_log = Log()

    def second_is_waiting() -> bool:
        return bool(scalar(engines[0], "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                       "AND NOT granted AND database = (SELECT oid FROM pg_database "
                                       "WHERE datname = current_database())"))

    def first_log(line: str) -> None:
        if line.startswith("applying 001_") and not first_has_lock.is_set():
            first_has_lock.set()
            deadline = time.monotonic() + 10
            while not second_is_waiting() and time.monotonic() < deadline:
                time.sleep(0.02)

    def go(i: int) -> None:
        try:
            log = first_log if i == 0 else second_log
            results[i] = MigrationRunner(engines[i], load_migrations(),
                                         gate=RegistryGate(engines[i], Registry.discover()), log=log).up()
        except BaseException as exc:  # noqa: BLE001 - reported by the callers' assertions
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(0,)), threading.Thread(target=go, args=(1,))]
    try:
        threads[0].start()
        assert first_has_lock.wait(10)
        threads[1].start()
        for t in threads:
            t.join(60)
        with engines[0].connect() as conn:
            counts = dict(conn.execute(sa.text(
                "SELECT version, count(*) FROM schema_migrations GROUP BY version")).all())
    finally:
        for eng in engines:
            eng.dispose()
    return results, errors, counts, second_log


def test_two_runners_at_once_never_double_apply(empty_db_url: str) -> None:
    results, _errors, counts, second_log = _race_two_runners(empty_db_url)
    assert second_log.matching("another migrate is running; waiting"), "the second runner did wait"
    assert counts == {v: 1 for v in ALL_VERSIONS}
    done = [v for r in results if r for v in r]
    assert len(done) == len(set(done)), "no runner reports a migration the other one applied"


def test_two_runners_at_once_both_succeed(empty_db_url: str) -> None:
    results, errors, counts, _ = _race_two_runners(empty_db_url)
    assert [f"{type(e).__name__}: {str(e).splitlines()[0]}" for e in errors] == []
    assert results == [ALL_VERSIONS, []]
    assert counts == {v: 1 for v in ALL_VERSIONS}


def test_ddl_lock_wait_never_blocks_readers_and_is_retried(empty_db_url: str) -> None:
    eng = create_db_engine(empty_db_url)
    conninfo = libpq_url(empty_db_url)
    log = Log()
    outcome: dict[str, object] = {}
    try:
        runner(eng).up("013")
        holder = psycopg.connect(conninfo, options="-c app.is_system_admin=true")
        reader = psycopg.connect(conninfo, autocommit=True, options="-c app.is_system_admin=true")
        reader.execute("SET statement_timeout = '2s'")
        holder.execute("LOCK TABLE aois IN ACCESS SHARE MODE")  # like a long SELECT, transaction left open

        def apply() -> None:
            try:
                outcome["applied"] = runner(eng, log=log, lock_timeout="300ms", max_tries=50,
                                            backoff_max_seconds=0.5).up("014")
            except BaseException as exc:  # noqa: BLE001
                outcome["error"] = exc

        thread = threading.Thread(target=apply)
        thread.start()
        samples: list[float] = []
        started = time.monotonic()
        while time.monotonic() - started < 15:
            t0 = time.monotonic()
            try:
                reader.execute("SELECT count(*) FROM aois").fetchone()
                samples.append(time.monotonic() - t0)
            except psycopg.errors.QueryCanceled:
                samples.append(float("inf"))
            if len(log.matching("retrying")) >= 3 and time.monotonic() - started > 1.5:
                break
            time.sleep(0.02)

        assert thread.is_alive(), f"the runner gave up or finished while the lock was held: {outcome}"
        assert len(samples) >= 10
        assert max(samples) < 1.0, f"a reader waited {max(samples):.2f}s behind the DDL"
        retries = log.matching("retrying")
        assert len(retries) >= 3, log.lines
        assert all("014_add_aois_status_default.sql" in line and "lock timeout" in line for line in retries)
        assert "014" not in applied_versions(eng)
        assert scalar(eng, "SELECT column_default FROM information_schema.columns "
                           "WHERE table_name = 'aois' AND column_name = 'status'") is None

        holder.rollback()  # the long reader ends
        thread.join(20)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome
        assert outcome["applied"] == ["014"]
        assert "014" in applied_versions(eng)
        assert scalar(eng, "SELECT column_default FROM information_schema.columns "
                           "WHERE table_name = 'aois' AND column_name = 'status'") == "'ACTIVE'::text"
        holder.close()
        reader.close()
    finally:
        eng.dispose()


def test_lock_timeout_gives_up_after_max_tries(empty_db_url: str) -> None:
    eng = create_db_engine(empty_db_url)
    log = Log()
    try:
        runner(eng).up("013")
        with psycopg.connect(libpq_url(empty_db_url), options="-c app.is_system_admin=true") as holder:
            holder.execute("LOCK TABLE aois IN ACCESS SHARE MODE")
            with pytest.raises(MigrationFailed) as err:
                runner(eng, log=log, lock_timeout="100ms", max_tries=3, backoff_max_seconds=0.1).up("014")
            assert "014_add_aois_status_default.sql" in str(err.value)
            assert "lock timeout" in str(err.value)
        assert len(log.matching("retrying")) == 2
        assert "014" not in applied_versions(eng)
    finally:
        eng.dispose()


# -- failed CREATE INDEX CONCURRENTLY -----------------------------------------------------


def test_invalid_index_of_failed_concurrent_build_is_dropped_and_rebuilt(empty_engine: sa.Engine,
                                                                        tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "sql", {
        "001_t.sql": "CREATE TABLE t (id int PRIMARY KEY, x int NOT NULL);\n"
                     "INSERT INTO t (id, x) VALUES (1, 1), (2, 1), (3, 2);\n",
        "002_t_u.sql": "-- migrate: no-transaction\n"
                       "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_u ON t (x);\n",
    })
    index_state = ("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                   "WHERE c.relname = 't_u'")
    log = Log()
    with pytest.raises(MigrationFailed) as err:
        runner(empty_engine, directory, log=log).up()
    assert "002_t_u.sql" in str(err.value)
    assert "could not create unique index" in str(err.value)
    assert applied_versions(empty_engine) == ["001"]
    assert scalar(empty_engine, index_state) is False, "the failed build left an INVALID index"

    with empty_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM t WHERE id = 2"))
    log = Log()
    assert runner(empty_engine, directory, log=log).up() == ["002"]
    assert log.matching("dropping INVALID index public.t_u"), log.lines
    assert scalar(empty_engine, index_state) is True
    assert scalar(empty_engine, "SELECT count(*) FROM pg_class WHERE relname = 't_u'") == 1
    assert applied_versions(empty_engine) == ["001", "002"]
    with pytest.raises(sa.exc.IntegrityError), empty_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t (id, x) VALUES (4, 2)"))


def test_failed_transactional_migration_leaves_nothing_behind(empty_engine: sa.Engine, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "sql", {
        "001_a.sql": "CREATE TABLE a (id int);\n",
        "002_b.sql": "CREATE TABLE b (id int);\nSELECT 1 / 0;\n",
        "003_c.sql": "CREATE TABLE c (id int);\n",
    })
    with pytest.raises(MigrationFailed, match="002_b.sql failed: division by zero"):
        runner(empty_engine, directory).up()
    assert applied_versions(empty_engine) == ["001"]
    assert scalar(empty_engine, "SELECT to_regclass('public.b')") is None
    assert scalar(empty_engine, "SELECT to_regclass('public.c')") is None


# -- backfill gate ------------------------------------------------------------------------


def test_backfill_gate_stops_before_contract_migrations(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        tenant = conn.execute(sa.text("INSERT INTO tenants (name) VALUES ('A') RETURNING id")).scalar()
        aoi = conn.execute(sa.text(
            "INSERT INTO aois (tenant_id, name, status, area_ha) VALUES (:t, 'old', NULL, 1.5) RETURNING id"),
            {"t": tenant}).scalar()
    before = applied_versions(engine)
    assert before == sorted([*TOOL, *ALL_APP[:16]])

    with pytest.raises(BackfillRequired) as err:
        runner(engine).up()
    message = str(err.value)
    assert "017_aois_status_not_null.sql" in message
    assert "aois_status" in message
    assert "1 rows" in message
    assert applied_versions(engine) == before, "nothing applied, not even later migrations"

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE aois SET status = 'ACTIVE' WHERE id = :a"), {"a": aoi})
        conn.execute(sa.text("INSERT INTO aois (tenant_id, name, area_ha) VALUES (:t, 'nan', 'NaN')"),
                     {"t": tenant})
        conn.execute(sa.text("INSERT INTO jobs (aoi_id, job_type, tenant_id) VALUES (:a, 'x', :t)"),
                     {"a": aoi, "t": tenant})

    with pytest.raises(BackfillRequired) as err:
        runner(engine).up()
    assert "019_swap_aois_area_ha.sql" in str(err.value)
    assert "aois_area_ha_numeric: 1 rows" in str(err.value)
    assert applied_versions(engine) == sorted(before + ["017", "018"])
    assert scalar(engine, "SELECT is_nullable FROM information_schema.columns "
                          "WHERE table_name = 'aois' AND column_name = 'status'") == "NO"

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE aois SET area_ha = 2.345 WHERE name = 'nan'"))
    assert runner(engine).up() == ["019"]
    assert str(scalar(engine, "SELECT area_ha FROM aois WHERE name = 'nan'")) == "2.35"
    assert scalar(engine, "SELECT data_type FROM information_schema.columns "
                          "WHERE table_name = 'aois' AND column_name = 'area_ha'") == "numeric"


def test_backfill_gate_on_jobs_tenant_id(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        tenant = conn.execute(sa.text("INSERT INTO tenants (name) VALUES ('A') RETURNING id")).scalar()
        aoi = conn.execute(sa.text("INSERT INTO aois (tenant_id, name) VALUES (:t, 'a') RETURNING id"),
                           {"t": tenant}).scalar()
        conn.execute(sa.text("INSERT INTO jobs (aoi_id, job_type) VALUES (:a, 'x'), (:a, 'y')"), {"a": aoi})
    with pytest.raises(BackfillRequired, match="018_jobs_tenant_id_not_null_fk.sql requires backfill "
                                               "jobs_tenant_id: 2 rows"):
        runner(engine).up()
    assert applied_versions(engine)[-(2 + len(TOOL)):] == ["016", "017", *TOOL]


def test_gate_without_a_gate_object_refuses(engine: sa.Engine) -> None:
    bare = MigrationRunner(engine, load_migrations(), log=lambda _: None)
    with pytest.raises(BackfillRequired, match="no backfill gate is configured"):
        bare.up()
    assert "017" not in applied_versions(engine)


def test_invalid_index_outside_the_search_path_is_dropped_too(empty_engine: sa.Engine, tmp_path: Path) -> None:
    """Same as above for a table in another schema (like the tool's own `backfill` schema)."""
    directory = write_migrations(tmp_path / "sql", {
        "101_t.sql": "CREATE SCHEMA s;\nCREATE TABLE s.t (id int PRIMARY KEY, x int NOT NULL);\n"
                     "INSERT INTO s.t (id, x) VALUES (1, 1), (2, 1);\n",
        "102_t_u.sql": "-- migrate: no-transaction\n"
                       "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_u ON s.t (x);\n",
    })
    index_state = ("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                   "WHERE c.relname = 't_u'")
    with pytest.raises(MigrationFailed):
        runner(empty_engine, directory).up()
    assert scalar(empty_engine, index_state) is False
    with empty_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM s.t WHERE id = 2"))
    log = Log()
    runner(empty_engine, directory, log=log).up()
    assert applied_versions(empty_engine) == ["101", "102"]
    assert scalar(empty_engine, index_state) is True, "102 recorded as applied, but its unique index is INVALID"


def test_gate_on_an_unregistered_backfill_refuses(empty_engine: sa.Engine, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "sql", {
        "001_a.sql": "CREATE TABLE a (id int);\n",
        "002_b.sql": "-- requires-backfill: no_such_backfill\nALTER TABLE a ADD COLUMN b int;\n",
    })
    with pytest.raises(BackfillRequired, match="002_b.sql requires backfill 'no_such_backfill', "
                                               "which is not registered"):
        runner(empty_engine, directory).up()
    assert applied_versions(empty_engine) == ["001"]


def test_plan_and_applied_on_an_empty_database_write_nothing(empty_engine: sa.Engine) -> None:
    run = runner(empty_engine)
    assert run.applied() == []
    assert [m.version for m in run.plan()] == ALL_VERSIONS
    assert [m.version for m in run.plan("003")] == [*TOOL, "001", "002", "003"]
    assert scalar(empty_engine, "SELECT to_regclass('public.schema_migrations')") is None
