"""Batches of a retry run (`retry-errors`): driven by the keys a parent run recorded as
row errors, each chunk of keys looked up through the table's key index.

The cursor walks `backfill.row_errors` of the parent run in its own order (the stored
JSON keys, its primary-key index), so a chunk is one index range of the error table and
one index lookup per key in the target: the cost follows the number of recorded errors,
never the size of the table. A chunk that fails on data is bisected like a key batch
(the cursor moves chunk by chunk, each bad key recorded again).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa

from backfills.action import RangeSql, update_batch
from backfills.batch import BatchExecutor, Timeouts
from backfills.definition import Backfill
from backfills.keyset import KeyColumn, Scope, row_locking

__all__ = ["ErrorKeysExecutor", "next_error_keys", "error_keys_batch"]

Statement = tuple[sa.TextClause, dict[str, object]]


def next_error_keys() -> str:
    """The parent run's next `:limit` recorded keys after `:after` (NULL: from the start)."""
    return ("SELECT key FROM backfill.row_errors WHERE run_id = CAST(:parent_run AS uuid) "
            "AND (CAST(:after AS jsonb) IS NULL OR key > CAST(:after AS jsonb)) ORDER BY key LIMIT :limit")


def error_keys_batch(definition: Backfill, key: Sequence[KeyColumn], tenant: str | None) -> str:
    """The batch statement over the keys of `:chunk` (a JSON array of keys); the cursor
    becomes `:last`, the chunk's last key."""
    cols = [f't."{k.name}"' for k in key]
    casts = [f"CAST(e.key ->> {i} AS {k.type})" for i, k in enumerate(key)]
    lhs = cols[0] if len(cols) == 1 else "(" + ", ".join(cols) + ")"
    rows = f"{lhs} IN (SELECT {', '.join(casts)} FROM jsonb_array_elements(CAST(:chunk AS jsonb)) AS e(key))"
    scope = [] if tenant is None else [f't."{definition.tenant_column}" = CAST(:tenant AS uuid)']
    rng = RangeSql(bounds="SELECT CAST(:last AS jsonb) AS last, CAST(:scanned AS bigint) AS scanned",
                   rows=rows, cursor="b.last")
    return update_batch(definition, row_locking(definition, key), scope, rng)


class ErrorKeysExecutor(BatchExecutor):
    """Runs the batches of a retry run: chunks of its parent's recorded row-error keys."""

    def __init__(self, engine: sa.Engine, definition: Backfill, key: Sequence[KeyColumn], scope: Scope,
                 run_id: str, part: int) -> None:
        super().__init__(engine, definition, key, Scope(tenant=scope.tenant), run_id, part)
        self.parent_run = scope.parent_run
        self.statement = error_keys_batch(definition, tuple(key), scope.tenant)
        self._chunk: list[list[str]] = []

    def _keys(self, conn: sa.Connection, cursor: list[str] | None, limit: int) -> list[list[str]]:
        return [list(r) for r in conn.execute(sa.text(next_error_keys()), {
            "parent_run": self.parent_run, "after": json.dumps(cursor) if cursor else None, "limit": limit}).scalars()]

    def _chunk_params(self, cursor: list[str] | None, chunk: Sequence[list[str]]) -> dict[str, object]:
        return {"run_id": self.run_id, "part": self.part, "tenant": self.scope.tenant,
                "expected": json.dumps(cursor) if cursor else None, "chunk": json.dumps(list(chunk)),
                "last": json.dumps(chunk[-1]), "scanned": len(chunk), "opens": 1}

    def next_statement(self, conn: sa.Connection, cursor: list[str] | None, limit: int) -> Statement | None:
        """The batch statement for the next `limit` recorded keys; None when none is left."""
        self._chunk = self._keys(conn, cursor, limit)
        if not self._chunk:
            return None
        return sa.text(self.statement), self._chunk_params(cursor, self._chunk)

    def _keys_after(self, cursor: list[str] | None, limit: int, timeouts: Timeouts) -> list[list[str]]:
        return self._chunk  # the chunk that failed: bisected key by key

    def _chunk_statement(self, cursor: list[str] | None, chunk: Sequence[list[str]]) -> tuple[str, dict[str, object]]:
        return self.statement, self._chunk_params(cursor, chunk)
