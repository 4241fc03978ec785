"""`backfill migrate ...` through the real command line, in a subprocess, on a real PostgreSQL.

Each `backfill` process costs ~1.5 s of start-up, so the invocations that do not depend on
each other run at the same time (module fixtures) and the tests only look at the results.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from backfills.operations import RegistryGate
from backfills.registry import Registry
from core.db import create_db_engine, libpq_url
from core.settings import Settings
from migrations.executor import MigrationRunner
from migrations.files import SQL_DIR, load_migrations
from tests.support import servers
from tests.support.migrations_support import (
    applied_versions,
    one_error_line,
    run_cli_parallel,
)
from tests.support.workers import run_cli

APP = [f"{n:03d}" for n in range(1, 20)]
TOOL = ["101", "102", "103"]
EXPANDED = sorted([*TOOL, *APP[:16]])  # what db_url / the expanded template has applied
UNREACHABLE = "postgresql://u:s3cret@127.0.0.1:1/x"

BAD_SQL = """-- a migration with an unsafe statement on line 4
CREATE TABLE fresh (a int);

ALTER TABLE aois ALTER COLUMN status SET NOT NULL;
"""


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> dict[str, subprocess.CompletedProcess[str]]:
    """Invocations that need no reachable database, run at once."""
    bad = tmp_path_factory.mktemp("lint") / "050_bad.sql"
    bad.write_text(BAD_SQL)
    dummy = Settings(database_url=UNREACHABLE, redis_url=redis_url, namespace=servers.unique_name("cli"))
    calls = {
        "lint": (dummy, ["migrate", "lint"], {}),
        "lint_bad": (dummy, ["migrate", "lint", str(bad)], {}),
        "no_url_up": (dummy, ["migrate", "up"], {"DATABASE_URL": ""}),
        "unreachable_up": (dummy, ["migrate", "up"], {}),
    }
    results = run_cli_parallel([call for call in calls.values()])  # type: ignore[misc]
    out = dict(zip(calls, results, strict=True))
    out["bad_path"] = bad  # type: ignore[assignment]
    return out


@pytest.fixture(scope="module")
def expanded_url(pg_admin_url: str, templates: dict[str, str]) -> Iterator[str]:
    """A database of the module's own at schema 016 + 101, only read from."""
    name = servers.unique_name("cli")
    yield servers.create_database(pg_admin_url, name, template=templates["expanded"])
    servers.drop_database(pg_admin_url, name)


@pytest.fixture(scope="module")
def readonly(expanded_url: str, redis_url: str) -> dict[str, subprocess.CompletedProcess[str]]:
    """Invocations that change nothing in the database, run at once on the same database."""
    settings = Settings(database_url=expanded_url, redis_url=redis_url, namespace=servers.unique_name("cli"))
    with psycopg.connect(libpq_url(expanded_url)) as conn:  # one old row that aois_status must fill
        tenant = conn.execute("INSERT INTO tenants (name) VALUES ('t') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO aois (tenant_id, name, status) VALUES (%s, 'old', NULL)", (tenant,))
    calls = {
        "up_blocked": (settings, ["migrate", "up"], {}),
        "plan": (settings, ["migrate", "plan"], {}),
        "status_json": (settings, ["migrate", "status", "--json"], {}),
        "up_to_999": (settings, ["migrate", "up", "--to", "999"], {}),
    }
    return dict(zip(calls, run_cli_parallel(list(calls.values())), strict=True))  # type: ignore[arg-type]


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stderr.strip() == ""
    return proc.stdout


# -- up / down ----------------------------------------------------------------------------


def test_up_applies_pending_then_second_up_applies_nothing(settings: Settings) -> None:
    first = ok(run_cli(settings, "migrate", "up"))
    lines = first.splitlines()
    applying = [line for line in lines if line.startswith("applying ")]
    assert applying == ["applying 017_aois_status_not_null.sql", "applying 018_jobs_tenant_id_not_null_fk.sql",
                        "applying 019_swap_aois_area_ha.sql"]
    assert lines[-1] == "3 migration(s) applied"

    second = ok(run_cli(settings, "migrate", "up"))
    assert second.strip() == "nothing to apply: the schema is up to date"

    engine = create_db_engine(settings.require_database(), pooled=False)
    try:
        assert applied_versions(engine) == sorted([*TOOL, *APP])
    finally:
        engine.dispose()


def test_down_016_reverts_016_to_019(settings: Settings) -> None:
    engine = create_db_engine(settings.require_database(), pooled=False)
    try:
        MigrationRunner(engine, load_migrations(), gate=RegistryGate(engine, Registry.discover()),
                        log=lambda _: None).up()
        out = ok(run_cli(settings, "migrate", "down", "016"))
        reverting = [line for line in out.splitlines() if line.startswith("reverting ")]
        assert reverting == ["reverting 019_swap_aois_area_ha.sql", "reverting 018_jobs_tenant_id_not_null_fk.sql",
                             "reverting 017_aois_status_not_null.sql", "reverting 016_add_jobs_tenant_id.sql"]
        assert out.splitlines()[-1] == "4 migration(s) reverted"

        rows = {r["version"]: r for r in json.loads(ok(run_cli(settings, "migrate", "status", "--json")))}
        assert [v for v, r in rows.items() if not r["applied"]] == ["016", "017", "018", "019"]
        assert all(rows[v]["applied_at"] is None for v in ("016", "017", "018", "019"))
        assert rows["015"]["applied"] is True and rows["101"]["applied"] is True
        assert applied_versions(engine) == sorted([*TOOL, *APP[:15]])
        with engine.connect() as conn:
            assert conn.execute(sa.text(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'jobs' "
                "AND column_name = 'tenant_id'")).scalar() == 0
    finally:
        engine.dispose()


def test_up_to_unknown_version_is_refused(readonly: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = readonly["up_to_999"]
    assert proc.returncode == 2, proc
    line = one_error_line(proc)
    assert line.startswith("error: ")
    assert "unknown migration version '999'" in line
    assert "019" in line and "101" in line  # the known versions are listed
    assert "applying" not in proc.stdout


def test_up_blocked_by_a_backfill_is_refused_naming_it(readonly: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = readonly["up_blocked"]
    assert proc.returncode == 2, proc
    line = one_error_line(proc)
    assert line.startswith("error: 017_aois_status_not_null.sql requires backfill aois_status: 1 rows still need it")
    assert "applying" not in proc.stdout


def test_refused_commands_changed_nothing(readonly: dict[str, subprocess.CompletedProcess[str]],
                                          expanded_url: str) -> None:
    engine = create_db_engine(expanded_url, pooled=False)
    try:
        assert applied_versions(engine) == EXPANDED
    finally:
        engine.dispose()


# -- status / plan ------------------------------------------------------------------------


def test_status_json_shape(readonly: dict[str, subprocess.CompletedProcess[str]]) -> None:
    rows = json.loads(ok(readonly["status_json"]))
    assert isinstance(rows, list)
    assert [r["version"] for r in rows] == [*APP, *TOOL]
    for row in rows:
        assert set(row) == {"version", "name", "applied", "applied_at", "requires_backfill"}
        assert isinstance(row["applied"], bool)
        assert isinstance(row["requires_backfill"], list)
        assert isinstance(row["name"], str) and row["name"]
        if row["applied"]:
            assert isinstance(row["applied_at"], str) and row["applied_at"][:2] == "20"
        else:
            assert row["applied_at"] is None
    by_version = {r["version"]: r for r in rows}
    assert sorted(v for v, r in by_version.items() if r["applied"]) == EXPANDED
    assert by_version["017"]["requires_backfill"] == ["aois_status"]
    assert by_version["018"]["requires_backfill"] == ["jobs_tenant_id"]
    assert by_version["019"]["requires_backfill"] == ["aois_area_ha_numeric"]
    assert by_version["016"]["requires_backfill"] == []
    assert by_version["017"]["name"] == "aois_status_not_null"


def test_plan_prints_the_sql_of_pending_files(readonly: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = ok(readonly["plan"])
    headers = [line for line in out.splitlines() if line.startswith("-- =====")]
    assert headers == [
        "-- ===== 017_aois_status_not_null.sql [no transaction (statement by statement)] =====",
        "-- ===== 018_jobs_tenant_id_not_null_fk.sql [no transaction (statement by statement)] =====",
        "-- ===== 019_swap_aois_area_ha.sql [transaction] =====",
    ]
    for name in ("017_aois_status_not_null.sql", "018_jobs_tenant_id_not_null_fk.sql", "019_swap_aois_area_ha.sql"):
        assert (SQL_DIR / name).read_text().rstrip() in out
    assert "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS tenant_id uuid" not in out  # 016 is applied
    assert "CREATE SCHEMA IF NOT EXISTS backfill" not in out  # 101 is applied


# -- lint ---------------------------------------------------------------------------------


def test_lint_shipped_files_is_clean(offline: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = ok(offline["lint"])
    assert out.strip() == f"{len(list(SQL_DIR.glob('*.sql')))} file(s) checked: no unsafe DDL"


def test_lint_bad_file_reports_file_and_line(offline: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = offline["lint_bad"]
    bad = offline["bad_path"]
    assert proc.returncode == 2, proc
    findings = proc.stdout.splitlines()
    assert len(findings) == 1
    assert findings[0].startswith(f"{bad}:4: set-not-null: ")
    assert "Fix: " in findings[0]
    assert one_error_line(proc) == "error: 1 unsafe statement(s) in 1 file(s)"


# -- configuration and connection errors --------------------------------------------------


def test_missing_database_url_is_refused(offline: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = offline["no_url_up"]
    assert proc.returncode == 2, proc
    line = one_error_line(proc)
    assert "DATABASE_URL" in line
    assert line == "error: DATABASE_URL is not set; point it at the target PostgreSQL database"
    assert proc.stdout == ""  # no silent fall-back to some other database


def test_unreachable_database_is_a_runtime_failure_without_the_password(
        offline: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = offline["unreachable_up"]
    assert proc.returncode == 1, proc
    line = one_error_line(proc)
    assert line.startswith("error: cannot connect to the database at ")
    assert "127.0.0.1" in line
    assert "s3cret" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
