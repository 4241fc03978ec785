"""Pure SQL builders for the row locking of batches. No IO.

A batch never waits on a row lock another session holds, so it can never close a
deadlock cycle with the application: it locks the rows it is about to change with
`FOR NO KEY UPDATE SKIP LOCKED` and changes only those. The candidates it could not
lock are recorded by key in `backfill.skipped_rows` (and counted in the part's
`rows_skipped`) in the same transaction; `revisit()` looks them up again by key, in
chunks and with `SKIP LOCKED` too, before the part is finished.

The pieces here take the candidate rows as a `FROM` source and a predicate over the
target's alias `t`, so they apply to any batch range (a key range, a block range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RowLocking"]


@dataclass(frozen=True)
class RowLocking:
    """Locking pieces for one table and key.

    `key_names`: quoted key column names; `key_types`: their SQL types;
    `invalid_reason`: the definition's validity expression over `t`, if any.
    """

    table: str
    key_names: tuple[str, ...]
    key_types: tuple[str, ...]
    invalid_reason: str | None = None

    def _cols(self, alias: str) -> str:
        cols = [f"{alias}.{k}" for k in self.key_names]
        return cols[0] if len(cols) == 1 else "(" + ", ".join(cols) + ")"

    def key_json(self, alias: str) -> str:
        """The key of `alias` as a JSON array of text (the stored form of keys)."""
        return "jsonb_build_array(" + ", ".join(f"{alias}.{k}::text" for k in self.key_names) + ")"

    def same_row(self, alias: str = "t", locked: str = "l") -> str:
        """Join condition: `alias` is one of the locked rows."""
        return f"{self._cols(alias)} = {self._cols(locked)}"

    def _locked_keys(self, where: str = "") -> str:
        return f"SELECT {', '.join(f'l.{k}' for k in self.key_names)} FROM locked l{where}"

    def among_valid_locked(self, alias: str = "t") -> str:
        """`alias` is one of the locked rows that can be done (their validity was judged
        once, when they were locked: the lock keeps them as they were), as a hashed lookup
        of their keys. Never a join with `locked`: the planner guesses the CTE's size (one
        row when the statistics say the range is done) and a nested loop over it is
        quadratic in the batch size (100M comparisons, 20 s, at 10k rows). `IS TRUE` keeps
        the IN from being turned into such a join; it stays a hashed subplan."""
        return f"({self._cols(alias)} IN ({self._locked_keys(' WHERE l.invalid IS NULL')})) IS TRUE"

    def not_locked(self, alias: str = "t") -> str:
        """`alias` is not one of the locked rows (a hashed lookup, as `among_valid_locked`; keys
        are never NULL, so NOT IN means what it says)."""
        return f"{self._cols(alias)} NOT IN ({self._locked_keys()})"

    def locked(self, source: str, where: str) -> str:
        """CTE `locked`: the candidates (`FROM <table> t<source> WHERE <where>`) that could
        be locked at once, with why they cannot be done (if so). Their keys as JSON are built
        only for the rows that need them (`rejected`), not for every row of a batch."""
        invalid = f"({self.invalid_reason})" if self.invalid_reason else "CAST(NULL AS text)"
        cols = ", ".join(f"t.{k}" for k in self.key_names)
        return (f"locked AS (SELECT {cols}, {invalid} AS invalid "
                f"FROM {self.table} t{source} WHERE {where} FOR NO KEY UPDATE OF t SKIP LOCKED)")

    def skipped(self, source: str, where: str) -> str:
        """CTE `skipped`: the candidates that could not be locked, recorded by key."""
        return (f"skipped AS (INSERT INTO backfill.skipped_rows (run_id, part, key) "
                f"SELECT CAST(:run_id AS uuid), :part, {self.key_json('t')} FROM {self.table} t{source} "
                f"WHERE {where} AND {self.not_locked()} "
                f"ON CONFLICT (run_id, key) DO NOTHING RETURNING 1)")

    def rejected(self) -> str:
        """CTE `rejected`: the locked rows that cannot be done, recorded as row errors."""
        if not self.invalid_reason:
            return "rejected AS (SELECT 1 WHERE false)"
        return ("rejected AS (INSERT INTO backfill.row_errors (run_id, key, error) "
                f"SELECT CAST(:run_id AS uuid), {self.key_json('l')}, l.invalid FROM locked l "
                "WHERE l.invalid IS NOT NULL ON CONFLICT (run_id, key) DO NOTHING RETURNING 1)")

    def _pending_row(self) -> str:
        casts = [f"CAST(p.key ->> {i} AS {typ})" for i, typ in enumerate(self.key_types)]
        keys = casts[0] if len(casts) == 1 else "(" + ", ".join(casts) + ")"
        return f"{self._cols('t')} = {keys}"

    def revisit(self, needs: str, scope: Sequence[str], change: str) -> str:
        """One chunk of the skipped rows of a part (`:limit` keys after `:after`), looked up
        by key: change the ones that can be locked now (`change`, a data-modifying statement
        over the `locked l` rows that returns one row per row done), resolve the ones that
        no longer need it, and mark when the still-locked ones began to wait. `:expected`
        fences the part's cursor like a batch does."""
        where = " AND ".join([self._pending_row(), f"({needs})", *scope])
        return f"""WITH pending AS (
    SELECT s.key FROM backfill.skipped_rows s
    WHERE s.run_id = CAST(:run_id AS uuid) AND s.part = :part AND s.resolved_at IS NULL
        AND s.key > coalesce(CAST(:after AS jsonb), '[]'::jsonb)
    ORDER BY s.key LIMIT :limit
),
{self.locked(", pending p", where)},
changed AS ({change}),
{self.rejected()},
waiting AS (
    SELECT {self.key_json('t')} AS key FROM {self.table} t, pending p WHERE {where}
        AND {self.not_locked()}
),
resolved AS (
    UPDATE backfill.skipped_rows s SET resolved_at = now() FROM pending p
    WHERE s.run_id = CAST(:run_id AS uuid) AND s.key = p.key
        AND NOT EXISTS (SELECT 1 FROM waiting w WHERE w.key = p.key)
    RETURNING 1
),
held AS (
    UPDATE backfill.skipped_rows s SET retried_since = coalesce(s.retried_since, now()) FROM waiting w
    WHERE s.run_id = CAST(:run_id AS uuid) AND s.key = w.key
    RETURNING s.retried_since
),
progress AS (
    UPDATE backfill.progress p SET rows_processed = p.rows_processed + (SELECT count(*) FROM changed),
        row_errors = p.row_errors + (SELECT count(*) FROM rejected), updated_at = now()
    WHERE p.run_id = CAST(:run_id AS uuid) AND p.part = :part
        AND p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)
    RETURNING 1
)
SELECT (SELECT key FROM pending ORDER BY key DESC LIMIT 1) AS last_key, (SELECT count(*) FROM pending) AS looked_up,
       (SELECT count(*) FROM changed) AS changed, (SELECT count(*) FROM rejected) AS rejected,
       (SELECT count(*) FROM resolved) AS resolved, (SELECT count(*) FROM held) AS waiting,
       (SELECT extract(epoch FROM now() - min(retried_since)) FROM held) AS waited_seconds,
       (SELECT count(*) FROM progress) AS fenced"""
