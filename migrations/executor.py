"""The executor: applies or reverts the steps the planner chose, one at a time.

- One session holds a PostgreSQL advisory lock for the whole command: two `migrate up`
  at once never double-apply; the second waits, then finds nothing to do.
- A transactional migration runs in one transaction together with its
  `schema_migrations` row. A `no-transaction` file runs statement by statement in
  autocommit; its row is written after its last statement.
- DDL runs under a short `lock_timeout` and is retried with capped exponential backoff,
  so it never sits in the lock queue with the application's queries queued behind it.
- An INVALID index left by a failed `CREATE INDEX CONCURRENTLY` is dropped before retrying.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from core.errors import first_line
from migrations.files import MigrationError, MigrationFile
from migrations.planner import Applied, pending, to_revert
from migrations.sqltext import split_statements

__all__ = ["BackfillGate", "BackfillRequired", "MigrationFailed", "MigrationRunner", "RunnerOptions"]

_ADVISORY_KEY = "backfill-worker:migrate"
_LOCK_POLL_SECONDS = 0.25
_RETRYABLE_SQLSTATES = {"55P03", "40P01"}  # lock_not_available, deadlock_detected
_CIC_RE = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?(\"?\w+\"?)"
    r"\s+ON\s+(?:ONLY\s+)?(\"?[\w]+\"?(?:\.\"?\w+\"?)?)",
    re.IGNORECASE,
)
_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL
)"""


class BackfillGate(Protocol):
    """Counts rows that still need a backfill (implemented by the backfill engine)."""

    def remaining(self, name: str) -> int:
        """Rows that still need backfill `name`; raises KeyError for an unknown name."""
        ...


class BackfillRequired(MigrationError):
    """A migration waits on a backfill that has rows left (exit 2)."""


class MigrationFailed(MigrationError):
    """A migration's SQL failed on the server (a runtime failure, exit 1)."""


@dataclass(frozen=True)
class RunnerOptions:
    """How DDL waits for locks."""

    lock_timeout: str = "2s"
    max_tries: int = 10
    backoff_max_seconds: float = 10.0


def _is_retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


@contextmanager
def _transaction(conn: sa.Connection) -> Iterator[None]:
    """A real transaction on a session kept in autocommit (so the advisory lock, taken at
    session level, and no-transaction files share one connection)."""
    conn.exec_driver_sql("BEGIN")
    try:
        yield
    except BaseException:
        conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")



class MigrationRunner:
    """Applies and reverts migrations on one database."""

    def __init__(
        self,
        engine: sa.Engine,
        files: Sequence[MigrationFile],
        *,
        gate: BackfillGate | None = None,
        options: RunnerOptions = RunnerOptions(),
        log: Callable[[str], None] = print,
    ) -> None:
        self.engine = engine
        self.files = list(files)
        self.gate = gate
        self.options = options
        self.log = log

    # -- reading ---------------------------------------------------------------------
    def applied(self) -> list[Applied]:
        """Rows of `schema_migrations` (empty when the table does not exist yet)."""
        with self.engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT to_regclass('public.schema_migrations')")).scalar()
            if exists is None:
                return []
            rows = conn.execute(sa.text(
                "SELECT version, name, checksum, applied_at, duration_ms FROM schema_migrations ORDER BY version"
            ))
            return [Applied(*row) for row in rows]

    def plan(self, target: str | None = None) -> list[MigrationFile]:
        """What `up` would apply now (no gate check: that needs the data at apply time)."""
        return pending(self.files, self.applied(), target)

    # -- applying --------------------------------------------------------------------
    def up(self, target: str | None = None) -> list[str]:
        """Apply pending migrations in order; stop (BackfillRequired) at an unmet gate."""
        done: list[str] = []
        with self._locked_session() as conn:
            for migration in pending(self.files, self._applied_on(conn), target):
                self._check_gate(migration)
                self._apply(conn, migration)
                done.append(migration.version)
        return done

    def down(self, version: str) -> list[str]:
        """Revert applied migrations of VERSION's track down to and including VERSION."""
        done: list[str] = []
        with self._locked_session() as conn:
            for migration in to_revert(self.files, self._applied_on(conn), version):
                self._revert(conn, migration)
                done.append(migration.version)
        return done

    # -- internals -------------------------------------------------------------------
    @contextmanager
    def _locked_session(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sa.text("SET statement_timeout = 0"))
            conn.execute(sa.text("SELECT set_config('lock_timeout', :t, false)"), {"t": self.options.lock_timeout})
            self._take_advisory_lock(conn)
            try:
                conn.execute(sa.text(_TABLE_DDL))
                yield conn
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": _ADVISORY_KEY})

    def _take_advisory_lock(self, conn: sa.Connection) -> None:
        """Poll for the lock: a statement left waiting would hold a snapshot that the other
        runner's CREATE INDEX CONCURRENTLY must wait for (a deadlock)."""
        try_lock = sa.text("SELECT pg_try_advisory_lock(hashtext(:k))")
        if conn.execute(try_lock, {"k": _ADVISORY_KEY}).scalar():
            return
        self.log("another migrate is running; waiting for it to finish")
        while not conn.execute(try_lock, {"k": _ADVISORY_KEY}).scalar():
            time.sleep(_LOCK_POLL_SECONDS)

    @staticmethod
    def _applied_on(conn: sa.Connection) -> list[Applied]:
        rows = conn.execute(sa.text(
            "SELECT version, name, checksum, applied_at, duration_ms FROM schema_migrations ORDER BY version"
        ))
        return [Applied(*row) for row in rows]

    def _check_gate(self, migration: MigrationFile) -> None:
        for name in migration.requires_backfill:
            if self.gate is None:
                raise BackfillRequired(f"{migration.filename} requires backfill {name}, but no backfill gate is configured")
            try:
                rows = self.gate.remaining(name)
            except KeyError:
                raise BackfillRequired(f"{migration.filename} requires backfill {name!r}, which is not registered") from None
            if rows > 0:
                raise BackfillRequired(
                    f"{migration.filename} requires backfill {name}: {rows} rows still need it "
                    f"(run `backfill enqueue {name}`, or see `backfill errors` for rows it could not change); "
                    f"nothing further was applied"
                )

    def _retrying(self, what: str) -> Retrying:
        def before_sleep(state: object) -> None:
            exc = state.outcome.exception()  # type: ignore[attr-defined]
            self.log(f"  {what}: {first_line(exc)}; retrying (attempt {state.attempt_number + 1}"  # type: ignore[attr-defined]
                     f" of {self.options.max_tries})")

        return Retrying(
            retry=retry_if_exception(_is_retryable),
            stop=stop_after_attempt(self.options.max_tries),
            wait=wait_random_exponential(multiplier=0.25, max=self.options.backoff_max_seconds),
            before_sleep=before_sleep,
            reraise=True,
        )

    def _apply(self, conn: sa.Connection, migration: MigrationFile) -> None:
        record = sa.text(
            "INSERT INTO schema_migrations (version, name, checksum, duration_ms) VALUES (:v, :n, :c, :d)"
        )
        self._step(conn, migration.filename, migration.filename, migration.sql, migration.transactional,
                   ("applying", "applied "), lambda started: conn.execute(record, self._record_args(migration, started)))

    def _revert(self, conn: sa.Connection, migration: MigrationFile) -> None:
        assert migration.down_sql is not None
        forget = sa.text("DELETE FROM schema_migrations WHERE version = :v")
        self._step(conn, migration.filename, f"down/{migration.filename}", migration.down_sql,
                   migration.down_transactional, ("reverting", "reverted "),
                   lambda _started: conn.execute(forget, {"v": migration.version}))

    def _step(self, conn: sa.Connection, filename: str, label: str, sql: str, transactional: bool,
              verbs: tuple[str, str], bookkeep: Callable[[float], object]) -> None:
        """Run one migration file's `sql` (retried when transactional), then `bookkeep`
        (given the start time) in the same transaction; log before and after."""
        started = time.monotonic()
        self.log(f"{verbs[0]} {filename}")
        try:
            if transactional:
                for attempt in self._retrying(label):
                    with attempt, _transaction(conn):
                        self._execute_all(conn, sql)
                        bookkeep(started)
            else:
                self._execute_autocommit(conn, sql, label)
                bookkeep(started)
        except sa.exc.DBAPIError as exc:
            raise MigrationFailed(f"{label} failed: {first_line(exc)}") from None
        self.log(f"{verbs[1]} {filename} ({(time.monotonic() - started) * 1000:.0f} ms)")

    @staticmethod
    def _record_args(migration: MigrationFile, started: float) -> dict[str, object]:
        return {"v": migration.version, "n": migration.name, "c": migration.checksum,
                "d": int((time.monotonic() - started) * 1000)}

    @staticmethod
    def _execute_all(conn: sa.Connection, sql: str) -> None:
        for statement in split_statements(sql):
            conn.exec_driver_sql(statement.text)

    def _execute_autocommit(self, conn: sa.Connection, sql: str, label: str) -> None:
        for statement in split_statements(sql):
            for attempt in self._retrying(f"{label}:{statement.line}"):
                with attempt:
                    self._drop_invalid_index(conn, statement.text)
                    conn.exec_driver_sql(statement.text)

    def _drop_invalid_index(self, conn: sa.Connection, statement: str) -> None:
        match = _CIC_RE.match(statement)
        if not match:
            return
        name, table = match.group(1).strip('"'), match.group(2)
        invalid = conn.execute(sa.text(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT i.indisvalid AND c.relname = :name "
            "AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass(:table))"
        ), {"name": name, "table": table}).scalar()
        if invalid:
            self.log(f"  dropping INVALID index {invalid} left by an earlier failed build")
            conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {invalid}")
