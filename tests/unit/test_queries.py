"""Unit tests for backfills.queries: the named-query file loader."""

from __future__ import annotations

import pytest

from backfills.queries import QueryFileError, load_queries, parse_queries


def test_parse_splits_on_name_lines() -> None:
    text = "-- header comment\n\n-- name: one\nSELECT 1;\n\n-- name: two\nSELECT\n  2\n-- name:three\nSELECT 3"
    assert parse_queries(text) == {"one": "SELECT 1", "two": "SELECT\n  2", "three": "SELECT 3"}


def test_comments_inside_a_query_are_kept() -> None:
    assert parse_queries("-- name: q\n-- why\nSELECT 1;") == {"q": "-- why\nSELECT 1"}


@pytest.mark.parametrize(("text", "message"), [
    ("-- name: a\nSELECT 1\n-- name: a\nSELECT 2", "defined twice"),
    ("-- name: a\n\n-- name: b\nSELECT 2", "'a' is empty"),
    ("-- name: a\n;", "'a' is empty"),
    ("SELECT 0;\n-- name: a\nSELECT 1", "before the first"),
    ("-- name: Bad-Name\nSELECT 1", "not a valid query name"),
    ("-- name:\nSELECT 1", "not a valid query name"),
])
def test_malformed_files_raise(text: str, message: str) -> None:
    with pytest.raises(QueryFileError, match=message):
        parse_queries(text, source="x.sql")


def test_no_names_means_no_queries() -> None:
    assert parse_queries("-- just a comment\n\n") == {}


def test_load_runs_sql_is_cached_and_complete() -> None:
    queries = load_queries("runs.sql")
    assert load_queries("runs.sql") is queries
    for name in ("create_run", "create_part", "get_run", "list_runs", "active_runs", "get_parts",
                 "lock_run", "set_state", "update_options", "mark_part_done", "set_cursor",
                 "row_errors", "row_error_count", "touch"):
        assert queries[name].strip()
        assert not queries[name].rstrip().endswith(";")
        assert "-- name:" not in queries[name]


def test_missing_file_raises() -> None:
    with pytest.raises(FileNotFoundError):
        load_queries("no_such_file.sql")
