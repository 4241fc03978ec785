"""core.db URL helpers: pointing a URL at another database keeps everything else."""

from __future__ import annotations

import psycopg
import pytest

from core.db import libpq_url, with_database


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://app:s3cret@db.example:6432/app", "postgresql://app:s3cret@db.example:6432/other"),
    ("postgresql+psycopg://app@db/app?sslmode=require&application_name=x",
     "postgresql://app@db/other?sslmode=require&application_name=x"),
    ("postgresql://app@pg1:5432,pg2:5432/app?target_session_attrs=read-write",
     "postgresql://app@pg1:5432,pg2:5432/other?target_session_attrs=read-write"),
    ("host=127.0.0.1 port=5433 user=postgres dbname=postgres", "postgresql://postgres@127.0.0.1:5433/other"),
    ("host=pg1,pg2 port=5432,5433 user=app password=p@ss dbname=app sslmode=require",
     "postgresql://app:p%40ss@pg1:5432,pg2:5433/other?sslmode=require"),
    ("host=/var/run/postgresql port=5433 user=app dbname=app",
     "postgresql://app@/other?host=%2Fvar%2Frun%2Fpostgresql&port=5433"),
])
def test_with_database_changes_only_the_database(url: str, expected: str) -> None:
    assert with_database(url, "other") == expected


def test_the_result_means_the_same_to_libpq() -> None:
    url = with_database("host=pg1,pg2 port=5432,5433 user=app password=p@ss dbname=app sslmode=require", "x y")
    info = psycopg.conninfo.conninfo_to_dict(libpq_url(url))
    assert info == {"host": "pg1,pg2", "port": "5432,5433", "user": "app", "password": "p@ss", "dbname": "x y",
                    "sslmode": "require"}


def test_a_socket_directory_stays_a_socket_directory() -> None:
    url = with_database("host=/var/run/postgresql port=5433 user=app dbname=app", "other")
    assert psycopg.conninfo.conninfo_to_dict(url) == {"host": "/var/run/postgresql", "port": "5433", "user": "app",
                                                      "dbname": "other"}
