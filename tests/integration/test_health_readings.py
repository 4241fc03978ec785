"""The health readings against a real PostgreSQL: what the signals decide on."""

from __future__ import annotations

import threading
import time

import psycopg
import sqlalchemy as sa

from backfills.health import VacuumReading, read_health, read_vacuum


def test_a_quiet_database_reads_healthy(engine: sa.Engine) -> None:
    readings = read_health(engine, ["aois"], at=1.0)
    assert readings.replicas == () and readings.vacuuming == ()
    assert readings.locks is not None and [(r.table, r.waiters) for r in readings.locks] == [("aois", 0)]


def test_a_vacuum_in_progress_is_read_with_whether_it_prevents_wraparound(engine: sa.Engine, db_url: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE vacuumed AS SELECT g AS id, repeat('x', 200) AS pad "
                             "FROM generate_series(1, 20000) g"))
        conn.execute(sa.text("DELETE FROM vacuumed WHERE id % 2 = 0"))

    def slow_vacuum() -> None:  # a manual VACUUM held back by its cost delay: seconds, not milliseconds
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("SET vacuum_cost_delay = '50ms'")
            conn.execute("SET vacuum_cost_limit = 1")
            conn.execute("SET statement_timeout = '5s'")
            try:
                conn.execute("VACUUM vacuumed")
            except psycopg.errors.QueryCanceled:
                pass

    vacuum = threading.Thread(target=slow_vacuum)
    vacuum.start()
    try:
        seen: tuple[VacuumReading, ...] = ()
        deadline = time.monotonic() + 4
        while not seen and time.monotonic() < deadline:
            with engine.connect() as conn:
                seen = read_vacuum(conn, ["vacuumed", "aois"])
            time.sleep(0.05)
        assert seen == (VacuumReading("vacuumed", wraparound=False),)  # a VACUUM by hand: not to prevent wraparound
    finally:
        vacuum.join(10)
