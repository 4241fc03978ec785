"""Physical-order batches (block ranges) against real PostgreSQL and Redis: the plan is a
TID Range Scan; every row is visited once per pass; bisection isolates exactly the bad
rows of a block range, recorded by key; rows that come to need the backfill behind the
cursor are caught by closing passes; past the pass limit the run says what is left;
partitions as block ranges, with slices of every part racing, change every row once.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from backfills.batch import read_key_columns
from backfills.block_batch import BlockExecutor
from backfills.definition import Backfill
from backfills.engine import SliceOutcome
from backfills.hooks import Hook, SliceContext, Stop
from backfills.keyset import Scope
from backfills.order import CLOSING_PASS_LIMIT, block_parts
from backfills.registry import Registry
from backfills.runs import RunOptions, RunStore
from backfills.stripes import HOT_STRIPES, read_indexed_columns, stripe_count
from tests.support.engine_helpers import TIMEOUTS, drain, execute, new_run, registry_of, rows, scalar

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def _things(engine: sa.Engine, n: int, bad: set[int] = frozenset(), fillfactor: int = 100) -> tuple[str, Backfill]:
    """A table of `n` rows with random UUID keys; rows numbered in `bad` make the change fail."""
    table = f"po_{uuid.uuid4().hex[:12]}"
    execute(engine, f"CREATE TABLE {table} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), n int NOT NULL, "
                    f"x int, visits int NOT NULL DEFAULT 0) WITH (fillfactor = {fillfactor})",
            f"INSERT INTO {table} (n) SELECT g FROM generate_series(1, {n}) g",
            f"UPDATE {table} SET n = -n WHERE n = ANY (CAST(:bad AS int[]))", bad=sorted(bad))
    definition = Backfill(name=table, table=table, description="test", needs="t.x IS NULL",
                          sets={"x": "100 / (t.n / abs(t.n) + 1)", "visits": "t.visits + 1"})
    return table, definition


def _runner(engine: sa.Engine, client: Any, namespace: str, registry: Registry, hooks: tuple[Hook, ...] = (),
            slice_seconds: float = 600) -> Any:
    from backfills.control import RunControl
    from backfills.engine import SliceRunner
    from backfills.retry import RetryPolicy
    return SliceRunner(engine, lambda run_id: RunControl(client, namespace, run_id), registry, lease_seconds=30,
                       slice_seconds=slice_seconds, retry=RetryPolicy(), extra_hooks=hooks)


def _physical_run(engine: sa.Engine, definition: Backfill, batch_size: int, partitions: int = 1) -> str:
    blocks = scalar(engine, f"SELECT pg_relation_size('{definition.table}') / current_setting('block_size')::int")
    parts = block_parts(blocks, partitions)
    return new_run(engine, definition.name, RunOptions(batch_size=batch_size, sleep=0, partitions=partitions,
                                                       order="physical", max_latency_ratio=0),
                   parts=parts, order="physical", order_reason="test").id


def _until_done(runner: Any, run_id: str, parts: int = 1) -> None:
    pending = set(range(parts))
    for _ in range(10_000):
        for part in sorted(pending):
            if runner.run_slice(run_id, part) is not SliceOutcome.CONTINUE:
                pending.discard(part)
        state = RunStore(runner.engine).get(run_id).state
        if state not in ("queued", "running"):
            return
        if not pending:  # a closing pass reopened a part that had handed back
            pending = {p.part for p in RunStore(runner.engine).get(run_id).parts if not p.done}
    raise AssertionError("run did not end")


# -- the plan ------------------------------------------------------------------------------

def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


def test_every_shipped_backfill_plans_its_physical_batch_as_a_tid_range_scan(engine: sa.Engine) -> None:
    from worker import sample_data

    sample_data.load(engine, sample_data.SampleSpec(aois=30_000, jobs=30_000))
    for definition in [d for d in Registry.discover() if d.into is None]:  # a copy walks its source by key
        run = RunStore(engine).create(definition.name, RunOptions(), order="physical")
        with engine.connect() as conn, conn.begin() as trans:
            key = read_key_columns(conn, definition)
            executor = BlockExecutor(engine, definition, key, Scope(), run.id, 0)
            executor.begin_batch(conn, TIMEOUTS)
            statement = executor.next_statement(conn, ["10"], 10_000)
            assert statement is not None
            plan = conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {statement[0].text}"), statement[1]).scalar_one()
            trans.rollback()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        scans = [n["Node Type"] for n in _nodes(plan[0]["Plan"])
                 if n.get("Relation Name") == definition.table and n["Node Type"] != "ModifyTable"]
        assert scans and set(scans) == {"Tid Range Scan"}, (definition.name, scans)
        RunStore(engine).transition(run.id, "cancelled")


# -- every row once, sized batches ---------------------------------------------------------

@pytest.mark.parametrize("stripes", [1, HOT_STRIPES])
def test_block_batches_visit_every_row_once_in_batches_of_about_the_batch_size(engine: sa.Engine,
                                                                               stripes: int) -> None:
    table, definition = _things(engine, 20_000)
    run_id = _physical_run(engine, definition, 1000)
    with engine.connect() as conn:
        key = read_key_columns(conn, definition)
    results = list(drain(BlockExecutor(engine, definition, key, Scope(), run_id, 0, stripes=stripes), 1000))
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE visits <> 1") == 0
    scanned = sum(r.scanned for r in results)  # and the new versions of rows done, read again at the end
    assert sum(r.changed for r in results) == 20_000 and 20_000 <= scanned <= 40_000
    sizes = [r.scanned for r in results[2:-2]]  # after the first, measured batches: about 1000 rows
    assert sizes and all(600 <= s <= 1600 for s in sizes), sizes
    progress = rows(engine, "SELECT rows_processed, rows_scanned, batches, cursor FROM backfill.progress "
                            "WHERE run_id = CAST(:r AS uuid)", r=run_id)[0]
    blocks = scalar(engine, f"SELECT pg_relation_size('{table}') / 8192")
    assert (progress.rows_processed, progress.rows_scanned) == (20_000, scanned)
    assert progress.batches == len(results) - 1 and progress.cursor == [str(blocks)]


# -- bisection -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_bisection_isolates_exactly_the_bad_rows_of_a_block_range(engine: sa.Engine, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(50, 1500)
    bad = set(rng.sample(range(1, n + 1), rng.randint(1, min(12, n))))
    table, definition = _things(engine, n, bad)
    run_id = _physical_run(engine, definition, rng.choice([7, 64, 500, 5000]))
    with engine.connect() as conn:
        key = read_key_columns(conn, definition)
    executor = BlockExecutor(engine, definition, key, Scope(), run_id, 0, stripes=[1, HOT_STRIPES][seed % 2])
    results = list(drain(executor, rng.choice([7, 64, 500])))
    errors = rows(engine, "SELECT key, error FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)", r=run_id)
    bad_ids = {r.id for r in rows(engine, f"SELECT id::text AS id FROM {table} WHERE n < 0")}
    assert {e.key[0] for e in errors} == bad_ids and len(errors) == len(bad)
    assert all("division by zero" in e.error for e in errors)
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE n > 0 AND (x IS NULL OR visits <> 1)") == 0
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE n < 0 AND x IS NOT NULL") == 0
    progress = rows(engine, "SELECT rows_processed, rows_scanned, row_errors FROM backfill.progress "
                            "WHERE run_id = CAST(:r AS uuid)", r=run_id)[0]
    assert (progress.rows_processed, progress.row_errors) == (n - len(bad), len(bad))
    assert progress.rows_scanned == sum(r.scanned for r in results) >= n
    assert any(r.split for r in results)


# -- stripes -------------------------------------------------------------------------------

def _striped_setup(engine: sa.Engine, n: int) -> tuple[str, Backfill, Any, str]:
    """A table of `n` rows, its definition and key, and a physical run of 1000-row batches."""
    table, definition = _things(engine, n)
    run_id = _physical_run(engine, definition, 1000)
    with engine.connect() as conn:
        return table, definition, read_key_columns(conn, definition), run_id


def test_a_range_cut_short_between_its_stripes_is_done_again_from_the_first_with_exact_counters(
        engine: sa.Engine) -> None:
    table, definition, key, run_id = _striped_setup(engine, 3000)
    cut = BlockExecutor(engine, definition, key, Scope(), run_id, 0, stripes=HOT_STRIPES)
    first, whole = cut._run_stripe(None, 1000, TIMEOUTS, 0, opens=True)  # then the worker dies
    assert first is not None and not whole and 0 < first.changed < 1000
    progress = rows(engine, "SELECT rows_processed, cursor FROM backfill.progress WHERE run_id = CAST(:r AS uuid)",
                    r=run_id)[0]
    assert (progress.rows_processed, progress.cursor) == (first.changed, None)  # counted; the range not passed
    again = list(drain(BlockExecutor(engine, definition, key, Scope(), run_id, 0, stripes=HOT_STRIPES), 1000))
    assert sum(r.changed for r in again) + first.changed == 3000
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE x IS NULL OR visits <> 1") == 0
    assert scalar(engine, "SELECT rows_processed FROM backfill.progress WHERE run_id = CAST(:r AS uuid)",
                  r=run_id) == 3000


class _FailsOnceInItsThirdStripe(BlockExecutor):
    """A connection lost in the third stripe of the first range, once."""

    failed = False

    def _run_stripe(self, cursor: list[str] | None, limit: int, timeouts: Any, stripe: int,
                    opens: bool) -> Any:
        if stripe == 2 and not self.failed:
            self.failed = True
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        return super()._run_stripe(cursor, limit, timeouts, stripe, opens)


def test_stripes_committed_before_a_retried_failure_are_reported_with_the_retry_and_counted_once(
        engine: sa.Engine) -> None:
    table, definition, key, run_id = _striped_setup(engine, 3000)
    executor = _FailsOnceInItsThirdStripe(engine, definition, key, Scope(), run_id, 0, stripes=HOT_STRIPES)
    with pytest.raises(sa.exc.OperationalError):
        executor.run(None, 1000, TIMEOUTS)
    done_before = scalar(engine, "SELECT rows_processed FROM backfill.progress WHERE run_id = CAST(:r AS uuid)",
                         r=run_id)
    assert done_before > 0  # two stripes committed
    results = list(drain(executor, 1000))  # the retry, then the rest
    assert sum(r.changed for r in results) == 3000  # what the first attempt committed is reported too
    progress = rows(engine, "SELECT rows_processed, batches FROM backfill.progress WHERE run_id = CAST(:r AS uuid)",
                    r=run_id)[0]
    assert progress.rows_processed == 3000 and progress.batches == len(results) - 1  # the range counted once
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE x IS NULL OR visits <> 1") == 0


def test_updates_of_striped_ranges_mostly_stay_on_their_pages(engine: sa.Engine) -> None:
    table, definition = _things(engine, 20_000)
    pages = scalar(engine, f"SELECT pg_relation_size('{table}') / 8192")
    run_id = _physical_run(engine, definition, 2000)
    with engine.connect() as conn:
        key = read_key_columns(conn, definition)
    list(drain(BlockExecutor(engine, definition, key, Scope(), run_id, 0, stripes=HOT_STRIPES), 2000))
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE x IS NULL OR visits <> 1") == 0
    # in one transaction per range every row would move: the table would double
    assert scalar(engine, f"SELECT pg_relation_size('{table}') / 8192") < 1.6 * pages


def test_the_indexed_columns_include_expressions_and_predicates(engine: sa.Engine) -> None:
    table, definition = _things(engine, 10)
    assert stripe_count("update", definition.sets, read_indexed_columns_of(engine, definition)) == HOT_STRIPES
    execute(engine, f"CREATE INDEX ON {table} ((visits * 2))")
    assert read_indexed_columns_of(engine, definition) == {"id", "visits"}
    execute(engine, f"DROP INDEX {table}_expr_idx", f"CREATE INDEX ON {table} (n) WHERE x > 0")
    assert read_indexed_columns_of(engine, definition) == {"id", "n", "x"}
    assert stripe_count("update", definition.sets, read_indexed_columns_of(engine, definition)) == 1


def read_indexed_columns_of(engine: sa.Engine, definition: Backfill) -> set[str]:
    with engine.connect() as conn:
        return read_indexed_columns(conn, definition)


# -- closing passes ------------------------------------------------------------------------

class _ResetBehind(Hook):
    """After a batch, makes rows of block 0 (behind the cursor) need the backfill again:
    `times` times in all (the table's fillfactor keeps the new versions in block 0)."""

    def __init__(self, engine: sa.Engine, table: str, times: int) -> None:
        self.engine, self.table, self.times, self.reset = engine, table, times, 0

    def after_batch(self, ctx: SliceContext, result: Any) -> Stop | None:
        if self.times > 0 and ctx.cursor and int(ctx.cursor[0]) > 1:
            with self.engine.connect() as conn:  # room in block 0 for the new versions
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text(f"VACUUM {self.table}"))
            with self.engine.begin() as conn:
                changed = conn.execute(sa.text(
                    f"UPDATE {self.table} SET x = NULL WHERE ctid < '(1,0)'::tid AND x IS NOT NULL")).rowcount
            if changed:
                self.reset += changed
                self.times -= 1
        return None


def _run_resetting_behind(engine: sa.Engine, redis_client: Any, namespace: str, rows: int, batch_size: int,
                          times: int) -> tuple[str, _ResetBehind, Any]:
    """A physical run to its end over a half-full table whose first block's rows are made to
    need the backfill again behind the cursor, `times` times: (table, hook, the run)."""
    table, definition = _things(engine, rows, fillfactor=50)
    hook = _ResetBehind(engine, table, times=times)
    run_id = _physical_run(engine, definition, batch_size)
    _until_done(_runner(engine, redis_client, namespace, registry_of(definition), (hook,)), run_id)
    return table, hook, RunStore(engine).get(run_id)


def test_rows_that_need_the_backfill_behind_the_cursor_are_caught_by_a_closing_pass(
        engine: sa.Engine, redis_client: Any, namespace: str) -> None:
    table, hook, run = _run_resetting_behind(engine, redis_client, namespace, 5000, 300, times=1)
    assert hook.reset > 0
    assert run.state == "succeeded", run.last_error
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE x IS NULL") == 0
    assert run.rows_processed == 5000 + hook.reset
    assert run.parts[0].closing_pass == 2  # one that found the reset rows, one that found nothing


def test_past_the_closing_pass_limit_the_run_reports_what_is_left(
        engine: sa.Engine, redis_client: Any, namespace: str) -> None:
    table, _, run = _run_resetting_behind(engine, redis_client, namespace, 3000, 200, times=10_000)
    left = scalar(engine, f"SELECT count(*) FROM {table} WHERE x IS NULL")
    assert run.state == "completed_with_errors" and run.row_errors == 0
    assert run.parts[0].closing_pass == CLOSING_PASS_LIMIT
    assert left > 0 and f"{left:,} rows still need the backfill after {CLOSING_PASS_LIMIT} closing passes" \
        in (run.last_error or "")


# -- partitions as block ranges ------------------------------------------------------------

def test_partitions_as_block_ranges_with_racing_slices_change_every_row_once(
        engine: sa.Engine, redis_client: Any, namespace: str) -> None:
    table, definition = _things(engine, 12_000)
    run_id = _physical_run(engine, definition, 400, partitions=3)
    execute(engine, f"INSERT INTO {table} (n) SELECT g FROM generate_series(1, 300) g")  # appended: the last part's
    runner = _runner(engine, redis_client, namespace, registry_of(definition), slice_seconds=0.05)
    errors: list[BaseException] = []

    def race(part: int) -> None:
        try:
            for _ in range(5000):
                outcome = runner.run_slice(run_id, part)
                if outcome is not SliceOutcome.CONTINUE and \
                        RunStore(engine).get(run_id).state not in ("queued", "running"):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(p,)) for p in (0, 1, 2, 0, 1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    run = RunStore(engine).get(run_id)
    assert run.state == "succeeded", (run.state, run.last_error)
    assert scalar(engine, f"SELECT count(*) FROM {table} WHERE visits <> 1") == 0
    assert run.rows_processed == 12_300


# -- where physical order cannot work ------------------------------------------------------

def test_physical_on_a_partitioned_parent_is_bad_input_and_auto_falls_back_to_key(engine: sa.Engine) -> None:
    from backfills.operations import BadInput, choose

    execute(engine, "CREATE TABLE parted (id int, m int, s text) PARTITION BY RANGE (m)",
            "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10)",
            "INSERT INTO parted SELECT g, g % 10 FROM generate_series(1, 100) g")
    definition = Backfill(name="parted_s", table="parted", description="d", needs="t.s IS NULL",
                          sets={"s": "'x'"}, key=("id",))
    with engine.connect() as conn:
        key = read_key_columns(conn, definition)
        with pytest.raises(BadInput, match="--order physical cannot be used here: physical order needs a plain "
                                           "table; this is a partitioned table's parent"):
            choose(conn, definition, key, RunOptions(order="physical"))
        auto = choose(conn, definition, key, RunOptions())
    assert auto.order == "key" and "partitioned table's parent" in auto.reason


def test_auto_reads_the_correlation_from_statistics_or_a_sample(engine: sa.Engine) -> None:
    from backfills.operations import choose

    table, definition = _things(engine, 5000)
    serial = Backfill(name="s", table=table, description="d", needs="t.x IS NULL", sets={"x": "1"}, key=("n",))
    with engine.connect() as conn:
        by_uuid = choose(conn, definition, read_key_columns(conn, definition), RunOptions())
        by_n = choose(conn, serial, read_key_columns(conn, serial), RunOptions())
    assert by_uuid.order == "physical" and "from a sample" in by_uuid.reason
    assert by_n.order == "key" and "from a sample" in by_n.reason
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text(f"ANALYZE {table}"))
        analyzed = choose(conn, definition, read_key_columns(conn, definition), RunOptions())
    assert analyzed.order == "physical" and "from pg_stats" in analyzed.reason
