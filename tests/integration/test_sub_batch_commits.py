"""Sub-batches against real PostgreSQL and Redis: a batch commits every `sub_batch_size`
rows (one transaction each, seen in the rows' `xmin`) in key and in physical order, is
counted once in `batches` (the guard is off: it would halve batches on a busy machine),
and a transient failure in the middle of a batch retries only
the sub-batch that failed: every row changed once, counters exact.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from backfills.definition import Backfill
from backfills.engine import SliceOutcome
from backfills.order import block_parts
from backfills.runs import RunOptions, RunStore
from tests.support.engine_helpers import execute, new_run, registry_of, scalar


def _things(engine: sa.Engine, n: int) -> tuple[str, Backfill]:
    table = f"sb_{uuid.uuid4().hex[:12]}"
    execute(engine, f"CREATE TABLE {table} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), n int NOT NULL, "
                    f"x int, visits int NOT NULL DEFAULT 0)",
            f"INSERT INTO {table} (n) SELECT g FROM generate_series(1, {n}) g")
    definition = Backfill(name=table, table=table, description="test", needs="t.x IS NULL",
                          sets={"x": "t.n", "visits": "t.visits + 1"})
    return table, definition


def _run_to_end(engine: sa.Engine, client: Any, namespace: str, definition: Backfill, options: RunOptions) -> str:
    from backfills.control import RunControl
    from backfills.engine import SliceRunner
    from backfills.retry import RetryPolicy
    kwargs: dict[str, Any] = {}
    if options.order == "physical":
        blocks = scalar(engine, f"SELECT pg_relation_size('{definition.table}') / current_setting('block_size')::int")
        kwargs = {"parts": block_parts(blocks, 1), "order": "physical", "order_reason": "test"}
    run_id = new_run(engine, definition.name, options, **kwargs).id
    runner = SliceRunner(engine, lambda r: RunControl(client, namespace, r), registry_of(definition),
                         lease_seconds=30, slice_seconds=600, retry=RetryPolicy())
    for _ in range(100):
        if runner.run_slice(run_id, 0) is not SliceOutcome.CONTINUE:
            return run_id
    raise AssertionError("run did not end")


@pytest.mark.parametrize("order", ["key", "physical"])
def test_a_batch_commits_every_sub_batch_size_rows_and_counts_once(
        engine: sa.Engine, redis_client: Any, namespace: str, order: str) -> None:
    table, definition = _things(engine, 6000)
    run_id = _run_to_end(engine, redis_client, namespace, definition,
                         RunOptions(batch_size=3000, sub_batch_size=1000, sleep=0, order=order, max_latency_ratio=0))
    run = RunStore(engine).get(run_id)
    assert run.state == "succeeded", run.last_error
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE visits <> 1 OR x IS DISTINCT FROM n") == 0
    transactions = scalar(engine, f"SELECT count(DISTINCT xmin::text) FROM {table}")
    largest = scalar(engine, f"SELECT max(c) FROM (SELECT count(*) AS c FROM {table} GROUP BY xmin::text) s")
    assert run.rows_processed == 6000
    if order == "key":  # exact sizes: 6 transactions of 1000 rows in 2 batches
        assert (transactions, largest, run.batches) == (6, 1000, 2)
    else:  # block ranges sized from the measured rows per block: about 1000 rows each
        assert 5 <= transactions <= 12 and largest <= 1600, (transactions, largest)


def test_a_sub_batch_as_large_as_the_batch_is_one_transaction_per_batch(
        engine: sa.Engine, redis_client: Any, namespace: str) -> None:
    table, definition = _things(engine, 3000)
    run_id = _run_to_end(engine, redis_client, namespace, definition,
                         RunOptions(batch_size=1500, sub_batch_size=1500, sleep=0, order="key", max_latency_ratio=0))
    assert RunStore(engine).get(run_id).batches == 2
    assert scalar(engine, f"SELECT count(DISTINCT xmin::text) FROM {table}") == 2


def test_a_transient_failure_inside_a_batch_retries_only_its_sub_batch(
        engine: sa.Engine, redis_client: Any, namespace: str) -> None:
    table, definition = _things(engine, 5000)
    # the sub-batch holding row n = 2500 fails once with a serialization failure (a sequence is
    # not rolled back, so the second attempt passes)
    execute(engine, f"CREATE SEQUENCE {table}_once",
            f"""CREATE FUNCTION {table}_fail() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.n = 2500 AND nextval('{table}_once') = 1 THEN
                    RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001';
                END IF;
                RETURN NEW;
            END $$""",
            f"CREATE TRIGGER fail_once BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_fail()")
    run_id = _run_to_end(engine, redis_client, namespace, definition,
                         RunOptions(batch_size=5000, sub_batch_size=1000, sleep=0, order="key", max_latency_ratio=0))
    run = RunStore(engine).get(run_id)
    assert run.state == "succeeded", run.last_error
    assert scalar(engine, f"SELECT nextval('{table}_once')") == 3  # failed once, passed once
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE visits <> 1 OR x IS DISTINCT FROM n") == 0
    assert (run.rows_processed, run.batches, run.row_errors) == (5000, 1, 0)
    assert scalar(engine, f"SELECT count(DISTINCT xmin::text) FROM {table}") == 5
