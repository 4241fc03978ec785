"""The batch executor of physical order: one block range of one run part per batch.

Like the keyset executor, a batch is one transaction with the run's timeouts and scope;
the number of blocks per batch follows the measured rows per block so that a batch
holds about the asked-for number of rows. The end of the part is the relation's size
read again before every batch (the table grows), or the part's fixed upper block. With
`stripes` above 1 (`backfills.stripes`), a range is changed in that many transactions,
one per stripe of its line pointers, so that the rows' new versions can stay on their
pages; the last stripe moves the cursor, the ones before it only the counters, so a
range cut short by a crash is done again from its first stripe (the rows done no longer
need the backfill). A batch that fails on data is bisected over the keys of its rows
(never their ctids): good rows commit, each bad row is recorded by its key, then the
cursor moves past the range.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from backfills.batch import BatchExecutor, BatchResult, LostRace, Timeouts, error_text, is_data_error
from backfills.bisect import isolate_failures
from backfills.blocks import BlockSql, build_blocks, tid
from backfills.definition import Backfill
from backfills.keyset import KeyColumn, Scope
from backfills.order import next_block_count

__all__ = ["BlockExecutor"]

Statement = tuple[sa.TextClause, dict[str, object]]


class BlockExecutor(BatchExecutor):
    """Runs physical-order batches over blocks [`lower`, `upper`) of one part (`upper`
    None: to the end of the relation, read again before each batch)."""

    def __init__(self, engine: sa.Engine, definition: Backfill, key: Sequence[KeyColumn], scope: Scope,
                 run_id: str, part: int, lower: int = 0, upper: int | None = None, stripes: int = 1) -> None:
        super().__init__(engine, definition, key, Scope(tenant=scope.tenant), run_id, part)
        if stripes < 1:
            raise ValueError(f"stripes must be at least 1, got {stripes}")
        self.stripes = stripes
        self.range_stripes = stripes  # this range's: more when its transactions must be smaller
        self.blocks: BlockSql = build_blocks(definition, tuple(key), scope.tenant)
        self.lower = lower
        self.upper = upper
        self.rows_per_block: float | None = None
        self.table_density: float | None = None  # the planner's, read before the first batch
        self.last_blocks: int | None = None
        self._range: tuple[int, int] = (lower, lower)
        self._probed: tuple[int, int] = (0, 0)  # the range's rows, and those that need the backfill
        self._carried: list[sa.Row[Any]] = []  # stripes committed before a failure, not yet reported

    def _start(self, cursor: list[str] | None) -> int:
        return int(cursor[0]) if cursor else self.lower

    def _params(self, cursor: list[str] | None, lo: int, hi: int) -> dict[str, object]:
        return {"run_id": self.run_id, "part": self.part, "tenant": self.scope.tenant,
                "expected": json.dumps(cursor) if cursor else None, "opens": 1,
                "lo_tid": tid(lo), "hi_tid": tid(hi), "hi": str(hi)}

    def end_block(self, conn: sa.Connection) -> int:
        """Where this part ends now."""
        if self.upper is not None:
            return self.upper
        return int(conn.execute(sa.text(self.blocks.relation_blocks())).scalar_one())

    def next_statement(self, conn: sa.Connection, cursor: list[str] | None, limit: int) -> Statement | None:
        """The statement for about `limit` rows from the cursor's block: the batch, or a pass
        over a range where the probe found no row to do (the closing passes, mostly); None at
        the end."""
        lo, end = self._start(cursor), self.end_block(conn)
        if lo >= end:
            return None
        if self.last_blocks is None:  # no batch measured yet: the planner's estimate
            self.rows_per_block = self.table_density = conn.execute(sa.text(self.blocks.density())).scalar()
        hi = min(end, lo + next_block_count(limit, self.rows_per_block, self.last_blocks, self.table_density))
        self._range = (lo, hi)
        params = self._params(cursor, lo, hi)
        scanned, needing = conn.execute(sa.text(self.blocks.probe()), params).one()
        self._probed = (int(scanned), int(needing))
        sql = self.blocks.batch() if needing else self.blocks.pass_over()
        return sa.text(sql), {**params, "scanned": int(scanned)}

    def commits_own_transactions(self, size: int, per_transaction: int) -> bool:
        """A striped executor takes a whole batch's range at once and commits it in stripes of
        at most `per_transaction` rows: `stripes` of them, or more for smaller transactions
        (the guard's 1,000-row sub-batches of a 10,000-row batch: ten stripes)."""
        if self.stripes == 1:
            return False
        self.range_stripes = max(self.stripes, math.ceil(size / max(1, per_transaction)))
        return True

    def run(self, cursor: list[str] | None, limit: int, timeouts: Timeouts, opens: bool = True) -> BatchResult:
        """The next block range after `cursor`, in one transaction or one per stripe. Stripes
        committed before a failure that is retried (a lock timeout, a lost connection) are
        added to the next result: the retry does the range again from its first stripe, where
        the rows already done no longer count, and the batch is counted once."""
        if self.stripes == 1:
            return super().run(cursor, limit, timeouts, opens)
        started = time.monotonic()
        done: list[sa.Row[Any]] = list(self._carried)
        opens = opens and not done
        try:
            for stripe in range(self.range_stripes):
                row, whole = self._run_stripe(cursor, limit, timeouts, stripe, opens and not done)
                if row is None:
                    return BatchResult(None, 0, 0, 0, time.monotonic() - started)
                done.append(row)
                if whole:
                    break
        except sa.exc.DBAPIError as exc:
            if not is_data_error(exc):
                self._carried = done
                raise
            self._carried = []
            split = self._bisect_range(cursor, timeouts, exc, started, opens and not done)
            return BatchResult(split.last_key, split.scanned, split.changed + sum(r.changed for r in done),
                               split.rejected + sum(r.rejected for r in done), split.seconds, split=True,
                               skipped=split.skipped + sum(r.skipped for r in done))
        self._carried = []
        self._committed(done[-1])
        return BatchResult(list(done[-1].last_key), done[-1].scanned, sum(r.changed for r in done),
                           sum(r.rejected for r in done), time.monotonic() - started,
                           skipped=sum(r.skipped for r in done))

    def _run_stripe(self, cursor: list[str] | None, limit: int, timeouts: Timeouts, stripe: int,
                    opens: bool) -> tuple[sa.Row[Any] | None, bool]:
        """One stripe in its own transaction, and whether the range is done with it. The first
        sizes and probes the range: none (no range left: None), or the whole range at once
        when at most one row in `range_stripes` needs the backfill (stripes would gain
        nothing there)."""
        with self.engine.begin() as conn:
            self.begin_batch(conn, timeouts)
            if stripe == 0:
                statement = self.next_statement(conn, cursor, limit)
                if statement is None:
                    return None, True
                scanned, needing = self._probed
                if needing * self.range_stripes <= scanned:
                    return self._fenced(conn, statement[0].text, {**statement[1], "opens": int(opens)}), True
            last = stripe == self.range_stripes - 1
            sql = self.blocks.batch(striped=True) if last else self.blocks.stripe()
            return self._fenced(conn, sql, {**self._params(cursor, *self._range), "opens": int(opens),
                                            "scanned": self._probed[0], "stripes": self.range_stripes,
                                            "stripe": stripe}), last

    def _learn(self, scanned: int) -> None:
        lo, hi = self._range
        self.last_blocks = hi - lo
        self.rows_per_block = scanned / self.last_blocks if scanned > 0 else None

    def _committed(self, row: sa.Row[Any]) -> None:
        self._learn(int(row.scanned))

    def _bisect(self, cursor: list[str] | None, limit: int, timeouts: Timeouts, error: BaseException,
                started: float) -> BatchResult:
        return self._bisect_range(cursor, timeouts, error, started, opens=True)

    def _fenced(self, conn: sa.Connection, sql: str, params: dict[str, object]) -> sa.Row[Any]:
        row = conn.execute(sa.text(sql), params).first()
        if row is None or ("fenced" in row._fields and row.fenced == 0):
            raise LostRace(f"run {self.run_id} part {self.part}: cursor moved by another worker")
        return row

    def _bisect_range(self, cursor: list[str] | None, timeouts: Timeouts, error: BaseException,
                      started: float, opens: bool) -> BatchResult:
        lo, hi = self._range
        params = {**self._params(cursor, lo, hi), "opens": int(opens)}
        with self.engine.begin() as conn:
            self.begin_batch(conn, timeouts)
            keys = [[str(v) for v in r] for r in conn.execute(sa.text(self.blocks.keys()), params)]
        totals = {"changed": 0, "rejected": 0, "skipped": 0}

        def attempt(chunk: Sequence[list[str]]) -> BaseException | None:
            row = self.try_chunk(self.blocks.chunk(), {**params, "chunk": json.dumps(list(chunk))}, timeouts)
            if isinstance(row, BaseException):
                return row
            totals["changed"] += row.changed
            totals["rejected"] += row.rejected
            totals["skipped"] += row.skipped
            return None

        def record(key: list[str], exc: BaseException) -> None:
            with self.engine.begin() as conn:
                self.begin_batch(conn, timeouts)
                row = self._fenced(conn, self.sql.record_row_error(), {
                    **params, "key": json.dumps(key), "cursor": params["expected"], "scanned": 0,
                    "error": error_text(exc)})
            totals["rejected"] += int(row.rejected)

        isolate_failures(keys, attempt, record, first_error=error)
        with self.engine.begin() as conn:
            self.begin_batch(conn, timeouts)
            scanned = int(conn.execute(sa.text(self.blocks.count()), params).scalar_one())
            self._fenced(conn, self.blocks.advance(), {**params, "scanned": scanned})
        self._learn(scanned)
        return BatchResult([str(hi)], scanned, totals["changed"], totals["rejected"],
                           time.monotonic() - started, split=True, skipped=totals["skipped"])
