"""core.databases on the real server: copies hold the template's rows, drops are forced
and idempotent, a scratch database is gone after its block whatever happened inside."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from core.databases import create_database, drop_database, scratch_database, unique_name


def _exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@pytest.fixture()
def template(pg_admin_url: str) -> Iterator[str]:
    name = unique_name("tpl_db")
    url = create_database(pg_admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 500) g")
    yield name
    drop_database(pg_admin_url, name)


@pytest.mark.parametrize("file_copy", [False, True])
def test_a_copy_holds_the_template_rows(pg_admin_url: str, template: str, file_copy: bool) -> None:
    name = unique_name("copy")
    url = create_database(pg_admin_url, name, template, file_copy=file_copy)
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*), sum(n) FROM t").fetchone() == (500, 125250)
    finally:
        drop_database(pg_admin_url, name)
    assert not _exists(pg_admin_url, name)


def test_drop_ends_open_sessions_and_a_missing_database_is_no_error(pg_admin_url: str) -> None:
    name = unique_name("busy")
    url = create_database(pg_admin_url, name)
    held = psycopg.connect(url)
    try:
        drop_database(pg_admin_url, name)
        assert not _exists(pg_admin_url, name)
        drop_database(pg_admin_url, name)
    finally:
        held.close()


def test_a_scratch_database_is_dropped_even_when_its_block_fails(pg_admin_url: str) -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError), scratch_database(pg_admin_url, "scratch") as url:
        seen.append(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
        assert _exists(pg_admin_url, seen[0])
        raise RuntimeError("inside")
    assert not _exists(pg_admin_url, seen[0])


def test_a_name_that_needs_quoting_is_quoted(pg_admin_url: str) -> None:
    name = 'odd "name"; drop'
    create_database(pg_admin_url, name)
    assert _exists(pg_admin_url, name)
    drop_database(pg_admin_url, name)
    assert not _exists(pg_admin_url, name)
