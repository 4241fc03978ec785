"""A retry run is driven by the keys its parent recorded as row errors: each chunk of keys
is looked up through the key index (never a scan of the table), so 100k recorded errors
are retried quickly, exactly those rows and no other, with a still-bad row recorded again."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import sqlalchemy as sa

from backfills.batch import read_key_columns
from backfills.definition import Backfill
from backfills.error_keys import ErrorKeysExecutor
from backfills.keyset import Scope
from backfills.runs import RunOptions, RunStore
from tests.support.engine_helpers import TIMEOUTS, drain, execute, new_run, rows, scalar

ERRORS = 100_000


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


def test_a_retry_run_looks_up_100k_recorded_keys_by_index(engine: sa.Engine) -> None:
    table = f"re_{uuid.uuid4().hex[:12]}"
    execute(engine, f"CREATE TABLE {table} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), n int NOT NULL, x int)",
            f"INSERT INTO {table} (n) SELECT g FROM generate_series(1, {2 * ERRORS + 1}) g")
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text(f"ANALYZE {table}"))
    definition = Backfill(name=table, table=table, description="test", needs="t.x IS NULL",
                          sets={"x": "100 / (t.n - 7)"})  # n = 7 still fails
    parent = RunStore(engine).create(table, RunOptions())
    execute(engine, f"INSERT INTO backfill.row_errors (run_id, key, error) SELECT CAST(:p AS uuid), "
                    f"jsonb_build_array(id::text), 'earlier' FROM {table} WHERE n % 2 = 1", p=parent.id)
    RunStore(engine).transition(parent.id, "cancelled")
    run = new_run(engine, table, RunOptions(batch_size=10_000, sleep=0), parent_run_id=parent.id)
    with engine.connect() as conn:
        key = read_key_columns(conn, definition)
    executor = ErrorKeysExecutor(engine, definition, key, Scope(parent_run=parent.id), run.id, 0)

    with engine.connect() as conn, conn.begin() as trans:
        statement = executor.next_statement(conn, None, 10_000)
        assert statement is not None
        plan = conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {statement[0].text}"), statement[1]).scalar_one()
        trans.rollback()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    scans = {n["Node Type"] for n in _nodes(plan[0]["Plan"]) if n.get("Relation Name") == table}
    assert "Seq Scan" not in scans and scans & {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, scans

    started = time.monotonic()
    results = list(drain(executor, 10_000, timeouts=TIMEOUTS))
    seconds = time.monotonic() - started
    assert seconds < 60, f"100k recorded keys took {seconds:.1f}s"
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE n % 2 = 1 AND n <> 7 AND x IS NULL") == 0
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE n % 2 = 0 AND x IS NOT NULL") == 0
    errors = rows(engine, "SELECT key, error FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)", r=run.id)
    seven = scalar(engine, f"SELECT id::text FROM {table} WHERE n = 7")
    assert [(e.key, "division by zero" in e.error) for e in errors] == [([seven], True)]
    progress = rows(engine, "SELECT rows_processed, row_errors, rows_scanned FROM backfill.progress "
                            "WHERE run_id = CAST(:r AS uuid)", r=run.id)[0]
    assert tuple(progress) == (ERRORS, 1, ERRORS + 1)
    assert sum(r.changed for r in results) == ERRORS
