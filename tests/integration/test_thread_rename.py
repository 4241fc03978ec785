"""The runbook's rename, copilot_threads -> ai_assistant_threads, on a real PostgreSQL:
003 (the drop) is refused while `ai_assistant_threads_copy` has rows left, through the
real `backfill migrate up` (exit 2, naming the backfill and the rows); the copy, with a
row the target refuses recorded as a row error; 003 applied once nothing is missing;
`down 003` gives the old table every thread back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from backfills.operations import RegistryGate, count_remaining
from backfills.registry import Registry
from core.db import create_db_engine
from core.settings import Settings
from migrations.executor import BackfillRequired, MigrationRunner
from migrations.files import load_migrations
from tests.support.engine_helpers import drain, execute, executor_for, new_run, rows, scalar
from tests.support.migrations_support import applied_versions, one_error_line
from tests.support.workers import run_cli

THREADS = 300
COLUMNS = "id, tenant_id, aoi_id, title, status, created_at, updated_at"
ORPHAN = "99999999-9999-4999-8999-999999999999"


@pytest.fixture
def expanded_002(empty_db_url: str) -> Iterator[sa.Engine]:
    """A database at 002 (the new table exists, empty) with old threads in copilot_threads,
    one of them pointing to a tenant that does not exist (its foreign key was not checked)."""
    engine = create_db_engine(empty_db_url, pooled=False)
    runner(engine).up("002")
    execute(engine, "INSERT INTO tenants (name) SELECT 'tenant ' || g FROM generate_series(1, 3) g",
            f"INSERT INTO copilot_threads (tenant_id, title, created_at) SELECT "
            f"(SELECT id FROM tenants ORDER BY name OFFSET g % 3 LIMIT 1), 'thread ' || g, "
            f"now() - g * interval '1 minute' FROM generate_series(1, {THREADS}) g")
    execute(engine, f"INSERT INTO copilot_threads (id, tenant_id, title) VALUES ('{ORPHAN}', "
                    f"gen_random_uuid(), 'orphan')", replica=True)
    yield engine
    engine.dispose()


def runner(engine: sa.Engine) -> MigrationRunner:
    return MigrationRunner(engine, load_migrations(), gate=RegistryGate(engine, Registry.discover()),
                           log=lambda _: None)


def _applied_app(engine: sa.Engine) -> list[str]:
    return [v for v in applied_versions(engine) if int(v) < 100]


def _threads(engine: sa.Engine, table: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in rows(engine, f"SELECT {COLUMNS} FROM {table} ORDER BY id")]


def test_the_drop_waits_for_the_copy_and_down_003_restores_the_old_table(expanded_002: sa.Engine,
                                                                         empty_db_url: str, redis_url: str) -> None:
    engine = expanded_002
    settings = Settings(database_url=empty_db_url, redis_url=redis_url, namespace="rename")
    refused = run_cli(settings, "migrate", "up")
    assert refused.returncode == 2, refused
    assert one_error_line(refused).startswith(
        f"error: 003_drop_copilot_threads.sql requires backfill ai_assistant_threads_copy: {THREADS + 1} rows "
        f"still need it")
    assert _applied_app(engine) == ["001", "002"]

    definition = Registry.discover().get("ai_assistant_threads_copy")
    run = new_run(engine, definition.name)
    results = list(drain(executor_for(engine, definition, run.id), 64))
    assert sum(r.changed for r in results) == THREADS
    assert sum(r.rejected for r in results) == 1  # a row error, the rest of its batch committed
    (error,) = rows(engine, "SELECT key, error FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)", r=run.id)
    assert error.key == [ORPHAN] and "ai_assistant_threads_tenant_id_fkey" in error.error
    assert count_remaining(engine, definition) == 1

    with pytest.raises(BackfillRequired, match="ai_assistant_threads_copy: 1 rows still need it"):
        runner(engine).up()
    assert _applied_app(engine) == ["001", "002"]

    execute(engine, f"DELETE FROM copilot_threads WHERE id = '{ORPHAN}'")  # the operator's decision
    old = _threads(engine, "copilot_threads")
    assert _threads(engine, "ai_assistant_threads") == old and len(old) == THREADS
    assert runner(engine).up() == [f"{n:03d}" for n in range(3, 20)]
    assert scalar(engine, "SELECT to_regclass('public.copilot_threads')") is None

    execute(engine, "INSERT INTO ai_assistant_threads (tenant_id, title) SELECT id, 'after the drop' FROM tenants")
    assert runner(engine).down("003") == [f"{n:03d}" for n in range(19, 2, -1)]
    restored = _threads(engine, "copilot_threads")
    assert restored == _threads(engine, "ai_assistant_threads") and len(restored) == THREADS + 3
    assert count_remaining(engine, definition) == 0
