"""Unit tests for migrations.sqltext: statement splitting and comment stripping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrations.sqltext import Segment, SegmentKind, Statement, scan, split_statements, strip_comments

SPLIT_CASES: list[tuple[str, str, list[Statement]]] = [
    ("empty input", "", []),
    ("whitespace only", "  \n\t\n", []),
    ("only comments", "-- one\n/* two */\n-- three\n", []),
    ("only semicolons", ";;\n ; ", []),
    (
        "two simple statements",
        "SELECT 1;\nSELECT 2;\n",
        [Statement("SELECT 1", 1, ()), Statement("SELECT 2", 2, ())],
    ),
    (
        "final statement without semicolon",
        "SELECT 1;\n\nSELECT 2\n",
        [Statement("SELECT 1", 1, ()), Statement("SELECT 2", 3, ())],
    ),
    (
        "empty statements skipped",
        "SELECT 1;;\n;\nSELECT 2;",
        [Statement("SELECT 1", 1, ()), Statement("SELECT 2", 3, ())],
    ),
    (
        "semicolon and doubled quote inside single-quoted string",
        "INSERT INTO t VALUES ('a;b''c;');\nSELECT 2;",
        [Statement("INSERT INTO t VALUES ('a;b''c;')", 1, ()), Statement("SELECT 2", 2, ())],
    ),
    (
        "E string with backslash-escaped quote",
        "SELECT E'it\\'s; here\\\\';\nSELECT 2;",
        [Statement("SELECT E'it\\'s; here\\\\'", 1, ()), Statement("SELECT 2", 2, ())],
    ),
    (
        "backslash is literal in a standard string",
        "SELECT 'C:\\';\nSELECT 2;",
        [Statement("SELECT 'C:\\'", 1, ()), Statement("SELECT 2", 2, ())],
    ),
    (
        "double-quoted identifier with semicolon and doubled quote",
        'SELECT 1 AS "we;ird""name";\nSELECT 2;',
        [Statement('SELECT 1 AS "we;ird""name"', 1, ()), Statement("SELECT 2", 2, ())],
    ),
    (
        "anonymous dollar quote in a DO block",
        "DO $$\nBEGIN\n  PERFORM 1;\n  PERFORM 2;\nEND\n$$;\nSELECT 3;",
        [
            Statement("DO $$\nBEGIN\n  PERFORM 1;\n  PERFORM 2;\nEND\n$$", 1, ()),
            Statement("SELECT 3", 7, ()),
        ],
    ),
    (
        "tagged dollar quote containing $$ and ;",
        "CREATE FUNCTION f() RETURNS text AS $fn$ SELECT $$a;b$$; $fn$ LANGUAGE sql;\nSELECT 1;",
        [
            Statement("CREATE FUNCTION f() RETURNS text AS $fn$ SELECT $$a;b$$; $fn$ LANGUAGE sql", 1, ()),
            Statement("SELECT 1", 2, ()),
        ],
    ),
    (
        "positional parameter is not a dollar quote",
        "SELECT $1;\nSELECT 2;",
        [Statement("SELECT $1", 1, ()), Statement("SELECT 2", 2, ())],
    ),
    (
        "dollar inside an identifier is not a dollar quote",
        "SELECT a$b$;\nSELECT 2;",
        [Statement("SELECT a$b$", 1, ()), Statement("SELECT 2", 2, ())],
    ),
    (
        "semicolon inside a line comment",
        "SELECT 1 -- not; the end\n+ 1;\nSELECT 2;",
        [Statement("SELECT 1 -- not; the end\n+ 1", 1, ()), Statement("SELECT 2", 3, ())],
    ),
    (
        "semicolon inside a nested block comment",
        "SELECT /* a /* b; */ c; */ 1;\nSELECT 2;",
        [Statement("SELECT /* a /* b; */ c; */ 1", 1, ()), Statement("SELECT 2", 2, ())],
    ),
    (
        "block comment before a statement is dropped",
        "/* header\n; */\nSELECT 1;",
        [Statement("SELECT 1", 3, ())],
    ),
    (
        "quote characters inside comments are ignored",
        "-- don't\n/* \"x */ SELECT 1;\nSELECT 2;",
        [Statement("SELECT 1", 2, ("don't",)), Statement("SELECT 2", 3, ())],
    ),
    (
        "comments above statements are captured, blank lines allowed",
        "-- migrate: no-transaction\n\n-- first\n--second  \nSELECT 1;\n-- third\n\nSELECT 2;",
        [
            Statement("SELECT 1", 5, ("migrate: no-transaction", "first", "second")),
            Statement("SELECT 2", 8, ("third",)),
        ],
    ),
    (
        "trailing comment on the previous statement's line belongs to it",
        "SELECT 1; -- about one\n-- about two\nSELECT 2;",
        [Statement("SELECT 1", 1, ()), Statement("SELECT 2", 3, ("about two",))],
    ),
    (
        "comments inside a statement are not captured",
        "ALTER TABLE t\n  -- inside\n  ADD COLUMN c int;",
        [Statement("ALTER TABLE t\n  -- inside\n  ADD COLUMN c int", 1, ())],
    ),
    (
        "trailing comments after the last statement are not a statement",
        "SELECT 1;\n-- the end\n/* really */\n",
        [Statement("SELECT 1", 1, ())],
    ),
    (
        "trailing comment after a final statement without semicolon",
        "SELECT 1\n-- the end\n",
        [Statement("SELECT 1", 1, ())],
    ),
    (
        "multi-line statement keeps the line of its first token",
        "\n\n   CREATE TABLE t (\n  id int\n);",
        [Statement("CREATE TABLE t (\n  id int\n)", 3, ())],
    ),
    (
        "unterminated string runs to the end",
        "SELECT 'oops; SELECT 2;",
        [Statement("SELECT 'oops; SELECT 2;", 1, ())],
    ),
]


@pytest.mark.parametrize(("sql", "expected"), [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES])
def test_split_statements(sql: str, expected: list[Statement]) -> None:
    assert split_statements(sql) == expected


STRIP_CASES: list[tuple[str, str, str]] = [
    ("line comment", "SELECT 1 -- x\nFROM t", "SELECT 1 \nFROM t"),
    ("block comment becomes a space", "SELECT/* x */1", "SELECT 1"),
    ("nested block comment", "a /* x /* y */ z */ b", "a   b"),
    ("comment markers inside a string are kept", "SELECT '-- no /* no */'", "SELECT '-- no /* no */'"),
    ("comment markers inside an identifier are kept", 'SELECT "a--b"', 'SELECT "a--b"'),
    ("comment markers inside dollar quotes are kept", "DO $$ -- keep $$ -- drop", "DO $$ -- keep $$ "),
    ("no comments", "SELECT 1", "SELECT 1"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in STRIP_CASES], ids=[c[0] for c in STRIP_CASES])
def test_strip_comments(text: str, expected: str) -> None:
    assert strip_comments(text) == expected


def test_scan_covers_the_input_with_typed_segments() -> None:
    sql = "SELECT 'a', \"b\", $t$c$t$; -- d\n/* e */"
    segments = scan(sql)
    assert "".join(s.text for s in segments) == sql
    assert [s.kind for s in segments] == [
        SegmentKind.CODE,
        SegmentKind.STRING,
        SegmentKind.CODE,
        SegmentKind.IDENT,
        SegmentKind.CODE,
        SegmentKind.DOLLAR,
        SegmentKind.SEMICOLON,
        SegmentKind.CODE,
        SegmentKind.LINE_COMMENT,
        SegmentKind.CODE,
        SegmentKind.BLOCK_COMMENT,
    ]
    assert segments[5] == Segment(SegmentKind.DOLLAR, "$t$c$t$", 17)
    assert segments[5].end == 24


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_SQUOTED = _ANY_TEXT.map(lambda s: "'" + s.replace("'", "''") + "'")
_DQUOTED = _ANY_TEXT.map(lambda s: '"' + s.replace('"', '""') + '"')
_DOLLARED = _ANY_TEXT.filter(lambda s: "$q$" not in s and not s.endswith("$q")).map(
    lambda s: f"$q${s}$q$"
)
_TOKEN = st.one_of(_WORD, _WORD, _SQUOTED, _DQUOTED, _DOLLARED, st.sampled_from(["(", ")", ",", "=", "1"]))
_STATEMENT = st.builds(
    lambda first, rest: " ".join([first, *rest]),
    _WORD,
    st.lists(_TOKEN, max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_STATEMENT, min_size=1, max_size=6), st.booleans())
def test_split_roundtrip(statements: list[str], final_semicolon: bool) -> None:
    sql = ";\n".join(statements) + (";" if final_semicolon else "")
    result = split_statements(sql)
    assert [s.text for s in result] == statements
    lines, expected_lines = 1, []
    for statement in statements:
        expected_lines.append(lines)
        lines += statement.count("\n") + 1
    assert [s.line for s in result] == expected_lines
    assert all(s.comments == () for s in result)
