"""A copy backfill through real worker processes, real PostgreSQL and real Redis: the
test-only `notes_copy` (notes_old -> notes_new) while the application keeps writing
(to both tables, and to the old one only), then crashes and duplicate deliveries.
Every test ends with the target compared with an independent computation from the
source and with the run's durable counters."""

from __future__ import annotations

import json
import random
import time

import sqlalchemy as sa

from core.settings import Settings
from tests.support.checks import (cli, counters, deliver_again, enqueue, expect_exit, table_rows, wait_for_batches,
                                  wait_run, wait_until)
from tests.support.copies import NoteWriter, assert_copy_exact, blank_ids, create_notes, load_notes

BATCH = ["--batch-size", "1000", "--sleep", "0.02", "--max-latency-ratio", "0"]  # not about the guard


def test_a_copy_while_the_application_writes_holds_every_source_row_once(settings: Settings, engine: sa.Engine,
                                                                          workers) -> None:
    create_notes(engine)
    load_notes(engine, 40_000, blank_every=2000)
    refused = blank_ids(engine)
    assert len(refused) == 20
    workers(concurrency=1)
    writer = NoteWriter(engine).start()
    try:
        first = enqueue(settings, "notes_copy", *BATCH)
        wait_for_batches(engine, first, 5)
        written_before = len(writer.dual) + len(writer.old_only)
        expect_exit(wait_run(settings, first), 3, "the first copy (its refused rows are row errors)")
        assert len(writer.dual) + len(writer.old_only) > written_before, "the application wrote during the copy"
    finally:
        writer.finish()
    assert writer.old_only and writer.dual
    late = table_rows(engine, "notes_old") - table_rows(engine, "notes_new") - len(refused)
    assert late > 0, "no row written by old code behind the copy's cursor: the second run proves nothing"
    verify = cli(settings, "verify", "notes_copy")
    expect_exit(verify, 1, "verify before the second run")
    assert int(verify.stdout) == late + len(refused)

    second = enqueue(settings, "notes_copy", *BATCH)
    expect_exit(wait_run(settings, second), 3, "the second copy, for the late rows")

    assert_copy_exact(engine, writer.dual, refused)
    one, two = counters(engine, first), counters(engine, second)
    copied = table_rows(engine, "notes_old") - len(refused) - len(writer.dual)
    assert one.rows_processed + two.rows_processed == copied, (one, two, copied)
    assert two.rows_processed == late and one.row_errors == two.row_errors == len(refused)
    assert int(cli(settings, "verify", "notes_copy").stdout) == len(refused)
    listed = {r["name"]: r for r in json.loads(cli(settings, "list", "--json").stdout)}
    assert listed["notes_copy"]["rows_remaining_estimate"] == len(refused)
    assert listed["ai_assistant_threads_copy"]["rows_remaining_estimate"] is None  # 003 dropped its source


def test_a_copy_survives_sigkill_restarts_and_duplicate_deliveries(settings: Settings, engine: sa.Engine,
                                                                  workers) -> None:
    rng = random.Random(20261130)
    rows = 60_000
    create_notes(engine)
    load_notes(engine, rows, blank_every=3000)
    refused = blank_ids(engine)
    worker = workers(concurrency=2)
    run_id = enqueue(settings, "notes_copy", *BATCH)
    for trial in range(2):
        before = counters(engine, run_id).batches
        wait_until(lambda before=before: counters(engine, run_id).batches > before + 2, 60, f"progress {trial}")
        time.sleep(rng.uniform(0.0, 0.8))
        assert counters(engine, run_id).state == "running", "the copy ended before the kill (make it bigger)"
        worker.kill_group()
        worker = workers(concurrency=2)
    deliver_again(settings, run_id, 4, 0.05)
    expect_exit(wait_run(settings, run_id, 120), 3, "the copy after two kills and duplicate deliveries")

    assert_copy_exact(engine, {}, refused)
    c = counters(engine, run_id)
    assert (c.rows_processed, c.row_errors, c.rows_scanned) == (rows - len(refused), len(refused), rows), c
