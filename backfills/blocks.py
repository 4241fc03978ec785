"""Pure SQL builders for physical-order batches (block ranges). No IO.

A batch covers the heap blocks [`:lo`, `:hi`): `ctid >= '(lo,0)' AND ctid < '(hi,0)'`,
bound as parameters so that the planner resolves it with a TID Range Scan (PostgreSQL
14+) in every plan, generic or custom. The cursor is the next block to visit, stored
like a key (a JSON array of one text). A ctid never leaves its transaction: bisection
and row errors name rows by their key.
"""

from __future__ import annotations

from dataclasses import dataclass

from backfills.action import RangeSql, key_json, update_batch
from backfills.definition import Backfill
from backfills.keyset import KeyColumn, row_locking

__all__ = ["BlockSql", "build_blocks", "tid"]

_IN_RANGE = "{a}.ctid >= CAST(:lo_tid AS tid) AND {a}.ctid < CAST(:hi_tid AS tid)"
# one stripe of the range: the rows whose line pointer number is `:stripe` modulo `:stripes`
_IN_STRIPE = "((t.ctid::text::point)[1])::int % CAST(:stripes AS int) = CAST(:stripe AS int)"


def tid(block: int) -> str:
    """The first tuple id of `block`, as text."""
    return f"({block},0)"


@dataclass(frozen=True)
class BlockSql:
    """Statements of physical-order batches for one definition, key and tenant."""

    definition: Backfill
    key: tuple[KeyColumn, ...]
    tenant: str | None = None

    def _names(self) -> list[str]:
        return [k.name for k in self.key]

    def _scope(self, alias: str) -> list[str]:
        if self.tenant is None:
            return []
        assert self.definition.tenant_column is not None
        return [f'{alias}."{self.definition.tenant_column}" = CAST(:tenant AS uuid)']

    def _counted(self) -> str:
        """Rows of the block range in scope (visible to this transaction): `rows_scanned`,
        and the measured density that sizes the next batch."""
        where = " AND ".join([_IN_RANGE.format(a="s"), *self._scope("s")])
        return f"(SELECT count(*) FROM {self.definition.qualified_table} s WHERE {where})"

    def batch(self, striped: bool = False) -> str:
        """The batch statement over blocks [`:lo_tid`, `:hi_tid`) whose `probe` counted
        `:scanned` rows; the cursor becomes `:hi`. `striped`: only the range's last stripe
        (`:stripe` of `:stripes`, see `backfills.stripes`), which moves the cursor."""
        rows = _IN_RANGE.format(a="t") + (f" AND {_IN_STRIPE}" if striped else "")
        rng = RangeSql(bounds="SELECT CAST(:hi AS text) AS hi, CAST(:scanned AS bigint) AS scanned",
                       rows=rows, cursor="jsonb_build_array(b.hi)")
        return update_batch(self.definition, row_locking(self.definition, self.key), self._scope("t"), rng)

    def probe(self) -> str:
        """The range's rows in scope (`scanned`) and how many of them still need the
        backfill (`needing`): one read of the range, without row locks."""
        where = " AND ".join([_IN_RANGE.format(a="t"), *self._scope("t")])
        return (f"SELECT count(*) AS scanned, count(*) FILTER (WHERE {self.definition.needs}) AS needing "
                f"FROM {self.definition.qualified_table} t WHERE {where}")

    def pass_over(self) -> str:
        """A range where no row needs the backfill: the cursor to `:hi`, `:scanned` rows
        counted, nothing locked or written in the table; the result row of a batch."""
        return f"""WITH progress AS ({self.advance()})
SELECT jsonb_build_array(CAST(:hi AS text)) AS last_key, CAST(:scanned AS bigint) AS scanned, 0 AS changed,
       0 AS rejected, 0 AS skipped, (SELECT count(*) FROM progress) AS fenced"""

    def stripe(self) -> str:
        """One stripe of the block range before its last: its rows changed and counted, the
        cursor left where it is (the range is done when its last stripe commits)."""
        rng = RangeSql(bounds="SELECT CAST(0 AS bigint) AS scanned", rows=f"{_IN_RANGE.format(a='t')} AND {_IN_STRIPE}",
                       cursor="CAST(:expected AS jsonb)")
        return update_batch(self.definition, row_locking(self.definition, self.key), self._scope("t"), rng)

    def chunk(self) -> str:
        """A bisection step: the rows of the block range whose keys are in `:chunk` (a JSON
        array of keys). The cursor stays where it is until the whole range is done."""
        rows = (f"{_IN_RANGE.format(a='t')} AND {key_json('t', self._names())} "
                f"IN (SELECT jsonb_array_elements(CAST(:chunk AS jsonb)))")
        rng = RangeSql(bounds="SELECT CAST(0 AS bigint) AS scanned", rows=rows, cursor="CAST(:expected AS jsonb)")
        return update_batch(self.definition, row_locking(self.definition, self.key), self._scope("t"), rng)

    def keys(self) -> str:
        """Keys (as text) of the rows of the block range that still need the backfill."""
        cols = ", ".join(f't."{n}"::text' for n in self._names())
        where = " AND ".join([_IN_RANGE.format(a="t"), *self._scope("t"), f"({self.definition.needs})"])
        return f"SELECT {cols} FROM {self.definition.qualified_table} t WHERE {where} ORDER BY t.ctid"

    def count(self) -> str:
        """Rows of the block range in scope."""
        return f"SELECT {self._counted()}"

    def advance(self) -> str:
        """After a bisected range: the cursor to `:hi` and `:scanned` rows counted as scanned."""
        return """UPDATE backfill.progress p SET cursor = jsonb_build_array(CAST(:hi AS text)),
    rows_scanned = p.rows_scanned + CAST(:scanned AS bigint), batches = p.batches + CAST(:opens AS int),
    updated_at = now()
WHERE p.run_id = CAST(:run_id AS uuid) AND p.part = :part
    AND p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)
RETURNING 1"""

    def relation_blocks(self) -> str:
        """The relation's size in blocks now (never a stale `relpages`)."""
        return (f"SELECT pg_relation_size(CAST('{self.definition.qualified_table}' AS regclass)) "
                f"/ current_setting('block_size')::bigint")

    def density(self) -> str:
        """The planner's rows per block (`reltuples / relpages`), NULL when not known."""
        return (f"SELECT CASE WHEN relpages > 0 AND reltuples > 0 THEN reltuples / relpages END FROM pg_class "
                f"WHERE oid = CAST('{self.definition.qualified_table}' AS regclass)")


def build_blocks(definition: Backfill, key: tuple[KeyColumn, ...], tenant: str | None = None) -> BlockSql:
    """Physical-order statements for `definition` over `key`, for one tenant or all."""
    if tenant is not None and definition.tenant_column is None:
        raise ValueError(f"backfill {definition.name} cannot be scoped to a tenant")
    return BlockSql(definition, tuple(key), tenant)
