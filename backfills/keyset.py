"""Pure SQL builders for keyset batches. No IO.

One batch is one transaction of two statements: `bounds()` finds the key `limit` keys
after the cursor (one index probe, the same cost at the start and at the end of the
table); `batch()` then changes the rows in that key range that still need the backfill,
records the rows that cannot be done, and advances the durable cursor and counters in
`backfill.progress`. A re-done batch is harmless: the `needs` predicate no longer matches.
The progress row is only advanced from the cursor the batch started at (`:expected`):
a worker that lost its lease cannot move a cursor another worker has moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backfills.copying import insert_missing
from backfills.action import RangeSql, key_json, record_row_error, update_batch
from backfills.definition import Backfill
from backfills.locking import RowLocking

__all__ = ["KeyColumn", "Scope", "BatchSql", "build", "key_params", "row_locking"]


@dataclass(frozen=True)
class KeyColumn:
    """A key column and its SQL type (as `format_type` prints it)."""

    name: str
    type: str


@dataclass(frozen=True)
class Scope:
    """Which rows a run may touch beyond `needs`: one tenant, or only the keys recorded
    as row errors of a parent run, and an inclusive upper key (a partition's end)."""

    tenant: str | None = None
    parent_run: str | None = None
    upper: tuple[str, ...] | None = None


def _q(name: str) -> str:
    return f'"{name}"'


def _tuple(exprs: Sequence[str]) -> str:
    return exprs[0] if len(exprs) == 1 else "(" + ", ".join(exprs) + ")"


def key_params(prefix: str, values: Sequence[str] | None) -> dict[str, str]:
    """Bind parameters `{prefix}0..n` for a key tuple."""
    return {f"{prefix}{i}": v for i, v in enumerate(values or ())}


@dataclass(frozen=True)
class BatchSql:
    """Statements for one definition, key and scope."""

    definition: Backfill
    key: tuple[KeyColumn, ...]
    scope: Scope

    # -- fragments -------------------------------------------------------------------
    def _cols(self, alias: str) -> list[str]:
        return [f"{alias}.{_q(k.name)}" for k in self.key]

    def _params(self, prefix: str) -> list[str]:
        return [f"CAST(:{prefix}{i} AS {k.type})" for i, k in enumerate(self.key)]

    def _after(self, alias: str) -> str:
        return f"{_tuple(self._cols(alias))} > {_tuple(self._params('c'))}"

    def _scope_filter(self, alias: str) -> list[str]:
        conds = []
        if self.scope.tenant is not None:
            assert self.definition.tenant_column is not None
            conds.append(f"{alias}.{_q(self.definition.tenant_column)} = CAST(:tenant AS uuid)")
        if self.scope.upper is not None:
            conds.append(f"{_tuple(self._cols(alias))} <= {_tuple(self._params('u'))}")
        if self.scope.parent_run is not None:
            conds.append(f"{_tuple(self._cols(alias))} IN (SELECT {', '.join(self._error_keys())} "
                         f"FROM backfill.row_errors e WHERE e.run_id = CAST(:parent_run AS uuid))")
        return conds

    def _error_keys(self) -> list[str]:
        return [f"CAST(e.key ->> {i} AS {k.type})" for i, k in enumerate(self.key)]

    def _key_json(self, alias: str) -> str:
        return key_json(alias, [k.name for k in self.key])

    def _keys_cte(self, with_cursor: bool) -> str:
        order = ", ".join(self._cols("t"))
        as_text = ", ".join(f"{c}::text" for c in self._cols("t"))
        return (f"SELECT {as_text} FROM {self.definition.qualified_table} t {self._where(with_cursor)} "
                f"ORDER BY {order} LIMIT :limit")

    def _key_range(self, with_cursor: bool) -> str:
        """The batch's key range as plain parameters (never read from the `bounds` CTE,
        which the planner cannot see into: it would plan a third of the table and pay JIT
        compilation for a batch of `:limit` rows)."""
        conds = [f"{_tuple(self._cols('t'))} <= {_tuple(self._params('h'))}"]
        if with_cursor:
            conds.insert(0, self._after("t"))
        return " AND ".join(conds)

    def _where(self, with_cursor: bool) -> str:
        conds = ([self._after("t")] if with_cursor else []) + self._scope_filter("t")
        return f"WHERE {' AND '.join(conds)}" if conds else ""

    def _probe(self, with_cursor: bool) -> str:
        """The `:limit`-th key after the cursor: one index walk, nothing materialized."""
        order = ", ".join(self._cols("t"))
        return (f"SELECT {order} FROM {self.definition.qualified_table} t {self._where(with_cursor)} "
                f"ORDER BY {order} OFFSET CAST(:limit AS bigint) - 1 LIMIT 1")

    def _bounds(self, with_cursor: bool) -> str:
        """The batch's last key and how many keys it spans: the probe when `:limit` keys are
        left, else the last key (a backward index step) and the count of what is left."""
        table, where = self.definition.qualified_table, self._where(with_cursor)
        desc = ", ".join(f"{c} DESC" for c in self._cols("t"))
        order = ", ".join(self._cols("t"))
        rest = f"SELECT count(*) FROM (SELECT 1 FROM {table} t {where} ORDER BY {order} LIMIT :limit) rest"
        return (f"SELECT probe.*, CAST(:limit AS bigint) AS scanned FROM probe UNION ALL "
                f"SELECT last.*, ({rest}) FROM "
                f"(SELECT {', '.join(self._cols('t'))} FROM {table} t {where} ORDER BY {desc} LIMIT 1) last "
                f"WHERE NOT EXISTS (SELECT 1 FROM probe)")

    # -- statements ------------------------------------------------------------------
    def keys(self, with_cursor: bool) -> str:
        """The next `:limit` keys after the cursor, in key order, as PostgreSQL prints them
        (the same text the batch statement stores as the cursor)."""
        return self._keys_cte(with_cursor)

    def bounds(self, with_cursor: bool) -> str:
        """The next batch's last key (as text, like the stored cursor) and how many keys it
        spans; no row when nothing is left after the cursor. Run first, so that the batch
        statement gets its upper key as a value: a plain key range that the planner always
        resolves with the key's index, whatever it guesses about the definition's filters."""
        cols = ", ".join(f'b.{_q(k.name)}::text' for k in self.key)
        return (f"WITH probe AS ({self._probe(with_cursor)}) "
                f"SELECT {cols}, b.scanned FROM ({self._bounds(with_cursor)}) b")

    @property
    def locking(self) -> RowLocking:
        """The row-locking pieces of this table's batch statements."""
        return row_locking(self.definition, self.key)

    def batch(self, with_cursor: bool) -> str:
        """The batch statement over the keys after the cursor up to `:h0..` (the upper key
        `bounds()` found, or a bisection chunk's last key); `:scanned` keys in all. Only the
        rows it can lock at once are changed; the others are recorded as skipped."""
        cols = [_q(k.name) for k in self.key]
        bounds = (f"SELECT {', '.join(f'{p} AS {c}' for p, c in zip(self._params('h'), cols))}, "
                  f"CAST(:scanned AS bigint) AS scanned")
        rng = RangeSql(bounds=bounds, rows=self._key_range(with_cursor), cursor=self._key_json("b"))
        return update_batch(self.definition, self.locking, self._scope_filter("t"), rng)

    def record_row_error(self) -> str:
        """Record one failing key (isolated by bisection) and move the cursor to it."""
        return record_row_error()

    def revisit(self) -> str:
        """One chunk of the part's skipped rows, looked up by key (see `RowLocking.revisit`)."""
        d, locking = self.definition, self.locking
        of_locked = f"{locking.same_row()} AND ({d.needs})"
        if d.into is not None:
            change = insert_missing(d, f"FROM {d.qualified_table} t, locked l WHERE {of_locked}")
        else:
            sets = ", ".join(f"{_q(col)} = {expr}" for col, expr in d.sets.items())
            valid = f" AND ({d.invalid_reason}) IS NULL" if d.invalid_reason else ""
            change = f"UPDATE {d.qualified_table} t SET {sets} FROM locked l WHERE {of_locked}{valid} RETURNING 1"
        return locking.revisit(d.needs, self._scope_filter("t"), change)

    def remaining(self) -> str:
        """Rows in scope that still need the backfill."""
        conds = [f"({self.definition.needs})"] + self._scope_filter("t")
        return f"SELECT count(*) FROM {self.definition.qualified_table} t WHERE {' AND '.join(conds)}"

    def invalid_summary(self) -> str | None:
        """Rows that will fail, grouped by reason (for `check`); None without a validity check."""
        d = self.definition
        if not d.invalid_reason:
            return None
        conds = [f"({d.needs})"] + self._scope_filter("t")
        return (f"SELECT reason, count(*) AS rows, min(key) AS example FROM ("
                f"SELECT ({d.invalid_reason}) AS reason, {self._key_json('t')}::text AS key "
                f"FROM {d.qualified_table} t WHERE {' AND '.join(conds)}) s "
                f"WHERE reason IS NOT NULL GROUP BY reason ORDER BY rows DESC")


def row_locking(definition: Backfill, key: Sequence[KeyColumn]) -> RowLocking:
    """The row-locking pieces of `definition`'s batch statements over `key`."""
    return RowLocking(definition.qualified_table, tuple(_q(k.name) for k in key), tuple(k.type for k in key),
                      definition.invalid_reason)


def build(definition: Backfill, key: Sequence[KeyColumn], scope: Scope = Scope()) -> BatchSql:
    """Statements for `definition` over `key` within `scope`."""
    if scope.tenant is not None and definition.tenant_column is None:
        raise ValueError(f"backfill {definition.name} cannot be scoped to a tenant")
    return BatchSql(definition, tuple(key), scope)
