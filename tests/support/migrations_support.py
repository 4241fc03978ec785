"""Helpers for the migration tests: a catalog dump to compare schemas, small migration
directories on disk, and running several `backfill` CLI processes at once."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from core.settings import Settings
from tests.support.workers import run_cli

SCHEMAS = ("public", "backfill")

# Every query returns plain, comparable rows and is ordered, so two dumps of the same
# schema are equal and a dump of a different schema is not. No OIDs, no internal names.
_CATALOG: dict[str, str] = {
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, coalesce(array_to_string(c.reloptions, ','), '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        ORDER BY 1, 2""",
    "columns": """
        SELECT n.nspname, c.relname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position,
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity, a.attgenerated
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2, 3""",
    "constraints": """
        SELECT n.nspname, c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid),
               k.convalidated, k.condeferrable
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(:schemas)
        ORDER BY 1, 2, 3""",
    "indexes": """
        SELECT n.nspname, t.relname, c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid,
               i.indisready, i.indisunique, i.indisprimary
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(:schemas)
        ORDER BY 1, 2, 3""",
    "triggers": """
        SELECT n.nspname, c.relname, g.tgname, pg_get_triggerdef(g.oid), g.tgenabled
        FROM pg_trigger g
        JOIN pg_class c ON c.oid = g.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(:schemas) AND NOT g.tgisinternal
        ORDER BY 1, 2, 3""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles::text, cmd,
               coalesce(qual, ''), coalesce(with_check, '')
        FROM pg_policies
        WHERE schemaname = ANY(:schemas)
        ORDER BY 1, 2, 3""",
    "row_security": """
        SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p')
        ORDER BY 1, 2""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_function_result(p.oid), p.prokind, l.lanname, md5(p.prosrc)
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        JOIN pg_language l ON l.oid = p.prolang
        WHERE n.nspname = ANY(:schemas)
        ORDER BY 1, 2, 3""",
    "schemas": """
        SELECT nspname FROM pg_namespace WHERE nspname = ANY(:schemas) ORDER BY 1""",
}


def catalog_dump(engine: sa.Engine, schemas: Sequence[str] = SCHEMAS) -> dict[str, list[tuple[object, ...]]]:
    """The schema of `schemas` as comparable rows, one list per kind of object.

    Only the structure: rows of `schema_migrations` (with their timestamps) are not part of it.
    """
    dump: dict[str, list[tuple[object, ...]]] = {}
    with engine.connect() as conn:
        for kind, query in _CATALOG.items():
            dump[kind] = [tuple(row) for row in conn.execute(sa.text(query), {"schemas": list(schemas)})]
    return dump


def write_migrations(directory: Path, files: Mapping[str, str], down: Mapping[str, str] | None = None) -> Path:
    """Write `NNN_name.sql` files (and `down/` files) into `directory`; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    if down:
        (directory / "down").mkdir(exist_ok=True)
        for name, sql in down.items():
            (directory / "down" / name).write_text(sql)
    return directory


def applied_versions(engine: sa.Engine) -> list[str]:
    """Versions in `schema_migrations`, in order (with duplicates, if there ever were any)."""
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass('public.schema_migrations')")).scalar() is None:
            return []
        return list(conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version")).scalars())


CliCall = tuple[Settings, Sequence[str], Mapping[str, str]]


def run_cli_parallel(calls: Sequence[CliCall]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent `backfill` invocations at the same time (each is ~1.5 s of start-up)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run_cli, settings, *args, **dict(env)) for settings, args, env in calls]
        return [future.result() for future in futures]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (asserting there is exactly one)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
    return lines[0]
