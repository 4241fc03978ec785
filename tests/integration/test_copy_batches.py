"""Copy backfills against a real PostgreSQL: the test-only `notes_copy` through the same
batch executor as the in-place backfills: rows the target refuses are isolated by
bisection and recorded by key, rows the application wrote to the target win, the
remaining count (`verify`) and `retry-errors` scope work unchanged."""

from __future__ import annotations

import sqlalchemy as sa

from backfills.batch import read_key_columns
from backfills.block_batch import BlockExecutor
from backfills.keyset import Scope
from backfills.operations import check, count_remaining
from backfills.order import block_parts
from backfills.registry import Registry
from backfills.runs import RunOptions, RunStore
from tests.support.copies import assert_copy_exact, blank_ids, create_notes, load_notes
from tests.support.engine_helpers import drain, execute, executor_for, new_run, rows, scalar

NOTES_COPY = Registry.discover(["tests.extra_definitions"]).get("notes_copy")


def _row_errors(engine: sa.Engine, run_id: str) -> dict[str, str]:
    return {r.key[0]: r.error for r in rows(
        engine, "SELECT key, error FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)", r=run_id)}


def test_a_copy_inserts_the_missing_rows_and_records_the_refused_ones_by_key(engine: sa.Engine) -> None:
    create_notes(engine)
    load_notes(engine, 3000, blank_every=97)
    refused = blank_ids(engine)
    assert len(refused) == 30
    assert count_remaining(engine, NOTES_COPY) == 3000
    run = new_run(engine, NOTES_COPY.name)

    results = list(drain(executor_for(engine, NOTES_COPY, run.id), 400))

    assert sum(r.changed for r in results) == 3000 - 30
    assert sum(r.rejected for r in results) == 30
    assert sum(r.scanned for r in results) == 3000
    assert any(r.split for r in results)
    errors = _row_errors(engine, run.id)
    assert set(errors) == refused
    assert all("notes_new_body_check" in e for e in errors.values()), errors
    assert_copy_exact(engine, {}, refused)
    assert count_remaining(engine, NOTES_COPY) == 30  # `verify` is not 0 while a row is not copied
    progress = rows(engine, "SELECT rows_processed, row_errors, rows_scanned FROM backfill.progress "
                            "WHERE run_id = CAST(:r AS uuid)", r=run.id)[0]
    assert tuple(progress) == (2970, 30, 3000)


def test_rows_the_application_wrote_to_the_target_win_and_are_not_counted(engine: sa.Engine) -> None:
    create_notes(engine)
    load_notes(engine, 500)
    execute(engine, "INSERT INTO notes_new SELECT id, tenant_id, 'the application''s ' || body, created_at "
                    "FROM notes_old ORDER BY id LIMIT 120")
    dual = {str(r.id): r.body for r in rows(engine, "SELECT id, body FROM notes_old ORDER BY id LIMIT 120")}
    run = new_run(engine, NOTES_COPY.name)

    results = list(drain(executor_for(engine, NOTES_COPY, run.id), 100))

    assert sum(r.changed for r in results) == 380
    assert scalar(engine, "SELECT count(*) FROM notes_new WHERE body LIKE 'the application''s %'") == 120
    # the application's 120 keep their own body; the other 380 are copies
    assert scalar(engine, "SELECT count(*) FROM notes_old o JOIN notes_new n USING (id) "
                          "WHERE n.body <> CASE WHEN o.id = ANY(CAST(:d AS uuid[])) "
                          "THEN 'the application''s ' || o.body ELSE btrim(o.body) END", d=sorted(dual)) == 0
    assert scalar(engine, "SELECT count(*) FROM notes_new") == 500
    assert count_remaining(engine, NOTES_COPY) == 0


def test_a_retry_of_the_errors_copies_only_the_repaired_rows(engine: sa.Engine) -> None:
    create_notes(engine)
    load_notes(engine, 400, blank_every=50)
    refused = blank_ids(engine)
    run = new_run(engine, NOTES_COPY.name)
    list(drain(executor_for(engine, NOTES_COPY, run.id), 100))
    store = RunStore(engine)
    store.transition(run.id, "running")
    store.transition(run.id, "completed_with_errors")
    execute(engine, "UPDATE notes_old SET body = 'repaired' WHERE btrim(body) = ''")
    retry = new_run(engine, NOTES_COPY.name, parent_run_id=run.id)

    results = list(drain(executor_for(engine, NOTES_COPY, retry.id, Scope(parent_run=run.id)), 100))

    assert sum(r.changed for r in results) == len(refused) == 8
    assert sum(r.scanned for r in results) == len(refused)
    assert scalar(engine, "SELECT count(*) FROM notes_new WHERE body = 'repaired'") == 8
    assert count_remaining(engine, NOTES_COPY) == 0


def test_check_reports_a_row_the_target_refuses_in_a_sample_batch_instead_of_failing(engine: sa.Engine) -> None:
    create_notes(engine)
    load_notes(engine, 2000, blank_every=7)
    registry = Registry({NOTES_COPY.name: NOTES_COPY})

    report = check(engine, registry, NOTES_COPY.name, RunOptions(batch_size=500))

    assert report.rows_to_do == 2000 and report.failing == []
    assert report.sample_error is not None and "notes_new_body_check" in report.sample_error
    assert report.plan and "Insert on notes_new" in "\n".join(report.plan)
    assert scalar(engine, "SELECT count(*) FROM notes_new") == 0  # nothing kept


def test_a_copy_in_physical_order_inserts_the_missing_rows_and_records_the_refused_ones(engine: sa.Engine) -> None:
    create_notes(engine)
    load_notes(engine, 3000, blank_every=97)
    refused = blank_ids(engine)
    blocks = scalar(engine, "SELECT pg_relation_size('notes_old') / current_setting('block_size')::int")
    run = new_run(engine, NOTES_COPY.name, RunOptions(batch_size=400, sleep=0, order="physical", max_latency_ratio=0),
                  parts=block_parts(blocks, 1), order="physical", order_reason="test")
    with engine.connect() as conn:
        key = read_key_columns(conn, NOTES_COPY)

    results = list(drain(BlockExecutor(engine, NOTES_COPY, key, Scope(), run.id, 0), 400))

    assert sum(r.changed for r in results) == 3000 - 30
    assert sum(r.rejected for r in results) == 30
    assert set(_row_errors(engine, run.id)) == refused
    assert_copy_exact(engine, {}, refused)
    assert count_remaining(engine, NOTES_COPY) == 30
