"""The batch executor: runs one keyset batch of one run part against PostgreSQL.

A batch is one transaction with `SET LOCAL` lock and statement timeouts, an
`application_name` of `backfill:<name>` and the row-level-security settings of its
scope. A batch that fails on data is split by bisection until the bad rows are
isolated: good rows commit, each bad row is recorded with its reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from backfills.bisect import isolate_failures
from backfills.definition import Backfill
from backfills.keyset import BatchSql, KeyColumn, Scope, build, key_params
from core.errors import first_line

__all__ = ["BatchExecutor", "BatchResult", "RevisitResult", "LostRace", "count_remaining", "is_data_error",
           "read_key_columns"]

_DATA_ERROR_CLASSES = ("22", "23")
_DATA_ERROR_STATES = {"P0001"}


class LostRace(Exception):
    """The part's cursor moved under us: another worker holds this part now."""


@dataclass(frozen=True)
class BatchResult:
    """What one batch did. `last_key` None means the part has no keys left."""

    last_key: list[str] | None
    scanned: int
    changed: int
    rejected: int
    seconds: float
    split: bool = False
    skipped: int = 0

    @property
    def outcome(self) -> str:
        """`ok` or `split` (bisected around bad rows), for metrics."""
        return "split" if self.split else "ok"


def sqlstate(exc: BaseException) -> str | None:
    """SQLSTATE of a database error (wrapped by SQLAlchemy or not)."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None)


def is_data_error(exc: BaseException) -> bool:
    """A failure caused by the data of some row (bisect it), not by the system."""
    state = sqlstate(exc)
    return state is not None and (state[:2] in _DATA_ERROR_CLASSES or state in _DATA_ERROR_STATES)


def error_text(exc: BaseException) -> str:
    """First line of the database's message."""
    return first_line(exc)


def read_key_columns(conn: sa.Connection, definition: Backfill) -> tuple[KeyColumn, ...]:
    """The key columns with their types: the definition's, or the primary key's."""
    rows = conn.execute(sa.text("""
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), k.ord
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = to_regclass(:table) AND i.indisprimary ORDER BY k.ord
    """), {"table": definition.qualified_table}).all()
    types = {name: typ for name, typ, _ in rows}
    if definition.key:
        found = conn.execute(sa.text("""
            SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
            WHERE a.attrelid = to_regclass(:table) AND a.attnum > 0 AND NOT a.attisdropped
        """), {"table": definition.qualified_table}).all()
        types = dict(found)
        missing = [k for k in definition.key if k not in types]
        if missing:
            raise LookupError(f"{definition.table} has no column {', '.join(missing)}")
        return tuple(KeyColumn(k, types[k]) for k in definition.key)
    if not rows:
        raise LookupError(f"{definition.table} has no primary key; give the backfill an explicit key")
    return tuple(KeyColumn(name, typ) for name, typ, _ in rows)


def count_remaining(engine: sa.Engine, definition: Backfill, tenant: str | None = None) -> int:
    """Rows in scope that still need `definition` (never filtered by RLS: our sessions are system admin)."""
    sql = build(definition, (), Scope(tenant=tenant)).remaining()
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), {"tenant": tenant}).scalar_one())


@dataclass(frozen=True)
class Timeouts:
    """Per-batch limits, in seconds."""

    lock: float
    statement: float


@dataclass(frozen=True)
class RevisitResult:
    """One chunk of skipped rows looked up again. `last_key` None: no chunk was left."""

    last_key: list[str] | None
    looked_up: int
    changed: int
    rejected: int
    resolved: int
    waiting: int
    waited_seconds: float
    seconds: float


class BatchExecutor:
    """Runs batches of one part of one run."""

    def __init__(self, engine: sa.Engine, definition: Backfill, key: Sequence[KeyColumn],
                 scope: Scope, run_id: str, part: int) -> None:
        self.engine = engine
        self.definition = definition
        self.sql: BatchSql = build(definition, key, scope)
        self.scope = scope
        self.run_id = run_id
        self.part = part

    def commits_own_transactions(self, size: int, per_transaction: int) -> bool:
        """Whether one `run` of `size` rows commits in transactions of at most
        `per_transaction` rows by itself (a striped block range); False: the caller splits
        a batch into sub-batches, one `run` each."""
        return False

    def begin_batch(self, conn: sa.Connection, timeouts: Timeouts) -> None:
        """SET LOCAL the batch's timeouts, application_name and row-level-security scope, and
        JIT off: a batch is planned as the few thousand rows it is, but a definition whose
        `sets` or `invalid_reason` probe another table per row still costs above
        `jit_above_cost`, and compiling costs more than it saves on one batch. A batch commits
        without waiting for its WAL to reach the disk (`synchronous_commit` off): a server crash
        can undo the last fraction of a second of batches, but the rows, the cursor and the
        counters of a batch are one transaction and are undone together, so they are redone,
        never lost or counted twice; the run's own state changes commit durably, which flushes
        every batch before them. A batch left
        idle in its transaction (a stalled worker) is ended by the server after the statement
        timeout, which releases its row locks."""
        tenant = self.scope.tenant
        conn.execute(sa.text(
            "SELECT set_config('lock_timeout', :lt, true), set_config('statement_timeout', :st, true), "
            "set_config('idle_in_transaction_session_timeout', :st, true), set_config('jit', 'off', true), "
            "set_config('synchronous_commit', 'off', true), "
            "set_config('application_name', :app, true), set_config('app.is_system_admin', :admin, true), "
            "set_config('app.tenant_id', :tenant, true)"
        ), {"lt": f"{int(timeouts.lock * 1000)}ms", "st": f"{int(timeouts.statement * 1000)}ms",
            "app": f"backfill:{self.definition.name}", "admin": "false" if tenant else "true",
            "tenant": tenant or ""})

    def params(self, cursor: list[str] | None) -> dict[str, object]:
        """Bind parameters of the batch statements for a batch starting after `cursor`."""
        return {"run_id": self.run_id, "part": self.part, "tenant": self.scope.tenant,
                "parent_run": self.scope.parent_run, "expected": json.dumps(cursor) if cursor else None,
                "opens": 1, **key_params("c", cursor), **key_params("u", self.scope.upper)}

    def run(self, cursor: list[str] | None, limit: int, timeouts: Timeouts, opens: bool = True) -> BatchResult:
        """Run the next batch after `cursor` (or a later sub-batch of one, `opens` False: not
        counted in `batches` again); bisect around bad rows if it fails on data."""
        started = time.monotonic()
        try:
            with self.engine.begin() as conn:
                self.begin_batch(conn, timeouts)
                statement = self.next_statement(conn, cursor, limit)
                if statement is None:
                    return BatchResult(None, 0, 0, 0, time.monotonic() - started)
                sql, params = statement
                row = conn.execute(sql, {**params, "opens": int(opens)}).one()
                if row.fenced == 0:
                    raise LostRace(f"run {self.run_id} part {self.part}: cursor moved by another worker")
        except sa.exc.DBAPIError as exc:
            if not is_data_error(exc):
                raise
            return self._bisect(cursor, limit, timeouts, exc, started)
        self._committed(row)
        return BatchResult(list(row.last_key), row.scanned, row.changed, row.rejected, time.monotonic() - started,
                           skipped=row.skipped)

    def _committed(self, row: sa.Row[Any]) -> None:
        """Called with the result row of each batch that committed whole."""

    def revisit(self, cursor: list[str] | None, after: list[str] | None, limit: int,
                timeouts: Timeouts) -> RevisitResult:
        """Look up the next `limit` skipped rows after `after` by key and do the ones that
        can be locked now (the part's cursor, `cursor`, fences the transaction)."""
        started = time.monotonic()
        with self.engine.begin() as conn:
            self.begin_batch(conn, timeouts)
            row = conn.execute(sa.text(self.sql.revisit()), {
                **self.params(cursor), "after": json.dumps(after) if after else None, "limit": limit}).one()
            if row.fenced == 0:
                raise LostRace(f"run {self.run_id} part {self.part}: cursor moved by another worker")
        return RevisitResult(list(row.last_key) if row.last_key is not None else None, row.looked_up,
                             row.changed, row.rejected, row.resolved, row.waiting,
                             float(row.waited_seconds or 0.0), time.monotonic() - started)

    def next_statement(self, conn: sa.Connection, cursor: list[str] | None,
                       limit: int) -> tuple[sa.TextClause, dict[str, object]] | None:
        """The batch statement and its parameters for the `limit` keys after `cursor`,
        with the upper key found first; None when no key is left."""
        bound = conn.execute(sa.text(self.sql.bounds(cursor is not None)),
                             {**self.params(cursor), "limit": limit}).one_or_none()
        if bound is None:
            return None
        upper, scanned = [str(v) for v in bound[:-1]], int(bound[-1])
        return (sa.text(self.sql.batch(cursor is not None)),
                {**self.params(cursor), **key_params("h", upper), "scanned": scanned})

    def _keys_after(self, cursor: list[str] | None, limit: int, timeouts: Timeouts) -> list[list[str]]:
        with self.engine.begin() as conn:
            self.begin_batch(conn, timeouts)
            rows = conn.execute(sa.text(self.sql.keys(cursor is not None)),
                                {**self.params(cursor), "limit": limit}).all()
        return [[str(v) for v in row] for row in rows]

    def try_chunk(self, sql: str, params: dict[str, object], timeouts: Timeouts) -> sa.Row[Any] | BaseException:
        """One bisection step in a transaction of its own: the batch statement's result row,
        or the data error it failed with (rolled back). Fenced like a batch."""
        try:
            with self.engine.begin() as conn:
                self.begin_batch(conn, timeouts)
                row = conn.execute(sa.text(sql), params).one()
                if row.fenced == 0:
                    raise LostRace(f"run {self.run_id} part {self.part}: cursor moved by another worker")
                return row
        except sa.exc.DBAPIError as exc:
            if is_data_error(exc):
                return exc
            raise

    def _chunk_statement(self, cursor: list[str] | None, chunk: Sequence[list[str]]) -> tuple[str, dict[str, object]]:
        """The batch statement over the keys of `chunk` (in key order) after `cursor`."""
        return self.sql.batch(cursor is not None), {**self.params(cursor), **key_params("h", chunk[-1]),
                                                    "scanned": len(chunk)}

    def _bisect(self, cursor: list[str] | None, limit: int, timeouts: Timeouts,
                error: BaseException, started: float) -> BatchResult:
        keys = self._keys_after(cursor, limit, timeouts)
        totals = {"changed": 0, "rejected": 0, "scanned": 0, "skipped": 0}
        position = {"cursor": cursor}

        def attempt(chunk: Sequence[list[str]]) -> BaseException | None:
            row = self.try_chunk(*self._chunk_statement(position["cursor"], chunk), timeouts)
            if isinstance(row, BaseException):
                return row
            totals["changed"] += row.changed
            totals["rejected"] += row.rejected
            totals["skipped"] += row.skipped
            totals["scanned"] += len(chunk)
            position["cursor"] = chunk[-1]
            return None

        def record(key: list[str], exc: BaseException) -> None:
            with self.engine.begin() as conn:
                self.begin_batch(conn, timeouts)
                row = conn.execute(sa.text(self.sql.record_row_error()), {
                    "run_id": self.run_id, "part": self.part, "key": json.dumps(key), "cursor": json.dumps(key),
                    "scanned": 1, "error": error_text(exc),
                    "expected": json.dumps(position["cursor"]) if position["cursor"] else None,
                }).first()
                if row is None:
                    raise LostRace(f"run {self.run_id} part {self.part}: cursor moved by another worker")
            totals["rejected"] += int(row.rejected)
            totals["scanned"] += 1
            position["cursor"] = key

        isolate_failures(keys, attempt, record, first_error=error)
        return BatchResult(position["cursor"] if keys else None, totals["scanned"], totals["changed"],
                           totals["rejected"], time.monotonic() - started, split=True, skipped=totals["skipped"])
