"""A primary and a streaming standby the test owns (real servers, real replication)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from worker.embedded import EmbeddedPostgres, scratch_dir


@dataclass
class Pair:
    """`primary` and `standby`, both running; `dbname` exists on both."""

    primary: EmbeddedPostgres
    standby: EmbeddedPostgres
    dbname: str

    def url(self, server: EmbeddedPostgres) -> str:
        """URL of the test database on `server`."""
        return server.url(self.dbname)

    def failover_url(self) -> str:
        """A multi-host URL that follows whichever server accepts writes."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/"
                f"{self.dbname}?target_session_attrs=read-write&connect_timeout=2")

    def pause_replay(self) -> None:
        """`pg_wal_replay_pause()` on the standby: its lag grows with every write."""
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        """`pg_wal_replay_resume()` on the standby."""
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")


@contextmanager
def primary_and_standby(dbname: str = "app") -> Iterator[Pair]:
    """Start a primary with database `dbname`, then a standby streaming from it."""
    root = scratch_dir("backfill-repl-")
    primary = EmbeddedPostgres(root / "primary")
    standby: EmbeddedPostgres | None = None
    try:
        primary.start()
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        standby = primary.standby(root / "standby")
        standby.start()
        yield Pair(primary, standby, dbname)
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()
