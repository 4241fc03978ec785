"""Sample data at the expanded schema (016): rows as they were before the expand
migrations, including bad rows of every kind the four column backfills must handle;
and old assistant threads at 002, with a writer that plays the application during the
copilot_threads -> ai_assistant_threads rename.

Loading needs a superuser session (it sets `session_replication_role = replica` so that
the 015 sync trigger and the foreign keys do not touch "old" rows): fine for the demo,
tests and benchmarks, which own their servers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import sqlalchemy as sa

__all__ = ["BAD_AREAS", "SampleSpec", "ThreadWriter", "load", "load_threads", "fix_bad_rows"]

# area_ha values that cannot become NUMERIC(10,2)
BAD_AREAS = ("'NaN'", "'Infinity'", "'-Infinity'", "1e12", "99999999.996", "-123456789.5")
# result JSON of FAILED jobs: the backfill must cope with each shape
_RESULTS = (
    "jsonb_build_object('error', '  disk full on worker ' || g || E'\\n')",
    "jsonb_build_object('error', '')",
    "jsonb_build_object('error', '   ')",
    "'{}'::jsonb",
    "NULL::jsonb",
    "'[1, 2, 3]'::jsonb",
    "'\"just a string\"'::jsonb",
    "jsonb_build_object('error', jsonb_build_object('code', 42))",
    "jsonb_build_object('error', repeat('x', 5000))",
    "jsonb_build_object('detail', 'no error key')",
)


@dataclass(frozen=True)
class SampleSpec:
    """How much data, and whether to include bad rows."""

    aois: int = 100_000
    jobs: int = 50_000
    tenants: int = 5
    bad_rows: bool = True
    seed: float = 0.42


def _statements(spec: SampleSpec) -> list[str]:
    results = "(ARRAY[" + ", ".join(_RESULTS) + f"])[1 + (g / 5) % {len(_RESULTS)}]"
    stmts = [
        f"SELECT setseed({spec.seed})",
        _tenants(spec.tenants),
        "INSERT INTO farms (tenant_id, name) SELECT id, 'farm of ' || name FROM tenants",
        f"""INSERT INTO aois (tenant_id, farm_id, name, area_ha, status, area_ha_new)
            SELECT t.id, NULL, 'aoi-' || g, round((random() * 5000)::numeric, 3)::float8, NULL, NULL
            FROM generate_series(1, {spec.aois}) g
            JOIN (SELECT id, row_number() OVER (ORDER BY name) - 1 AS i FROM tenants) t ON t.i = g % {spec.tenants}""",
        f"""INSERT INTO jobs (aoi_id, job_type, status, result, tenant_id, error_message)
            SELECT a.id, 'ndvi', (ARRAY['QUEUED','RUNNING','DONE','FAILED','FAILED'])[1 + g % 5],
                   CASE WHEN g % 5 >= 3 THEN {results} ELSE jsonb_build_object('ok', true) END, NULL, NULL
            FROM (SELECT id, row_number() OVER () AS g FROM aois LIMIT {spec.jobs}) a""",
    ]
    if spec.bad_rows:
        stmts += [
            f"""UPDATE aois SET area_ha = (ARRAY[{', '.join(f'{v}::float8' for v in BAD_AREAS)}])[1 + n % {len(BAD_AREAS)}]
                FROM (SELECT id, row_number() OVER (ORDER BY name) AS n FROM aois
                      WHERE name LIKE 'aoi-%7' LIMIT {2 * len(BAD_AREAS)}) bad WHERE aois.id = bad.id""",
            "UPDATE aois SET area_ha = NULL WHERE name IN ('aoi-3', 'aoi-13')",
            "INSERT INTO jobs (aoi_id, job_type, status) SELECT NULL, 'orphan', 'DONE' FROM generate_series(1, 3)",
            "INSERT INTO jobs (aoi_id, job_type, status) SELECT gen_random_uuid(), 'gone', 'FAILED' FROM generate_series(1, 2)",
        ]
    return stmts


_THREAD_COLUMNS = "id, tenant_id, aoi_id, title, status, created_at, updated_at"


def _tenants(count: int) -> str:
    """The sample tenants, unless there are tenants already (the threads came first)."""
    return (f"INSERT INTO tenants (name) SELECT 'tenant-' || g FROM generate_series(1, {count}) g "
            f"WHERE NOT EXISTS (SELECT 1 FROM tenants)")


def load_threads(engine: sa.Engine, threads: int, tenants: int = SampleSpec.tenants) -> None:
    """Old assistant threads in copilot_threads, at schema 002 (before the rename's copy)."""
    with engine.begin() as conn:
        conn.execute(sa.text(_tenants(tenants)))
        conn.execute(sa.text(
            f"INSERT INTO copilot_threads (tenant_id, title, status, created_at) "
            f"SELECT t.id, 'thread ' || g, (ARRAY['OPEN', 'CLOSED'])[1 + g % 2], now() - g * interval '1 minute' "
            f"FROM generate_series(1, {threads}) g "
            f"JOIN (SELECT id, row_number() OVER (ORDER BY name) - 1 AS i FROM tenants) t ON t.i = g % {tenants}"))
        conn.execute(sa.text("ANALYZE copilot_threads"))


@dataclass
class ThreadWriter:
    """The application during the rename, in a thread: code that writes every new thread
    to both tables in one transaction (runbook step 2), until `stop`."""

    engine: sa.Engine
    written: int = 0
    halt: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> ThreadWriter:
        """Write a thread every few milliseconds."""
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> int:
        """Stop after the write in flight; the number of threads written."""
        self.halt.set()
        if self.thread is not None:
            self.thread.join(30)
        return self.written

    def _write(self) -> None:
        while not self.halt.is_set():
            with self.engine.begin() as conn:
                new_id = conn.execute(sa.text(
                    "INSERT INTO copilot_threads (tenant_id, title) SELECT id, 'new thread' FROM tenants "
                    "ORDER BY name LIMIT 1 RETURNING id")).scalar_one()
                conn.execute(sa.text(f"INSERT INTO ai_assistant_threads ({_THREAD_COLUMNS}) "
                                     f"SELECT {_THREAD_COLUMNS} FROM copilot_threads WHERE id = :i"), {"i": new_id})
            self.written += 1
            self.halt.wait(0.005)


def load(engine: sa.Engine, spec: SampleSpec = SampleSpec()) -> None:
    """Insert the sample data in one transaction (triggers and FKs off for these rows)."""
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text("SET LOCAL app.is_system_admin = 'true'"))
        for statement in _statements(spec):
            conn.execute(sa.text(statement))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))


def fix_bad_rows(engine: sa.Engine) -> dict[str, int]:
    """What an operator would do after reading `backfill errors`: repair the data
    (the demo's choice: bad areas become unknown-but-finite, orphan jobs get an AOI)."""
    with engine.begin() as conn:
        areas = conn.execute(sa.text(
            "UPDATE aois SET area_ha = 0 WHERE area_ha_new IS NULL AND area_ha IS NOT NULL "
            "AND (area_ha IN ('NaN', 'Infinity', '-Infinity') OR abs(area_ha) >= 99999999.995)")).rowcount
        jobs = conn.execute(sa.text(
            "UPDATE jobs SET aoi_id = (SELECT id FROM aois ORDER BY name LIMIT 1) WHERE tenant_id IS NULL "
            "AND (aoi_id IS NULL OR NOT EXISTS (SELECT 1 FROM aois a WHERE a.id = jobs.aoi_id))")).rowcount
    return {"aois": areas, "jobs": jobs}
