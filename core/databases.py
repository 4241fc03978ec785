"""Whole databases on a server: create one (optionally as a copy of a template), drop one.

The demo, the benchmark and the test harness all work on databases of their own that
they create and drop; this is the one place that does it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from core.db import libpq_url, with_database

__all__ = ["create_database", "drop_database", "scratch_database", "unique_name"]


def unique_name(prefix: str) -> str:
    """A name (database, role, namespace) unlikely to collide with a concurrent run's."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def create_database(server_url: str, name: str, template: str | None = None, *, file_copy: bool = False) -> str:
    """CREATE DATABASE `name` [TEMPLATE `template`] on the server of `server_url`; returns
    the new database's URL. With `file_copy` (PostgreSQL 15+) the template's files are
    copied rather than written through the WAL: two checkpoints dearer for a small
    database, seconds instead of minutes for a large one."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            if file_copy and conn.info.server_version >= 150000:
                query = query + sql.SQL(" STRATEGY FILE_COPY")
        conn.execute(query)
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """DROP DATABASE ... WITH (FORCE): its sessions are ended; a missing one is no error."""
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(server_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A fresh database (a copy of `template` if given) that is dropped on exit; yields its URL."""
    name = unique_name(prefix)
    url = create_database(server_url, name, template)
    try:
        yield url
    finally:
        drop_database(server_url, name)
