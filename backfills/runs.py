"""Durable run records in PostgreSQL: `backfill.runs`, `backfill.progress`, `backfill.row_errors`.

A *run* is one execution of a backfill definition: its state (see `backfills.states`),
its options, and one progress row per key range ("part") with the exact counters that
each batch updates in its own transaction. The live cursor checkpoint lives in Redis;
these records are what survives everything and what `status`, `wait` and `errors` read.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from backfills.options import RunOptions
from backfills.order import CLOSING_PASS_LIMIT, PassDecision, closing_decision
from backfills.queries import load_queries
from backfills.run_records import Key, Progress, RowError, Run
from backfills.states import ACTIVE, STATES, TERMINAL, InvalidTransition, RunState, check_transition

__all__ = ["ActiveRunExists", "Progress", "RowError", "Run", "RunNotFound", "RunOptions", "RunStore"]


_ONE_ACTIVE_INDEX = "runs_one_active_per_backfill"
_CREATE_ATTEMPTS = 3
_ACTIVE_STATES = sorted(ACTIVE)


class RunNotFound(Exception):
    """No run has that id (also raised for a malformed id)."""

    def __init__(self, run_id: object) -> None:
        self.run_id = str(run_id)
        super().__init__(f"no run with id {run_id}")


class ActiveRunExists(Exception):
    """The backfill already has a queued, running or paused run (exit 2)."""

    def __init__(self, backfill: str, run_id: str, state: str) -> None:
        self.backfill, self.run_id, self.state = backfill, run_id, state
        super().__init__(f"backfill {backfill} already has an active run {run_id} ({state}); "
                         f"wait for it, or cancel it with `backfill cancel {run_id}`")


def _uuid(value: object, error: Exception) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise error from None


def _run_id(value: object) -> str:
    """The canonical form of a run id; `RunNotFound` when it is not a UUID."""
    return _uuid(value, RunNotFound(value))


def _check_count(label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{label} must be zero or a positive whole number, got {value!r}")


def _key_json(label: str, key: Sequence[str] | None) -> str | None:
    """A key as a JSON array of text, or None (SQL NULL, not JSON null)."""
    if key is None:
        return None
    if isinstance(key, (str, bytes)) or not all(isinstance(v, str) for v in key):
        raise ValueError(f"{label} must be a list of strings, got {key!r}")
    return json.dumps(list(key))


def _part_params(parts: Sequence[tuple[Key | None, Key | None]]) -> list[dict[str, object]]:
    if not parts:
        raise ValueError("a run needs at least one part")
    return [{"part": i, "lower_key": _key_json("lower key", lo), "upper_key": _key_json("upper key", hi)}
            for i, (lo, hi) in enumerate(parts)]


def _constraint(exc: sa.exc.IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


def _check_states(states: Iterable[str]) -> frozenset[str]:
    result = frozenset(states)
    unknown = sorted(result - set(STATES))
    if unknown:
        raise ValueError(f"unknown run state(s) {', '.join(unknown)}; known states: {', '.join(STATES)}")
    return result


class RunStore:
    """Reads and writes run records. Every method is one short transaction of its own."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._sql = {name: sa.text(text) for name, text in load_queries("runs.sql").items()}

    # -- reading -----------------------------------------------------------------------
    def _runs(self, conn: sa.Connection, rows: Sequence[sa.RowMapping]) -> builtins.list[Run]:
        ids = [row["id"] for row in rows]
        parts: dict[str, builtins.list[Progress]] = {i: [] for i in ids}
        if ids:
            for prow in conn.execute(self._sql["get_parts"], {"ids": ids}).mappings():
                parts[prow["run_id"]].append(Progress.from_row(prow))
        return [Run.from_row(row, parts[row["id"]]) for row in rows]

    def _load(self, conn: sa.Connection, run_id: str) -> Run:
        row = conn.execute(self._sql["get_run"], {"id": run_id}).mappings().first()
        if row is None:
            raise RunNotFound(run_id)
        return self._runs(conn, [row])[0]

    def _require_run(self, conn: sa.Connection, run_id: str) -> None:
        if conn.execute(self._sql["run_exists"], {"id": run_id}).first() is None:
            raise RunNotFound(run_id)

    def get(self, run_id: str) -> Run:
        """The run with this id; `RunNotFound` when there is none or the id is malformed."""
        rid = _run_id(run_id)
        with self._engine.connect() as conn:
            return self._load(conn, rid)

    def active(self) -> builtins.list[Run]:
        """Queued, running and paused runs, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(self._sql["active_runs"], {"states": _ACTIVE_STATES}).mappings().all()
            return self._runs(conn, rows)

    def row_errors(self, run_id: str, limit: int | None = None) -> builtins.list[RowError]:
        """The run's failed rows ordered by key (JSON order: element by element, as text)."""
        rid = _run_id(run_id)
        if limit is not None:
            _check_count("limit", limit)
        with self._engine.connect() as conn:
            self._require_run(conn, rid)
            rows = conn.execute(self._sql["row_errors"], {"run_id": rid, "limit": limit}).mappings()
            return [RowError(key=r["key"], error=r["error"], created_at=r["created_at"]) for r in rows]

    def row_error_count(self, run_id: str) -> int:
        """How many rows of the run are recorded as failed."""
        rid = _run_id(run_id)
        with self._engine.connect() as conn:
            self._require_run(conn, rid)
            return int(conn.execute(self._sql["row_error_count"], {"run_id": rid}).scalar_one())

    # -- creating ----------------------------------------------------------------------
    def create(
        self,
        backfill: str,
        options: RunOptions,
        *,
        tenant: str | None = None,
        parent_run_id: str | None = None,
        rows_estimate: int | None = None,
        parts: Sequence[tuple[Key | None, Key | None]] = ((None, None),),
        order: str = "key",
        order_reason: str | None = None,
    ) -> Run:
        """Create a queued run with one progress row per `(lower_key, upper_key)` part.

        Raises `ActiveRunExists` naming the active run when the backfill already has one
        (the database's unique index decides, so concurrent creators cannot both win),
        `RunNotFound` for an unknown parent run, `ValueError` for bad arguments.
        """
        params = self._create_params(backfill, options, tenant, parent_run_id, rows_estimate)
        if order not in ("key", "physical"):
            raise ValueError(f"a run's order is key or physical, got {order!r}")
        params.update(order=order, order_reason=order_reason)
        part_rows = _part_params(parts)
        for _ in range(_CREATE_ATTEMPTS):
            try:
                return self._insert(params, part_rows)
            except sa.exc.IntegrityError as exc:
                if _constraint(exc) != _ONE_ACTIVE_INDEX:
                    raise
                existing = self._active_run_of(backfill)
                if existing is not None:
                    raise ActiveRunExists(backfill, *existing) from None
        raise RuntimeError(f"could not create a run of {backfill}: its active run kept changing; try again")

    @staticmethod
    def _create_params(backfill: str, options: RunOptions, tenant: str | None,
                       parent_run_id: str | None, rows_estimate: int | None) -> dict[str, object]:
        if not isinstance(backfill, str) or not backfill.strip():
            raise ValueError(f"backfill name must be a non-empty string, got {backfill!r}")
        if rows_estimate is not None:
            _check_count("rows_estimate", rows_estimate)
        options.validate()
        bad_tenant = ValueError(f"--tenant must be a UUID, got {tenant!r}")
        return {"backfill": backfill, "options": json.dumps(options.to_json()),
                "tenant": None if tenant is None else _uuid(tenant, bad_tenant),
                "parent_run_id": None if parent_run_id is None else _run_id(parent_run_id),
                "rows_estimate": rows_estimate}

    def _insert(self, params: dict[str, object], part_rows: Sequence[dict[str, object]]) -> Run:
        with self._engine.begin() as conn:
            parent = params["parent_run_id"]
            if parent is not None and conn.execute(self._sql["lock_parent"], {"id": parent}).first() is None:
                raise RunNotFound(parent)
            run_id = conn.execute(self._sql["create_run"], params).scalar_one()
            conn.execute(self._sql["create_part"], [dict(p, run_id=run_id) for p in part_rows])
            return self._load(conn, run_id)

    def _active_run_of(self, backfill: str) -> tuple[str, str] | None:
        with self._engine.connect() as conn:
            params = {"backfill": backfill, "states": _ACTIVE_STATES}
            row = conn.execute(self._sql["active_run_for_backfill"], params).first()
        return (row.id, row.state) if row is not None else None

    # -- changing ----------------------------------------------------------------------
    def _lock(self, conn: sa.Connection, run_id: str) -> str:
        state = conn.execute(self._sql["lock_run"], {"id": run_id}).scalar_one_or_none()
        if state is None:
            raise RunNotFound(run_id)
        return str(state)

    def transition(self, run_id: str, new_state: str, *, expected: Iterable[str] | None = None,
                   error: str | None = None) -> Run:
        """Move the run to `new_state` under a row lock and return it.

        `expected`: the states the caller believes the run is in; any other current state
        raises `InvalidTransition` (so e.g. two workers cannot both start a run). A run
        already in `new_state` is returned unchanged. Sets `started_at` on the first
        `running`, `finished_at` on a terminal state, and `last_error` when `error` is given.
        """
        rid = _run_id(run_id)
        _check_states([new_state])
        guard = None if expected is None else _check_states(expected)
        with self._engine.begin() as conn:
            current = self._lock(conn, rid)
            if guard is not None and current not in guard:
                raise InvalidTransition(current, new_state, rid, reason=(
                    f"run {rid} is {current}, not {' or '.join(sorted(guard))}; it cannot become {new_state}"))
            if current != new_state:
                check_transition(current, new_state, rid)
                conn.execute(self._sql["set_state"], {
                    "id": rid, "state": new_state, "starts": new_state == RunState.RUNNING,
                    "finishes": new_state in TERMINAL, "error": error})
            return self._load(conn, rid)

    def update_options(self, run_id: str, options: RunOptions) -> Run:
        """Replace the options of an active run (`backfill set`); `InvalidTransition` when it has ended."""
        rid = _run_id(run_id)
        options.validate()
        with self._engine.begin() as conn:
            current = self._lock(conn, rid)
            if current in TERMINAL:
                raise InvalidTransition(current, current, rid, reason=(
                    f"run {rid} is {current}; the options of a finished run cannot be changed"))
            conn.execute(self._sql["update_options"], {"id": rid, "options": json.dumps(options.to_json())})
            return self._load(conn, rid)

    def _update_part(self, query: str, run_id: str, part: int, **params: object) -> None:
        rid = _run_id(run_id)
        with self._engine.begin() as conn:
            if conn.execute(self._sql[query], {"run_id": rid, "part": part, **params}).first() is None:
                self._require_run(conn, rid)
                raise ValueError(f"run {rid} has no part {part}")

    def mark_part_done(self, run_id: str, part: int) -> None:
        """Record that a part reached its upper key."""
        self._update_part("mark_part_done", run_id, part)

    def close_pass(self, run_id: str, part: int, limit: int = CLOSING_PASS_LIMIT) -> PassDecision | None:
        """When every part of a physical run reached the end of its pass: decide, under the
        run's row lock, whether `part` makes a closing pass over the whole table (then it is
        reopened from block 0), or the run is finished, or the pass limit is reached. None
        while other parts are still going, or when the run is no longer running."""
        rid = _run_id(run_id)
        with self._engine.begin() as conn:
            if self._lock(conn, rid) != "running":
                return None
            parts = {r.part: r for r in conn.execute(self._sql["lock_parts"], {"run_id": rid})}
            if part not in parts:
                raise ValueError(f"run {rid} has no part {part}")
            if not all(r.done for r in parts.values()):
                return None
            mine = parts[part]
            found = (sum(r.found_total for r in parts.values()) if mine.closing_pass == 0
                     else mine.found_total - mine.pass_start_rows)
            decision = closing_decision(int(found), mine.closing_pass, limit)
            if decision is PassDecision.AGAIN:
                conn.execute(self._sql["reopen_part"], {"run_id": rid, "part": part})
            return decision

    def set_cursor(self, run_id: str, part: int, cursor: Key | None) -> None:
        """Overwrite a part's durable cursor (tests and repair only: batches move it themselves)."""
        self._update_part("set_cursor", run_id, part, cursor=_key_json("cursor", cursor))

    def create_scratch(self, conn: sa.Connection, run_id: str, backfill: str) -> None:
        """In the caller's transaction, which rolls it back: an ended run with one part,
        for sample batches to write their progress to (`check`)."""
        conn.execute(self._sql["create_scratch_run"], {"id": run_id, "backfill": backfill})
        conn.execute(self._sql["create_scratch_part"], {"id": run_id})

    def touch(self, run_id: str) -> None:
        """Heartbeat: set the run's `updated_at` to now."""
        rid = _run_id(run_id)
        with self._engine.begin() as conn:
            if conn.execute(self._sql["touch"], {"id": rid}).first() is None:
                raise RunNotFound(rid)

    def list(self, limit: int = 50) -> builtins.list[Run]:
        """The most recent runs, newest first."""
        _check_count("limit", limit)
        with self._engine.connect() as conn:
            rows = conn.execute(self._sql["list_runs"], {"limit": limit}).mappings().all()
            return self._runs(conn, rows)
