"""Real PostgreSQL and Redis for the test session.

With `DATABASE_URL` / `REDIS_URL` set, those servers are used (tests create and drop
their own databases and use their own Redis key namespace). Unset, embedded real
servers are started once per session and stopped by pid at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from core.databases import create_database, drop_database, unique_name
from core.db import with_database
from worker.embedded import EmbeddedPostgres, EmbeddedRedis, scratch_dir

__all__ = ["as_url", "create_database", "drop_database", "postgres_server", "redis_server", "unique_name"]


def as_url(conninfo: str) -> str:
    """A `postgresql://` URL for a key=value conninfo (for the CLI and SQLAlchemy)."""
    return with_database(conninfo, psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"])


@contextmanager
def postgres_server(tmp: Path) -> Iterator[str]:
    """Admin URL (database `postgres`) of the session's server."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield with_database(external, "postgres")
        return
    server = EmbeddedPostgres(scratch_dir("backfill-test-") / "pg")
    server.start()
    try:
        yield server.url()
    finally:
        server.destroy()


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """URL of the session's Redis."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    server = EmbeddedRedis(tmp / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


