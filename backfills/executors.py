"""Which executor runs a part of a run: keyset batches, block ranges (striped or not), or
the keys recorded as row errors (a retry run). Reads the key and, in physical order, the
table's indexed columns; everything else is decided from the run's durable record."""

from __future__ import annotations

import sqlalchemy as sa

from backfills.batch import BatchExecutor, read_key_columns
from backfills.block_batch import BlockExecutor
from backfills.definition import Backfill
from backfills.error_keys import ErrorKeysExecutor
from backfills.keyset import Scope
from backfills.runs import Progress, Run
from backfills.stripes import read_stripe_count

__all__ = ["executor_for", "block_bounds"]


def executor_for(engine: sa.Engine, run: Run, part: int, definition: Backfill) -> BatchExecutor:
    """The executor of `part` of `run`."""
    progress = run.parts[part]
    with engine.connect() as conn:
        key = read_key_columns(conn, definition)
        stripes = read_stripe_count(conn, definition) if run.order == "physical" else 1
    if run.parent_run_id is not None and definition.into is None:
        scope = Scope(tenant=run.tenant, parent_run=run.parent_run_id)
        return ErrorKeysExecutor(engine, definition, key, scope, run.id, part)
    if run.order == "physical":
        lower, upper = block_bounds(progress)
        return BlockExecutor(engine, definition, key, Scope(tenant=run.tenant), run.id, part, lower, upper, stripes)
    scope = Scope(tenant=run.tenant, parent_run=run.parent_run_id,
                  upper=tuple(progress.upper_key) if progress.upper_key else None)
    return BatchExecutor(engine, definition, key, scope, run.id, part)


def block_bounds(progress: Progress) -> tuple[int, int | None]:
    """The block range [lower, upper) of a physical part's current pass: its own range
    in the first pass, the whole table in a closing pass."""
    if progress.closing_pass > 0:
        return 0, None
    lower = int(progress.lower_key[0]) if progress.lower_key else 0
    return lower, int(progress.upper_key[0]) if progress.upper_key else None
