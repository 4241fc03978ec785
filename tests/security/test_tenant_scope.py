"""`--tenant` runs touch only that tenant's rows: the batch predicate says so, and row-level
security enforces it even when a definition forgets, because the worker connects as a
role that RLS applies to (docs/worker-role.sql)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import sqlalchemy as sa

from backfills.batch import BatchExecutor, Timeouts, read_key_columns
from backfills.keyset import BatchSql, Scope
from backfills.registry import Registry
from backfills.runs import RunOptions, RunStore
from core.db import create_db_engine
from core.settings import Settings
from tests.conftest import role_url
from tests.support.workers import WorkerProcess, run_cli

FINGERPRINT = "SELECT tenant_id::text, md5(string_agg(t::text, '|' ORDER BY id)) FROM aois t GROUP BY tenant_id"


def seed(engine: sa.Engine, per_tenant: int = 3000) -> list[str]:
    tenants = [str(uuid.uuid4()) for _ in range(3)]
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        for tenant in tenants:
            conn.execute(sa.text("INSERT INTO tenants (id, name) VALUES (CAST(:t AS uuid), :t)"), {"t": tenant})
            conn.execute(sa.text(
                "INSERT INTO aois (tenant_id, name, status) SELECT CAST(:t AS uuid), 'a' || g, NULL "
                "FROM generate_series(1, :n) g"), {"t": tenant, "n": per_tenant})
    return tenants


def fingerprints(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(FINGERPRINT)).all())


class ForgetsTheTenant(BatchSql):
    """A deliberately wrong builder: it drops the tenant predicate from every statement."""

    def _scope_filter(self, alias: str) -> list[str]:
        return [c for c in super()._scope_filter(alias) if ":tenant" not in c]


def test_rls_confines_a_tenant_run_even_when_the_definition_forgets_the_tenant(
        engine: sa.Engine, db_url: str, worker_role: str) -> None:
    tenants = seed(engine)
    before = fingerprints(engine)
    definition = Registry.discover().get("aois_status")
    run = RunStore(engine).create("aois_status", RunOptions(), tenant=tenants[0])
    as_role = create_db_engine(role_url(db_url, worker_role))
    try:
        with as_role.connect() as conn:
            key = read_key_columns(conn, definition)
        executor = BatchExecutor(as_role, definition, key, Scope(tenant=tenants[0]), run.id, 0)
        executor.sql = ForgetsTheTenant(definition, key, Scope(tenant=tenants[0]))
        assert ":tenant" not in executor.sql.batch(True)
        cursor = None
        while True:
            result = executor.run(cursor, 700, Timeouts(2, 30))
            if result.last_key is None:
                break
            cursor = result.last_key
    finally:
        as_role.dispose()
    after = fingerprints(engine)
    assert after[tenants[1]] == before[tenants[1]]
    assert after[tenants[2]] == before[tenants[2]]
    assert after[tenants[0]] != before[tenants[0]]
    with engine.connect() as conn:
        left = dict(conn.execute(sa.text(
            "SELECT tenant_id::text, count(*) FILTER (WHERE status IS NULL) FROM aois GROUP BY 1")).all())
    assert left == {tenants[0]: 0, tenants[1]: 3000, tenants[2]: 3000}


def test_a_tenant_run_through_a_real_worker_as_a_non_superuser_changes_only_that_tenant(
        engine: sa.Engine, db_url: str, settings: Settings, worker_role: str, tmp_path) -> None:
    tenants = seed(engine)
    before = fingerprints(engine)
    as_role = replace(settings, database_url=role_url(db_url, worker_role))
    worker = WorkerProcess(as_role, tmp_path / "worker.log").start()
    try:
        run_tenant_backfill(as_role, tenants)
    finally:
        worker.stop()
    after = fingerprints(engine)
    assert after[tenants[0]] == before[tenants[0]]
    assert after[tenants[2]] == before[tenants[2]]
    assert after[tenants[1]] != before[tenants[1]]


def run_tenant_backfill(as_role: Settings, tenants: list[str]) -> None:
    enqueued = run_cli(as_role, "enqueue", "aois_status", "--tenant", tenants[1], "--batch-size", "500", "--sleep", "0",
                       "--max-latency-ratio", "0")  # about the tenant, not the guard
    assert enqueued.returncode == 0, enqueued.stderr
    run_id = enqueued.stdout.strip().splitlines()[-1]
    waited = run_cli(as_role, "wait", run_id, "--timeout", "90")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    status = json.loads(run_cli(as_role, "status", run_id, "--json").stdout)
    assert status["tenant"] == tenants[1] and status["rows_processed"] == 3000
    assert run_cli(as_role, "verify", "aois_status", "--tenant", tenants[1]).stdout.strip() == "0"
    # the whole-table count as the same role is not filtered: the other tenants' rows are still to do
    assert run_cli(as_role, "verify", "aois_status").stdout.strip() == "6000"


def test_a_backfill_that_cannot_be_scoped_refuses_tenant(settings: Settings) -> None:
    result = run_cli(settings, "enqueue", "jobs_tenant_id", "--tenant", str(uuid.uuid4()))
    assert result.returncode == 2
    assert "cannot be scoped to one tenant" in result.stderr
    assert "Traceback" not in result.stderr
