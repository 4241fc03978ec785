"""Keyset batches visit every key exactly once, in ceil(n / batch_size) batches, also for
composite keys and keys added during the run; and a batch near the end of a big table
costs what a batch at the start costs (an index range scan, never a sequential scan).

The test-only definitions match every row (`t.visits >= 0`) and add 1 to `visits`: a key
visited twice would show `visits = 2`. Termination does not depend on `needs` (the keyset
ends when no key is left after the cursor); a batch cap guards against a runaway loop.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfills.definition import Backfill
from backfills.keyset import Scope
from tests.support.engine_helpers import (
    TIMEOUTS,
    drain,
    execute,
    executor_for,
    load_old_threads,
    new_run,
    rows,
    scalar,
)

PROPERTY = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _definition(table: str, key: tuple[str, ...] = ()) -> Backfill:
    return Backfill(name=table, table=table, description="test: count visits", needs="t.visits >= 0",
                    sets={"visits": "t.visits + 1"}, key=key)


def _fresh_table(engine: sa.Engine, columns: str, primary_key: str) -> str:
    table = f"kc_{uuid.uuid4().hex[:12]}"
    execute(engine, f"CREATE TABLE {table} ({columns}, visits int NOT NULL DEFAULT 0, PRIMARY KEY ({primary_key}))")
    return table


def _progress(engine: sa.Engine, run_id: str) -> sa.Row[Any]:
    return rows(engine, "SELECT cursor, rows_processed, rows_scanned, batches, row_errors FROM backfill.progress "
                        "WHERE run_id = CAST(:r AS uuid) AND part = 0", r=run_id)[0]


@PROPERTY
@given(keys=st.sets(st.integers(min_value=-2**31, max_value=2**31 - 1), max_size=250),
       batch_size=st.integers(min_value=1, max_value=300))
def test_integer_keys_each_visited_once(engine: sa.Engine, keys: set[int], batch_size: int) -> None:
    table = _fresh_table(engine, "id int NOT NULL", "id")
    try:
        if keys:
            with engine.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO {table} (id) SELECT unnest(CAST(:k AS int[]))"), {"k": sorted(keys)})
        definition = _definition(table)
        run = new_run(engine, table)
        results = list(drain(executor_for(engine, definition, run.id), batch_size,
                             max_batches=len(keys) + 3))

        visits = dict(rows(engine, f"SELECT id, visits FROM {table}"))
        assert visits == {k: 1 for k in keys}
        assert len(results) == math.ceil(len(keys) / batch_size) + 1
        assert results[-1].last_key is None
        assert [r.last_key for r in results[:-1]] == [[str(k)] for k in sorted(keys)[batch_size - 1::batch_size]] \
            + ([] if len(keys) % batch_size == 0 else [[str(max(keys))]])
        assert sum(r.changed for r in results) == len(keys) == sum(r.scanned for r in results)
        progress = _progress(engine, run.id)
        assert progress.batches == math.ceil(len(keys) / batch_size)
        assert progress.rows_processed == progress.rows_scanned == len(keys)
        assert progress.cursor == ([str(max(keys))] if keys else None)
        assert progress.row_errors == 0
    finally:
        execute(engine, f"DROP TABLE {table}")


_text_part = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=4)


@PROPERTY
@given(keys=st.sets(st.tuples(st.integers(min_value=-3, max_value=3), _text_part), max_size=200),
       batch_size=st.integers(min_value=1, max_value=60))
def test_composite_keys_each_visited_once(engine: sa.Engine, keys: set[tuple[int, str]], batch_size: int) -> None:
    table = _fresh_table(engine, "a int NOT NULL, b text NOT NULL", "a, b")
    try:
        if keys:
            with engine.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO {table} (a, b) SELECT * FROM "
                                     f"unnest(CAST(:a AS int[]), CAST(:b AS text[]))"),
                             {"a": [k[0] for k in keys], "b": [k[1] for k in keys]})
        run = new_run(engine, table)
        results = list(drain(executor_for(engine, _definition(table), run.id), batch_size,
                             max_batches=len(keys) + 3))

        visits = {(r.a, r.b): r.visits for r in rows(engine, f"SELECT a, b, visits FROM {table}")}
        assert visits == {k: 1 for k in keys}
        assert len(results) == math.ceil(len(keys) / batch_size) + 1
        # the cursor is the last key in the database's own order
        last = rows(engine, f"SELECT t.a::text AS a_text, t.b FROM {table} t ORDER BY t.a DESC, t.b DESC LIMIT 1")
        progress = _progress(engine, run.id)
        assert progress.cursor == ([last[0][0], last[0][1]] if keys else None)
        assert progress.batches == math.ceil(len(keys) / batch_size)
        assert progress.rows_processed == progress.rows_scanned == len(keys)
    finally:
        execute(engine, f"DROP TABLE {table}")


def test_keys_added_during_the_run_beyond_the_cursor_are_included(engine: sa.Engine) -> None:
    table = _fresh_table(engine, "id int NOT NULL", "id")
    execute(engine, f"INSERT INTO {table} (id) SELECT g * 10 FROM generate_series(1, 100) g")
    run = new_run(engine, table)
    executor = executor_for(engine, _definition(table), run.id)
    cursor = None
    for _ in range(3):
        cursor = executor.run(cursor, 10, TIMEOUTS).last_key
    assert cursor == ["300"]
    # the application inserts: beyond the end, in a gap ahead of the cursor, and behind it
    execute(engine, f"INSERT INTO {table} (id) VALUES (2000), (2001), (555), (1001), (5), (295)")
    results = list(drain(executor, 10, cursor))
    visits = dict(rows(engine, f"SELECT id, visits FROM {table}"))
    ahead = {k: v for k, v in visits.items() if k > 300}
    assert ahead == {k: 1 for k in ahead} and {2000, 2001, 555, 1001} <= set(ahead)
    assert visits[5] == 0 and visits[295] == 0, "keys behind the cursor are the application's (not revisited)"
    assert {k: v for k, v in visits.items() if k <= 300 and k not in (5, 295)} == \
        {k: 1 for k in range(10, 301, 10)}
    assert results[-2].last_key == ["2001"]
    assert len(results) == math.ceil(74 / 10) + 1  # 70 old keys + 4 new ones after the cursor
    assert _progress(engine, run.id).rows_scanned == 104


# -- cost per batch ------------------------------------------------------------------------------
BIG = 200_000


@pytest.fixture
def big_table(engine: sa.Engine) -> str:
    table = _fresh_table(engine, "id int NOT NULL, payload text", "id")
    execute(engine, f"INSERT INTO {table} (id, payload) SELECT g, md5(g::text) FROM generate_series(1, {BIG}) g")
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text(f"VACUUM ANALYZE {table}"))
    return table


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def _explain(engine: sa.Engine, table: str, run_id: str, cursor: list[str] | None, limit: int,
             analyze: bool) -> dict[str, Any]:
    executor = executor_for(engine, _definition(table), run_id, Scope())
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    with engine.connect() as conn, conn.begin() as trans:
        executor.begin_batch(conn, TIMEOUTS)
        statement = executor.next_statement(conn, cursor, limit)
        assert statement is not None
        plan = conn.execute(sa.text(f"EXPLAIN ({options}) {statement[0].text}"), statement[1]).scalar_one()
        trans.rollback()  # EXPLAIN ANALYZE ran the UPDATE: keep nothing
    if isinstance(plan, str):
        plan = json.loads(plan)
    return plan[0]


def _target_scans(plan: dict[str, Any], table: str) -> list[str]:
    return [n["Node Type"] for n in _nodes(plan["Plan"])
            if n.get("Relation Name") == table and n["Node Type"] != "ModifyTable"]


def _buffers(plan: dict[str, Any]) -> int:
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


def test_a_batch_near_the_end_costs_what_a_batch_at_the_start_costs(engine: sa.Engine, big_table: str) -> None:
    run = new_run(engine, big_table)
    near_end = [str(BIG - 3_000)]
    plan = _explain(engine, big_table, run.id, near_end, 1000, analyze=False)
    scans = _target_scans(plan, big_table)
    assert scans, plan
    assert "Seq Scan" not in scans, scans
    assert set(scans) <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, scans
    index_nodes = [n for n in _nodes(plan["Plan"]) if n.get("Index Name") == f"{big_table}_pkey"]
    assert index_nodes and all("Index Cond" in n for n in index_nodes), index_nodes
    # the key range starts at the cursor: an index condition, not a filter
    assert all(f"(id > {near_end[0]})" in n["Index Cond"] for n in index_nodes), index_nodes

    # measured (EXPLAIN ANALYZE in a rolled-back transaction): the same work anywhere in the table
    start = _explain(engine, big_table, run.id, None, 1000, analyze=True)
    middle = _explain(engine, big_table, run.id, [str(BIG // 2)], 1000, analyze=True)
    end = _explain(engine, big_table, run.id, [str(BIG - 1_500)], 1000, analyze=True)
    for measured in (start, middle, end):
        assert "Seq Scan" not in _target_scans(measured, big_table)
        modify = [n for n in _nodes(measured["Plan"])
                  if n["Node Type"] == "ModifyTable" and n.get("Relation Name") == big_table]
        assert [int(n["Actual Rows"]) for n in modify] == [1000]  # the batch changed its 1000 rows
    assert _buffers(middle) <= 2 * _buffers(start) + 100, (_buffers(start), _buffers(middle))
    assert _buffers(end) <= 2 * _buffers(start) + 100, (_buffers(start), _buffers(end))
    assert scalar(engine, f"SELECT count(*) FROM {big_table} WHERE visits > 0") == 0


def test_every_shipped_backfill_plans_its_batch_as_a_key_range(engine: sa.Engine) -> None:
    """A definition's filters (e.g. an `invalid_reason` CASE the planner cannot estimate)
    must never turn a batch into a scan of the whole table."""
    from backfills.batch import BatchExecutor, read_key_columns
    from backfills.registry import Registry
    from backfills.runs import RunOptions, RunStore
    from worker import sample_data

    sample_data.load(engine, sample_data.SampleSpec(aois=60_000, jobs=60_000))
    load_old_threads(engine, 60_000)
    for definition in Registry.discover():
        run = RunStore(engine).create(definition.name, RunOptions())
        with engine.connect() as conn, conn.begin() as trans:
            key = read_key_columns(conn, definition)
            executor = BatchExecutor(engine, definition, key, Scope(), run.id, 0)
            executor.begin_batch(conn, TIMEOUTS)
            statement = executor.next_statement(conn, ["80000000-0000-4000-8000-000000000000"], 10_000)
            assert statement is not None
            plan = conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {statement[0].text}"), statement[1]).scalar_one()
            trans.rollback()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        scans = _target_scans(plan[0], definition.table)
        assert scans and "Seq Scan" not in scans, (definition.name, scans)
        if definition.into is not None:  # a copy looks its keys up in the target, one by one
            scans = _target_scans(plan[0], definition.into.table)
            assert scans and "Seq Scan" not in scans, (definition.name, scans)
        RunStore(engine).transition(run.id, "cancelled")
