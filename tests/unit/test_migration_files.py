"""Unit tests for migrations.files (directives, names, loading) and the shipped files' lint."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from migrations.files import SQL_DIR, MigrationError, load_migrations, parse_directives
from migrations.lint import RULES, lint_sql
from migrations.sqltext import split_statements
from tests.support.migrations_support import write_migrations

# -- parse_directives ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1;", (True, ())),
        ("", (True, ())),
        ("-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);", (False, ())),
        ("-- requires-backfill: aois_status\nALTER TABLE aois ...;", (True, ("aois_status",))),
        ("-- migrate: no-transaction\n-- requires-backfill: a, b ,c\nSELECT 1;", (False, ("a", "b", "c"))),
        ("-- requires-backfill: a\n-- requires-backfill: b\nSELECT 1;", (True, ("a", "b"))),
        ("\n\n-- a header comment\n--\n  -- migrate: no-transaction  \nSELECT 1;", (False, ())),
        ("--MIGRATE:No-Transaction\nSELECT 1;", (False, ())),
        ("-- Requires-Backfill:  jobs_tenant_id  \nSELECT 1;", (True, ("jobs_tenant_id",))),
        ("-- migrate: transaction\nSELECT 1;", (True, ())),
        ("-- migrate: no-transaction please\nSELECT 1;", (True, ())),
        ("-- requires-backfill: ,\nSELECT 1;", (True, ())),
        # only the header counts: directives after the first statement are plain comments
        ("SELECT 1;\n-- migrate: no-transaction\n-- requires-backfill: x\n", (True, ())),
        ("CREATE TABLE t (a int); -- migrate: no-transaction", (True, ())),
    ],
)
def test_parse_directives(sql: str, expected: tuple[bool, tuple[str, ...]]) -> None:
    assert parse_directives(sql) == expected


# -- load_migrations ----------------------------------------------------------------------


def test_load_migrations_reads_files_downs_and_directives(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "002_second.sql": "-- migrate: no-transaction\n-- requires-backfill: fill\n"
                              "CREATE INDEX CONCURRENTLY i ON t (a);\n",
            "001_first.sql": "CREATE TABLE t (a int);\n",
            "101_tool_table.sql": "CREATE SCHEMA IF NOT EXISTS backfill;\n",
            "README.md": "not a migration",
        },
        down={
            "001_first.sql": "DROP TABLE t;\n",
            "002_second.sql": "-- migrate: no-transaction\nDROP INDEX CONCURRENTLY i;\n",
        },
    )
    files = load_migrations(tmp_path)
    assert [(f.version, f.name, f.track, f.filename) for f in files] == [
        ("001", "first", "app", "001_first.sql"),
        ("002", "second", "app", "002_second.sql"),
        ("101", "tool_table", "tool", "101_tool_table.sql"),
    ]
    first, second, tool = files
    assert first.sql == "CREATE TABLE t (a int);\n"
    assert first.down_sql == "DROP TABLE t;\n"
    assert (first.transactional, first.down_transactional, first.requires_backfill) == (True, True, ())
    assert (second.transactional, second.down_transactional, second.requires_backfill) == (False, False, ("fill",))
    assert tool.down_sql is None and tool.down_transactional is True
    assert first.checksum == hashlib.sha256(b"CREATE TABLE t (a int);\n").hexdigest()


def test_track_boundary_is_100(tmp_path: Path) -> None:
    write_migrations(tmp_path, {"099_last_app.sql": "SELECT 1;", "100_first_tool.sql": "SELECT 1;"})
    assert [f.track for f in load_migrations(tmp_path)] == ["app", "tool"]


@pytest.mark.parametrize(
    "bad_name",
    ["1_short.sql", "0001_long.sql", "001-dash.sql", "001_Upper.sql", "001_.sql", "abc_name.sql", "001_with space.sql"],
)
def test_bad_file_name_is_refused_naming_the_file(tmp_path: Path, bad_name: str) -> None:
    write_migrations(tmp_path, {"001_ok.sql": "SELECT 1;", bad_name: "SELECT 2;"})
    with pytest.raises(MigrationError) as err:
        load_migrations(tmp_path)
    assert bad_name in str(err.value)
    assert "NNN_lower_snake_name.sql" in str(err.value)


def test_duplicate_version_is_refused_naming_both_files(tmp_path: Path) -> None:
    write_migrations(tmp_path, {"003_one.sql": "SELECT 1;", "003_two.sql": "SELECT 2;", "001_a.sql": "SELECT 0;"})
    with pytest.raises(MigrationError) as err:
        load_migrations(tmp_path)
    message = str(err.value)
    assert "share version 003" in message
    assert "003_one.sql" in message and "003_two.sql" in message


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        load_migrations(tmp_path / "nope")


def test_empty_directory_has_no_migrations(tmp_path: Path) -> None:
    assert load_migrations(tmp_path) == []


# -- the shipped files --------------------------------------------------------------------

SHIPPED_UP = sorted(SQL_DIR.glob("*.sql"))
SHIPPED_DOWN = sorted((SQL_DIR / "down").glob("*.sql"))


def test_shipped_migrations_numbering_and_gates() -> None:
    files = load_migrations()
    assert [f.version for f in files] == [f"{n:03d}" for n in range(1, 20)] + ["101", "102", "103"]
    by_version = {f.version: f for f in files}
    gates = {v: f.requires_backfill for v, f in by_version.items() if f.requires_backfill}
    assert gates == {"003": ("ai_assistant_threads_copy",), "017": ("aois_status",), "018": ("jobs_tenant_id",), "019": ("aois_area_ha_numeric",)}
    assert all(f.down_sql is not None for f in files), "every shipped migration can be reverted"
    no_tx = sorted(v for v, f in by_version.items() if not f.transactional)
    assert no_tx == ["002", "006", "008", "011", "012", "017", "018"]
    assert by_version["101"].track == by_version["102"].track == "tool"
    assert {f.track for f in files if f.version not in ("101", "102", "103")} == {"app"}


@pytest.mark.parametrize("path", SHIPPED_UP, ids=lambda p: p.name)
def test_shipped_up_file_has_no_lint_findings(path: Path) -> None:
    assert [str(f) for f in lint_sql(path.read_text(), str(path))] == []


@pytest.mark.parametrize("path", SHIPPED_DOWN, ids=lambda p: p.name)
def test_shipped_down_file_has_no_lint_findings(path: Path) -> None:
    assert [str(f) for f in lint_sql(path.read_text(), str(path))] == []


_WAIVER = re.compile(r"^lint\s*:\s*allow\s+(?P<rule>[\w-]+)\s+because\s+(?P<reason>\S.*)$", re.IGNORECASE)


@pytest.mark.parametrize("path", SHIPPED_UP + SHIPPED_DOWN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_waiver_names_a_rule_and_gives_a_reason(path: Path) -> None:
    waivers = [c for s in split_statements(path.read_text()) for c in s.comments
               if c.lower().startswith("lint")]
    # also catch waiver-looking comments that are not directly above a statement
    raw = [line.strip()[2:].strip() for line in path.read_text().splitlines()
           if re.match(r"^\s*--\s*lint\s*:", line)]
    assert sorted(raw) == sorted(waivers), "every waiver sits directly above the statement it waives"
    for waiver in waivers:
        match = _WAIVER.match(waiver)
        assert match, f"{path.name}: malformed waiver {waiver!r}"
        assert match["rule"].lower() in RULES and match["rule"].lower() != "bad-waiver"
        assert len(match["reason"].split()) >= 5, f"{path.name}: waiver reason too thin: {waiver!r}"


def test_shipped_waivers_exist_where_expected() -> None:
    """The waivers the files are known to need: a missing one would be a lint finding, an
    extra one would be a silent hole; both show up here."""
    found = {}
    for path in SHIPPED_UP + SHIPPED_DOWN:
        for statement in split_statements(path.read_text()):
            for comment in statement.comments:
                match = _WAIVER.match(comment)
                if match:
                    found.setdefault(f"{path.parent.name}/{path.name}", []).append(match["rule"])
    assert found == {
        "sql/019_swap_aois_area_ha.sql": ["rename"],
        "sql/102_backfill_batch_order.sql": ["add-column-not-null"] * 3,
        "down/003_drop_copilot_threads.sql": ["bulk-data-change"],
        "down/019_swap_aois_area_ha.sql": ["rename", "bulk-data-change"],
    }
