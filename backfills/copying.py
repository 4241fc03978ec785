"""The copy action: the statement that inserts, into a copy backfill's target, the
source rows of one batch's range that the target lacks. Pure SQL builder, no IO.

It takes the range as a finished `FROM ... WHERE ...` over the source (alias `t`), so
it composes with any way of cutting batches. The source rows are read without row
locks: a row the application writes to the target meanwhile is skipped by the range's
`NOT EXISTS`, or, when it commits between that check and the insert, by
`ON CONFLICT (key) DO NOTHING`; either way the application's row wins. Any other
refusal (a constraint of the target, a bad value) fails the statement, and the batch
executor isolates the rows that caused it by bisection.
"""

from __future__ import annotations

from backfills.definition import Backfill

__all__ = ["insert_missing"]


def insert_missing(definition: Backfill, source_rows: str) -> str:
    """`INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING RETURNING 1` of the rows of
    `source_rows` (`FROM <source> t ... WHERE <range and needs>`) into the target, the
    target's columns computed from the source row as `s`."""
    into = definition.into
    if into is None:
        raise ValueError(f"backfill {definition.name} is not a copy")
    columns = ", ".join(f'"{c}"' for c in into.columns)
    values = ", ".join(into.columns.values())
    conflict = ", ".join(f'"{k}"' for k in definition.key)
    return (f"INSERT INTO {into.qualified_table} ({columns}) "
            f"SELECT {values} FROM (SELECT t.* {source_rows}) s "
            f"ON CONFLICT ({conflict}) DO NOTHING RETURNING 1")
