"""Partitioned runs against real PostgreSQL and Redis: every key exactly once, keys
inserted past the last boundary during the run included, bounds read without a scan."""

from __future__ import annotations

import sqlalchemy as sa

from backfills.batch import read_key_columns
from backfills.engine import SliceOutcome
from backfills.partitions import part_ranges, read_bounds
from backfills.registry import Registry
from backfills.runs import RunOptions, RunStore
from tests.support.engine_helpers import slice_runner


def seed(engine: sa.Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (name) VALUES ('t')"))
        conn.execute(sa.text("INSERT INTO aois (tenant_id, name, status) SELECT (SELECT id FROM tenants), "
                             "'a' || g, NULL FROM generate_series(1, :n) g"), {"n": rows})
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE aois"))


def test_bounds_come_from_statistics_and_split_the_table_evenly(engine: sa.Engine) -> None:
    seed(engine, 20_000)
    definition = Registry.discover().get("aois_status")
    with engine.connect() as conn:
        bounds = read_bounds(conn, definition, read_key_columns(conn, definition), 4)
        sizes = [conn.execute(sa.text(
            "SELECT count(*) FROM aois WHERE (CAST(:lo AS uuid) IS NULL OR id > CAST(:lo AS uuid)) "
            "AND (CAST(:hi AS uuid) IS NULL OR id <= CAST(:hi AS uuid))"),
            {"lo": lo[0] if lo else None, "hi": hi[0] if hi else None}).scalar_one()
            for lo, hi in part_ranges(bounds)]
    assert len(bounds) == 3 and bounds == sorted(bounds)
    assert sum(sizes) == 20_000
    assert min(sizes) > 20_000 / 4 * 0.7


def test_a_partitioned_run_changes_every_row_once_including_rows_added_beyond_the_last_bound(
        engine: sa.Engine, redis_client, namespace: str) -> None:
    seed(engine, 12_000)
    definition = Registry.discover().get("aois_status")
    with engine.connect() as conn:
        bounds = read_bounds(conn, definition, read_key_columns(conn, definition), 3)
    store = RunStore(engine)
    run = store.create("aois_status", RunOptions(batch_size=500, sleep=0, partitions=3, max_latency_ratio=0),
                       parts=part_ranges(bounds))
    assert len(run.parts) == 3
    runner = slice_runner(engine, redis_client, namespace, slice_seconds=0.2)
    with engine.begin() as conn:   # rows whose keys sort after the last boundary, added as the run starts
        conn.execute(sa.text("INSERT INTO aois (id, tenant_id, name, status) SELECT "
                             "CAST('ffffffff-ffff-4fff-bfff-' || lpad(g::text, 12, '0') AS uuid), "
                             "(SELECT id FROM tenants), 'late' || g, NULL FROM generate_series(1, 50) g"))
    pending = {0, 1, 2}
    while pending:
        for part in sorted(pending):
            if runner.run_slice(run.id, part) is not SliceOutcome.CONTINUE:
                pending.discard(part)
    final = store.get(run.id)
    assert final.state == "succeeded"
    assert final.rows_processed == 12_050
    assert [p.rows_processed > 0 for p in final.parts] == [True, True, True]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM aois WHERE status IS NULL")).scalar_one() == 0


def test_the_second_part_to_start_does_not_trip_over_the_first_starting_the_run(
        engine: sa.Engine, redis_client, namespace: str) -> None:
    seed(engine, 2_000)
    store = RunStore(engine)
    middle = "80000000-0000-4000-8000-000000000000"
    run = store.create("aois_status", RunOptions(batch_size=500, sleep=0, partitions=2, max_latency_ratio=0),
                       parts=[(None, [middle]), ([middle], None)])
    # the guard off: each part must finish in one slice, and the guard may hold a run back on a busy test machine
    runner = slice_runner(engine, redis_client, namespace, slice_seconds=5)
    seen_while_queued = store.get(run.id)          # part 1's task loaded the run before part 0 started it
    assert runner.run_slice(run.id, 0) is SliceOutcome.DONE
    assert store.get(run.id).state == "running"
    real_get = runner.store.get
    calls = iter([seen_while_queued])
    runner.store.get = lambda run_id: next(calls, None) or real_get(run_id)  # type: ignore[method-assign]
    assert runner.run_slice(run.id, 1) is SliceOutcome.DONE
    final = store.get(run.id)
    assert final.state == "succeeded" and final.rows_processed == 2_000
