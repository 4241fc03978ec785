"""Lexical helpers for migration SQL: split a file into statements, strip comments.

The scanner understands just enough PostgreSQL lexical structure to find
statement boundaries reliably: single-quoted strings (with ``''`` escapes),
``E''`` strings (with backslash escapes), double-quoted identifiers,
dollar-quoted bodies (``$$ ... $$`` and ``$tag$ ... $tag$``), ``--`` line
comments and nested ``/* ... */`` block comments.  Unterminated constructs
run to the end of the input instead of raising.
"""

from __future__ import annotations

import bisect
import enum
import re
from dataclasses import dataclass

_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_SPECIAL_STARTS = frozenset("-/'\"$;eE")


class SegmentKind(enum.Enum):
    """What a :class:`Segment` of SQL text is."""

    CODE = "code"
    STRING = "string"
    IDENT = "ident"
    DOLLAR = "dollar"
    LINE_COMMENT = "line_comment"
    BLOCK_COMMENT = "block_comment"
    SEMICOLON = "semicolon"


_COMMENTS = (SegmentKind.LINE_COMMENT, SegmentKind.BLOCK_COMMENT)


@dataclass(frozen=True)
class Segment:
    """A lexical piece of SQL: ``text`` is the raw source starting at offset ``start``."""

    kind: SegmentKind
    text: str
    start: int

    @property
    def end(self) -> int:
        """Offset just past the segment."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a file.

    ``text`` is the statement without leading comments, without the trailing
    ``;`` and without surrounding whitespace or trailing comments.  ``line`` is
    the 1-based line of its first token.  ``comments`` holds the ``--`` comments
    (text after ``--``, stripped) between the previous statement's end and this
    statement, in order; a comment on the same line as the previous statement's
    ``;`` belongs to that statement and is not included.
    """

    text: str
    line: int
    comments: tuple[str, ...] = ()


def _is_ident_char(sql: str, pos: int) -> bool:
    return 0 <= pos < len(sql) and sql[pos] in _IDENT_CHARS


def _end_of_line_comment(sql: str, pos: int) -> int:
    newline = sql.find("\n", pos)
    return len(sql) if newline < 0 else newline


def _end_of_block_comment(sql: str, pos: int) -> int:
    depth, i = 0, pos
    while i < len(sql):
        pair = sql[i : i + 2]
        if pair == "/*":
            depth, i = depth + 1, i + 2
        elif pair == "*/":
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(sql)


def _end_of_quoted(sql: str, pos: int, quote: str, backslash: bool) -> int:
    """End of a quoted run opened at ``pos``; a doubled quote is an escaped quote."""
    i = pos + 1
    while i < len(sql):
        char = sql[i]
        if backslash and char == "\\":
            i += 2
        elif char == quote and sql[i + 1 : i + 2] == quote:
            i += 2
        elif char == quote:
            return i + 1
        else:
            i += 1
    return len(sql)


def _end_of_dollar(sql: str, pos: int, tag: str) -> int:
    close = sql.find(tag, pos + len(tag))
    return len(sql) if close < 0 else close + len(tag)


def _special_at(sql: str, pos: int) -> tuple[SegmentKind, int] | None:
    """If a non-code segment starts at ``pos``, return its kind and end offset."""
    char, pair = sql[pos], sql[pos : pos + 2]
    if pair == "--":
        return SegmentKind.LINE_COMMENT, _end_of_line_comment(sql, pos)
    if pair == "/*":
        return SegmentKind.BLOCK_COMMENT, _end_of_block_comment(sql, pos)
    if char == ";":
        return SegmentKind.SEMICOLON, pos + 1
    if char == "'":
        return SegmentKind.STRING, _end_of_quoted(sql, pos, "'", backslash=False)
    if pair in ("E'", "e'") and not _is_ident_char(sql, pos - 1):
        return SegmentKind.STRING, _end_of_quoted(sql, pos + 1, "'", backslash=True)
    if char == '"':
        return SegmentKind.IDENT, _end_of_quoted(sql, pos, '"', backslash=False)
    if char == "$" and not _is_ident_char(sql, pos - 1):
        match = _DOLLAR_TAG.match(sql, pos)
        if match:
            return SegmentKind.DOLLAR, _end_of_dollar(sql, pos, match.group())
    return None


def scan(sql: str) -> list[Segment]:
    """Split ``sql`` into consecutive segments that together cover the whole text."""
    segments: list[Segment] = []
    code_start, pos = 0, 0
    while pos < len(sql):
        special = _special_at(sql, pos) if sql[pos] in _SPECIAL_STARTS else None
        if special is None:
            pos += 1
            continue
        if code_start < pos:
            segments.append(Segment(SegmentKind.CODE, sql[code_start:pos], code_start))
        kind, end = special
        segments.append(Segment(kind, sql[pos:end], pos))
        code_start = pos = end
    if code_start < len(sql):
        segments.append(Segment(SegmentKind.CODE, sql[code_start:], code_start))
    return segments


def strip_comments(text: str) -> str:
    """Return ``text`` with ``--`` and ``/* */`` comments outside literals removed.

    Block comments become a single space so that the tokens around them stay
    apart; line comments are dropped (their newline is kept).
    """
    parts: list[str] = []
    for segment in scan(text):
        if segment.kind is SegmentKind.BLOCK_COMMENT:
            parts.append(" ")
        elif segment.kind is not SegmentKind.LINE_COMMENT:
            parts.append(segment.text)
    return "".join(parts)


def _significant_span(segment: Segment) -> tuple[int, int] | None:
    """Offsets of the non-whitespace part of a token-bearing segment, if any."""
    if segment.kind in _COMMENTS or segment.kind is SegmentKind.SEMICOLON:
        return None
    if segment.kind is not SegmentKind.CODE:
        return segment.start, segment.end
    stripped = segment.text.strip()
    if not stripped:
        return None
    offset = segment.text.index(stripped[0])
    return segment.start + offset, segment.start + offset + len(stripped)


class _Splitter:
    """Accumulates segments into statements (internal, single use)."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.newlines = [i for i, char in enumerate(sql) if char == "\n"]
        self.statements: list[Statement] = []
        self.comments: list[str] = []
        self.first: int | None = None
        self.last = 0
        self.boundary_line = 0

    def line_of(self, offset: int) -> int:
        """1-based line number of ``offset``."""
        return bisect.bisect_left(self.newlines, offset) + 1

    def feed(self, segment: Segment) -> None:
        """Consume the next segment."""
        if segment.kind is SegmentKind.SEMICOLON:
            self.finish()
            self.boundary_line = self.line_of(segment.start)
        elif segment.kind is SegmentKind.LINE_COMMENT:
            self.add_comment(segment)
        else:
            span = _significant_span(segment)
            if span is not None:
                self.first = span[0] if self.first is None else self.first
                self.last = span[1]

    def add_comment(self, segment: Segment) -> None:
        """Remember a ``--`` comment that precedes the current statement."""
        if self.first is None and self.line_of(segment.start) != self.boundary_line:
            self.comments.append(segment.text[2:].strip())

    def finish(self) -> None:
        """Close the current statement, if it has any tokens."""
        if self.first is None:
            return
        text = self.sql[self.first : self.last].strip()
        self.statements.append(Statement(text, self.line_of(self.first), tuple(self.comments)))
        self.first, self.comments = None, []


def split_statements(sql: str) -> list[Statement]:
    """Split a SQL file into its statements; empty statements are skipped."""
    splitter = _Splitter(sql)
    for segment in scan(sql):
        splitter.feed(segment)
    splitter.finish()
    return splitter.statements

