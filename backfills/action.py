"""The action of a batch, apart from the range it acts on. Pure SQL builders, no IO.

A batch statement is a *range* (which rows: a key range, a block range, a chunk of keys)
and an *action* (what is done to the rows of the range that still need the backfill:
change them, record the ones that cannot be done, and advance the durable cursor and
exact counters in `backfill.progress`, fenced on the cursor the batch started from).
`RangeSql` describes a range; `update_batch` composes it with the update action, so
every range gets the same row locking, row-error recording, fencing and counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backfills.copying import insert_missing
from backfills.definition import Backfill
from backfills.locking import RowLocking

__all__ = ["RangeSql", "update_batch", "record_row_error", "key_json"]


@dataclass(frozen=True)
class RangeSql:
    """One batch's range.

    - `bounds`: a one-row SELECT (the CTE `bounds`, alias `b`) with a `scanned` column:
      rows the range visits, added to `rows_scanned`.
    - `rows`: the predicate over the target `t` (and `b`) that selects the range's rows;
      the action adds the scope and the definition's `needs`.
    - `cursor`: a jsonb expression over `b`, the part's cursor once the batch committed.
    """

    bounds: str
    rows: str
    cursor: str


def key_json(alias: str, key_columns: Sequence[str]) -> str:
    """A row's key as a JSON array of text: how keys and cursors are stored."""
    return "jsonb_build_array(" + ", ".join(f'{alias}."{c}"::text' for c in key_columns) + ")"


def _actions(definition: Backfill, locking: RowLocking, where: str) -> str:
    """The CTEs `changed`, `rejected` and `skipped` over the range's rows (`where`, with
    `bounds b` in scope). A column backfill locks its candidates with SKIP LOCKED and
    changes only those; a copy reads its source without row locks (the target decides
    what fails) and inserts the rows the target lacks."""
    d = definition
    if d.into is not None:
        return (f"changed AS ({insert_missing(d, f'FROM {d.qualified_table} t, bounds b WHERE {where}')}),\n"
                "rejected AS (SELECT 1 WHERE false),\nskipped AS (SELECT 1 WHERE false)")
    sets = ", ".join(f'"{col}" = {expr}' for col, expr in d.sets.items())
    return f"""{locking.locked(", bounds b", where)},
changed AS (
    UPDATE {d.qualified_table} t SET {sets} FROM bounds b
    WHERE {locking.among_valid_locked()} AND {where}
    RETURNING 1
),
{locking.rejected()},
{locking.skipped(", bounds b", where)}"""


def update_batch(definition: Backfill, locking: RowLocking, scope: Sequence[str], rng: RangeSql) -> str:
    """The batch statement: the definition's action over the rows of `rng` within `scope`
    that still need it (see `_actions`), then the fenced progress update. Its one result
    row has `last_key`, `scanned`, `changed`, `rejected`, `skipped` and `fenced` (0 when
    another worker moved the cursor: the whole statement then must be rolled back).
    `:opens` is 1 when the statement opens a batch (counted in `batches`), 0 for the
    later sub-batches of one."""
    where = " AND ".join([rng.rows, *scope, f"({definition.needs})"])
    return f"""WITH bounds AS ({rng.bounds}),
{_actions(definition, locking, where)},
progress AS (
    UPDATE backfill.progress p SET cursor = {rng.cursor},
        rows_processed = p.rows_processed + (SELECT count(*) FROM changed),
        rows_scanned = p.rows_scanned + b.scanned,
        row_errors = p.row_errors + (SELECT count(*) FROM rejected),
        rows_skipped = p.rows_skipped + (SELECT count(*) FROM skipped),
        batches = p.batches + CAST(:opens AS int), updated_at = now()
    FROM bounds b WHERE p.run_id = CAST(:run_id AS uuid) AND p.part = :part
        AND p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)
    RETURNING 1
)
SELECT {rng.cursor} AS last_key, b.scanned,
       (SELECT count(*) FROM changed) AS changed, (SELECT count(*) FROM rejected) AS rejected,
       (SELECT count(*) FROM skipped) AS skipped, (SELECT count(*) FROM progress) AS fenced
FROM bounds b"""


def record_row_error() -> str:
    """Record one failing key (isolated by bisection) and set the cursor to `:cursor`
    (past the key in key order; unchanged in block order), fenced on `:expected`."""
    return """WITH rejected AS (
    INSERT INTO backfill.row_errors (run_id, key, error)
    VALUES (CAST(:run_id AS uuid), CAST(:key AS jsonb), :error)
    ON CONFLICT (run_id, key) DO NOTHING RETURNING 1
)
UPDATE backfill.progress p SET cursor = CAST(:cursor AS jsonb),
    row_errors = p.row_errors + (SELECT count(*) FROM rejected),
    rows_scanned = p.rows_scanned + CAST(:scanned AS bigint), updated_at = now()
WHERE p.run_id = CAST(:run_id AS uuid) AND p.part = :part
    AND p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)
RETURNING (SELECT count(*) FROM rejected) AS rejected"""
