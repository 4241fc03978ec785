"""The plans of the statements a batch runs, as the server plans them with their real
parameters: the batch's key range is estimated as one batch, not a share of the table;
and no statement of a batch transaction (the key probe, the batch statement, bisection's
key list and chunks, `check`'s plan and samples) pays JIT compilation.

The JIT test lowers the JIT cost thresholds to 0 in the test's own database, so that any
statement planned with JIT on compiles, on a few thousand rows instead of millions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from backfills.batch import BatchExecutor, read_key_columns
from backfills.definition import Backfill
from backfills.keyset import Scope
from backfills.operations import check
from backfills.registry import Registry
from backfills.runs import RunOptions
from tests.support.engine_helpers import TIMEOUTS, drain, execute, load_old_threads, new_run, scalar
from worker import sample_data
from core.db import create_db_engine

ROWS = 20_000
BATCH = 500
MIDDLE = ["80000000-0000-4000-8000-000000000000"]
# A definition that fails on one row: its batch is bisected (key list, then chunks).
FAILS_ON_ONE_ROW = Backfill(name="aois_status_one_bad_row", table="aois", description="test: bisection",
                            needs="t.status IS NULL",
                            sets={"status": "CASE WHEN t.name = 'aoi-7' THEN (1 / 0)::text ELSE 'ACTIVE' END"})
_EXPLAINABLE = ("SELECT", "WITH", "UPDATE", "INSERT", "DELETE")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.fixture
def loaded(engine: sa.Engine) -> sa.Engine:
    sample_data.load(engine, sample_data.SampleSpec(aois=ROWS, jobs=ROWS))
    load_old_threads(engine, ROWS)
    return engine


def _executor(engine: sa.Engine, definition: Backfill) -> BatchExecutor:
    run = new_run(engine, definition.name, RunOptions(batch_size=BATCH, sleep=0))
    with engine.connect() as conn:
        key = read_key_columns(conn, definition)
    return BatchExecutor(engine, definition, key, Scope(), run.id, 0)


def _next_batch_plan(engine: sa.Engine, executor: BatchExecutor, cursor: list[str] | None) -> dict[str, Any]:
    """The plan (EXPLAIN, JSON) of the batch statement the executor would run next after
    `cursor`, with its real parameters; nothing is changed."""
    with engine.connect() as conn, conn.begin() as trans:
        executor.begin_batch(conn, TIMEOUTS)
        statement = executor.next_statement(conn, cursor, BATCH)
        assert statement is not None
        plan = conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {statement[0].text}"), statement[1]).scalar_one()
        trans.rollback()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return dict(plan[0]["Plan"])


@pytest.mark.parametrize("cursor", [None, MIDDLE], ids=["first batch", "batch after a cursor"])
def test_the_batch_key_range_is_estimated_as_one_batch(loaded: sa.Engine, cursor: list[str] | None) -> None:
    """The planner sees the batch's bounds as values: its estimate of the target rows is
    about one batch, not the third of the table it guesses for a bound it cannot see."""
    for definition in Registry.discover():
        plan = _next_batch_plan(loaded, _executor(loaded, definition), cursor)
        scans = [n for n in _nodes(plan)
                 if n.get("Relation Name") == definition.table and n["Node Type"] != "ModifyTable"]
        assert scans, definition.name
        estimates = [int(n["Plan Rows"]) for n in scans]
        assert max(estimates) <= 4 * BATCH, (definition.name, estimates, f"{ROWS:,} rows in the table")


@pytest.fixture
def jit_everywhere(loaded: sa.Engine, db_url: str) -> Iterator[sa.Engine]:
    """The test database with every JIT threshold at 0: a statement planned with JIT on
    compiles whatever its cost. Skips on a server built without JIT."""
    if not scalar(loaded, "SELECT pg_jit_available()"):
        pytest.skip("this PostgreSQL has no JIT (pg_jit_available() is false: built without LLVM, or "
                    "llvmjit is not installed): there is no compilation for a batch to pay")
    name = scalar(loaded, "SELECT quote_ident(current_database())")
    execute(loaded, *(f"ALTER DATABASE {name} SET {setting} = 0"
                      for setting in ("jit_above_cost", "jit_inline_above_cost", "jit_optimize_above_cost")))
    execute(loaded, f"ALTER DATABASE {name} SET jit = on")
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


def _explain_every_statement(engine: sa.Engine) -> list[tuple[str, str]]:
    """Every statement the engine runs from now on is first EXPLAINed on its own
    connection, in its own transaction, with its own parameters: (statement, plan) pairs."""
    plans: list[tuple[str, str]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def explain(conn: sa.Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        text = statement.lstrip()
        if text.upper().startswith(_EXPLAINABLE) and not text.startswith(("SELECT set_config", "EXPLAIN")):
            rows = cursor.connection.execute("EXPLAIN " + statement, parameters).fetchall()
            plans.append((text, "\n".join(r[0] for r in rows)))

    return plans


def test_no_statement_of_a_batch_pays_jit(jit_everywhere: sa.Engine) -> None:
    engine = jit_everywhere
    with engine.connect() as conn:
        control = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN SELECT count(*) FROM jobs")))
    assert "JIT:" in control, control  # outside a batch, this database compiles everything
    executors = [_executor(engine, d) for d in Registry.discover()] + [_executor(engine, FAILS_ON_ONE_ROW)]
    plans = _explain_every_statement(engine)
    for executor in executors[:-1]:
        cursor = None
        for _ in range(3):
            result = executor.run(cursor, BATCH, TIMEOUTS)
            assert result.last_key is not None and result.scanned == BATCH, executor.definition.name
            cursor = result.last_key
    assert any(r.split for r in drain(executors[-1], BATCH)), "the failing row was never bisected"
    statements = {text.split()[0] for text, _ in plans}
    assert len(plans) > 3 * len(executors) and "WITH" in statements, statements
    compiled = [(text[:120], plan) for text, plan in plans if "JIT:" in plan]
    assert not compiled, compiled[0]


def test_check_plans_and_samples_without_jit(jit_everywhere: sa.Engine) -> None:
    engine = jit_everywhere
    plans = _explain_every_statement(engine)
    registry = Registry.discover()
    for definition in registry:
        report = check(engine, registry, definition.name, RunOptions(batch_size=BATCH), samples=2)
        assert report.plan and not any("JIT" in line for line in report.plan), (definition.name, report.plan)
        assert report.sample_batches == 2, definition.name
    sampled = [(text[:120], plan) for text, plan in plans if text.startswith("WITH") and "JIT:" in plan]
    assert not sampled, sampled[0]


def test_a_batch_left_idle_in_its_transaction_is_ended_by_the_server(engine: sa.Engine) -> None:
    """A stalled worker does not hold its batch's row locks past the statement timeout."""
    import time

    from backfills.batch import Timeouts, sqlstate
    from backfills.retry import Failure, classify

    executor = _executor(engine, Registry.discover().get("aois_status"))
    with engine.connect() as conn:
        conn.begin()
        executor.begin_batch(conn, Timeouts(lock=1.0, statement=1.0))
        assert conn.execute(sa.text("SHOW jit")).scalar_one() == "off"
        assert conn.execute(sa.text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "1s"
        time.sleep(2.5)
        with pytest.raises(sa.exc.DBAPIError) as ended:
            conn.execute(sa.text("SELECT 1"))
    assert classify(sqlstate(ended.value), False) is Failure.TRANSIENT  # retried on a new connection
    with engine.connect() as conn:  # outside a batch, the server's own settings
        assert conn.execute(sa.text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "0"


def _loops_over_locked(plan: dict[str, Any]) -> list[str]:
    """Joins whose children read the `locked` CTE: each would re-read it for every row."""
    return [n["Node Type"] for n in _nodes(plan) if n["Node Type"] == "Nested Loop"
            and any(c.get("CTE Name") == "locked" for c in n.get("Plans", []))]


def test_the_locked_rows_are_found_by_a_hashed_lookup_even_when_the_statistics_say_the_range_is_done(
        loaded: sa.Engine) -> None:
    """Statistics taken once the table was done estimate one row per batch; a join with the
    `locked` CTE then becomes a nested loop over it: 10k x 10k comparisons, 20 s a batch."""
    definition = Registry.discover().get("jobs_tenant_id")
    executor = _executor(loaded, definition)
    list(drain(executor, 5000))
    execute(loaded, "ANALYZE jobs", "UPDATE jobs SET tenant_id = NULL")
    plan = _next_batch_plan(loaded, executor, MIDDLE)
    assert _loops_over_locked(plan) == []
    assert "hashed SubPlan" in json.dumps(plan)
