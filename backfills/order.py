"""How a run's batches walk the table (`--order auto|key|physical`): the decision and
the block arithmetic of physical order. Pure, except `read_order_readings`.

`key`: keyset batches in key order. `physical`: batches are ranges of heap blocks (TID
range scans, PostgreSQL 14+), so each block is visited once per pass. `auto` picks
`physical` when the leading key column's order is unrelated to the heap's order (its
correlation with the physical order is weak) and the table is a plain heap table on
PostgreSQL 14+; else `key`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import sqlalchemy as sa

from backfills.definition import Backfill
from backfills.options import ORDERS

__all__ = ["ORDERS", "CORRELATION_THRESHOLD", "CLOSING_PASS_LIMIT", "OrderReadings", "OrderChoice",
           "OrderUnavailable", "choose_order", "block_parts", "block_ranges", "next_block_count", "PassDecision",
           "closing_decision", "read_order_readings"]

CORRELATION_THRESHOLD = 0.5
MIN_SERVER_VERSION = 140000
CLOSING_PASS_LIMIT = 5
_SAMPLE_ROWS = 10_000


class OrderUnavailable(ValueError):
    """`--order physical` asked for on a table where it cannot work."""


@dataclass(frozen=True)
class OrderReadings:
    """What the order decision needs to know of a table and its server.

    `correlation`: of the leading key column with the heap order, from `pg_stats` or,
    without statistics, measured on a sample; None when neither is known."""

    server_version: int
    relkind: str
    access_method: str | None
    correlation: float | None
    from_sample: bool = False


@dataclass(frozen=True)
class OrderChoice:
    """The order a run uses and why (one sentence)."""

    order: str
    reason: str


def _unavailable(readings: OrderReadings) -> str | None:
    """Why physical order cannot work on this table, or None."""
    if readings.server_version < MIN_SERVER_VERSION:
        return "physical order needs PostgreSQL 14 or later (TID range scans)"
    if readings.relkind == "p":
        return "physical order needs a plain table; this is a partitioned table's parent"
    if readings.relkind != "r":
        return "physical order needs a plain table"
    if readings.access_method != "heap":
        return f"physical order needs the heap access method, not {readings.access_method}"
    return None


def choose_order(asked: str, readings: OrderReadings) -> OrderChoice:
    """The order for a run: `asked` (auto, key or physical) decided against `readings`.
    Raises `OrderUnavailable` when `physical` is asked for where it cannot work."""
    if asked not in ORDERS:
        raise ValueError(f"--order must be one of {', '.join(ORDERS)}, got {asked!r}")
    blocker = _unavailable(readings)
    if asked == "key":
        return OrderChoice("key", "key order was asked for (--order key)")
    if asked == "physical":
        if blocker is not None:
            raise OrderUnavailable(f"--order physical cannot be used here: {blocker}")
        return OrderChoice("physical", "physical order was asked for (--order physical)")
    if blocker is not None:
        return OrderChoice("key", f"key order: {blocker}")
    corr = readings.correlation
    source = "a sample" if readings.from_sample else "pg_stats"
    if corr is None:
        return OrderChoice("key", "key order: the key's correlation with the heap order is unknown")
    if abs(corr) < CORRELATION_THRESHOLD:
        return OrderChoice("physical", f"physical order: the key's order is unrelated to the heap order "
                                       f"(correlation {corr:.2f} from {source})")
    return OrderChoice("key", f"key order: the key follows the heap order (correlation {corr:.2f} from {source})")


def block_ranges(blocks: int, parts: int) -> list[tuple[int, int | None]]:
    """`parts` contiguous block ranges [lo, hi) over a relation of `blocks` blocks; the
    last is open-ended (None), so blocks added during the run belong to it."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    edges = sorted({blocks * i // parts for i in range(1, parts)} - {0})
    lows = [0, *edges]
    return [(lo, hi) for lo, hi in zip(lows, [*edges, None])]


def block_parts(blocks: int, parts: int) -> list[tuple[list[str] | None, list[str] | None]]:
    """`block_ranges` as a run's part bounds for its first pass (JSON keys of one text; None
    for no lower bound). The first pass ends where the table ended at enqueue: the new row
    versions the run itself appends, and rows others add, are left to the closing passes,
    which read the table's end again as they go, so no part chases the run's own updates."""
    ranges = block_ranges(blocks, parts)
    return [([str(lo)] if lo else None, [str(blocks if hi is None else hi)]) for lo, hi in ranges]


MAX_ROWS_PER_BLOCK = 291  # MaxHeapTuplesPerPage for 8 kB blocks
EMPTY_STRETCH_LIMIT = 8  # a batch after empty ones spans at most this many times a batch's blocks at the table's density


def next_block_count(rows: int, rows_per_block: float | None, previous: int | None,
                     table_density: float | None = None) -> int:
    """Blocks for a batch of about `rows` rows at `rows_per_block` (measured by the batch
    before, or estimated); at most twice the previous batch's blocks, so a sparse stretch
    cannot make one batch of the dense stretch after it huge. With no density known (a
    table never analyzed), a block is taken to be as full as a heap block can be, so the
    first batch is small, never huge, and the measured density sizes the next ones.

    After a batch that found no row (`rows_per_block` None, `previous` set: dead versions
    left behind by updates, deleted rows), the next one spans twice the blocks, up to
    `EMPTY_STRETCH_LIMIT` times a batch's blocks at the table's density (`table_density`,
    the planner's; a full block when unknown): an empty stretch is crossed in a few
    batches, and a dense one right after it makes a batch of bounded size."""
    if rows_per_block is None and previous is not None:
        density = table_density if table_density and table_density > 0 else MAX_ROWS_PER_BLOCK
        return max(1, min(previous * 2, math.ceil(rows / density) * EMPTY_STRETCH_LIMIT))
    density = rows_per_block if rows_per_block and rows_per_block > 0 else MAX_ROWS_PER_BLOCK
    blocks = max(1, math.ceil(rows / density))
    if previous is not None:
        blocks = min(blocks, max(1, previous * 2))
    return blocks


class PassDecision(Enum):
    """What a physical run does when every part reached the end of its pass."""

    FINISH = "finish"          # the last pass found nothing to do
    AGAIN = "again"            # a closing pass: rows may have moved behind the cursors
    GIVE_UP = "give_up"        # the pass limit is reached with rows still found: report them


def closing_decision(found: int, closing_pass: int, limit: int = CLOSING_PASS_LIMIT) -> PassDecision:
    """After a pass that changed or failed `found` rows (`closing_pass` 0 is the first pass)."""
    if found == 0:
        return PassDecision.FINISH
    if closing_pass >= limit:
        return PassDecision.GIVE_UP
    return PassDecision.AGAIN


def read_order_readings(conn: sa.Connection, definition: Backfill, key: Sequence[str]) -> OrderReadings:
    """The table's kind, access method and the leading key column's correlation."""
    row = conn.execute(sa.text(
        "SELECT current_setting('server_version_num')::int AS version, c.relkind::text AS relkind, "
        "am.amname::text AS am, (SELECT s.correlation FROM pg_stats s WHERE s.schemaname = :schema "
        "AND s.tablename = :table AND s.attname = :column ORDER BY s.inherited LIMIT 1) AS correlation "
        "FROM pg_class c LEFT JOIN pg_am am ON am.oid = c.relam WHERE c.oid = to_regclass(:qualified)"
    ), {"schema": definition.schema, "table": definition.table, "column": key[0],
        "qualified": definition.qualified_table}).one()
    correlation, sampled = row.correlation, False
    if correlation is None and row.relkind == "r":
        correlation, sampled = _sample_correlation(conn, definition, key[0]), True
    return OrderReadings(int(row.version), str(row.relkind), row.am,
                         None if correlation is None else float(correlation), sampled)


def _sample_correlation(conn: sa.Connection, definition: Backfill, column: str) -> float | None:
    """Correlation of the key's rank with the block number over the first rows of the heap."""
    value = conn.execute(sa.text(
        f'SELECT corr(r, blk) FROM (SELECT row_number() OVER (ORDER BY "{column}") AS r, blk FROM '
        f'(SELECT "{column}", (ctid::text::point)[0] AS blk FROM {definition.qualified_table} '
        f"LIMIT {_SAMPLE_ROWS}) s) ranked"
    )).scalar()
    return None if value is None else float(value)
