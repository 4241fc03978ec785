"""Splitting a run's key space into K contiguous ranges (`--partitions K`).

Boundaries come from the planner's histogram of the key column (`pg_stats`, filled by
ANALYZE from a sample), so choosing them reads no table and no index. Without a
histogram (a table never analyzed) they come from a walk of the primary-key index.
Part i covers (bound[i-1], bound[i]]; the first has no lower bound and the last no
upper bound, so keys inserted beyond the last boundary during the run are included.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from backfills.definition import Backfill
from backfills.keyset import KeyColumn

__all__ = ["choose_bounds", "part_ranges", "read_bounds"]

Key = list[str]


def choose_bounds(histogram: Sequence[str], parts: int) -> list[str]:
    """K-1 increasing boundaries, evenly spaced over the histogram's quantiles."""
    if parts <= 1 or len(histogram) < 2:
        return []
    picks = [histogram[round(i * (len(histogram) - 1) / parts)] for i in range(1, parts)]
    unique: list[str] = []
    for value in picks:
        if not unique or value != unique[-1]:
            unique.append(value)
    return unique


def part_ranges(bounds: Sequence[str]) -> list[tuple[Key | None, Key | None]]:
    """(lower, upper) key pairs for the parts that `bounds` delimit."""
    edges: list[str | None] = [None, *bounds, None]
    return [([lo] if lo is not None else None, [hi] if hi is not None else None)
            for lo, hi in zip(edges[:-1], edges[1:])]


def read_bounds(conn: sa.Connection, definition: Backfill, key: Sequence[KeyColumn], parts: int) -> list[str]:
    """Boundaries for `parts` ranges of a single-column key."""
    if parts <= 1:
        return []
    if len(key) != 1:
        raise ValueError(f"--partitions needs a single-column key; {definition.table} has "
                         f"({', '.join(k.name for k in key)})")
    column = key[0]
    histogram = conn.execute(sa.text(
        "SELECT histogram_bounds::text::text[] FROM pg_stats "
        "WHERE schemaname = :schema AND tablename = :table AND attname = :column"
    ), {"schema": definition.schema, "table": definition.table, "column": column.name}).scalar()
    if histogram and len(histogram) >= parts:
        return choose_bounds(list(histogram), parts)
    return _walk_index(conn, definition, column, parts)


def _walk_index(conn: sa.Connection, definition: Backfill, column: KeyColumn, parts: int) -> list[str]:
    """Quantiles from the key's index (an index-only scan), when there are no statistics."""
    total = conn.execute(sa.text(f"SELECT count(*) FROM {definition.qualified_table}")).scalar_one()
    if total < parts:
        return []
    bounds: list[str] = []
    for i in range(1, parts):
        value = conn.execute(sa.text(
            f'SELECT "{column.name}"::text FROM {definition.qualified_table} '
            f'ORDER BY "{column.name}" OFFSET :n LIMIT 1'), {"n": i * total // parts - 1}).scalar()
        if value is not None and (not bounds or value != bounds[-1]):
            bounds.append(value)
    return bounds
