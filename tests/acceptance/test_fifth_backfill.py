"""A fifth backfill defined outside the engine runs end to end through a real worker."""

from __future__ import annotations

import sqlalchemy as sa

from core.settings import Settings
from tests.support.workers import run_cli


def test_definition_from_outside_the_engine_runs_through_a_real_worker(settings: Settings, engine: sa.Engine,
                                                                        workers) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (name) VALUES ('t')"))
        conn.execute(sa.text(
            "INSERT INTO aois (tenant_id, name) SELECT (SELECT id FROM tenants), "
            "CASE WHEN g % 3 = 0 THEN '  padded ' || g || '  ' ELSE 'clean ' || g END FROM generate_series(1, 3000) g"))
    listed = run_cli(settings, "list")
    assert "aois_name_trim" in listed.stdout, listed.stderr
    workers(concurrency=1)
    # not about the guard, which may hold the run back on a small test machine
    enqueued = run_cli(settings, "enqueue", "aois_name_trim", "--batch-size", "500", "--sleep", "0",
                       "--max-latency-ratio", "0")
    assert enqueued.returncode == 0, enqueued.stderr
    run_id = enqueued.stdout.strip().splitlines()[-1]
    waited = run_cli(settings, "wait", run_id, "--timeout", "60")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    with engine.connect() as conn:
        padded = conn.execute(sa.text("SELECT count(*) FROM aois WHERE name <> btrim(name)")).scalar_one()
        processed = conn.execute(sa.text("SELECT sum(rows_processed) FROM backfill.progress "
                                         "WHERE run_id = CAST(:r AS uuid)"), {"r": run_id}).scalar_one()
    assert padded == 0
    assert processed == 1000
    assert run_cli(settings, "verify", "aois_name_trim").stdout.strip() == "0"
