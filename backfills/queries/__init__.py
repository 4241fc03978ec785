"""Named SQL queries kept in `.sql` files next to this module.

A line `-- name: create_run` starts a query; its text runs up to the next `-- name:`
line (or the end of the file). Comment lines before the first name are a file header
and ignored. A trailing `;` is dropped, so each query is one statement for `sa.text()`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["QUERY_DIR", "QueryFileError", "load_queries", "parse_queries"]

QUERY_DIR = Path(__file__).parent
_NAME_RE = re.compile(r"^--\s*name:\s*(\S*)\s*$")
_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


class QueryFileError(ValueError):
    """A query file is malformed (duplicate or bad name, empty query, stray SQL)."""


def _finish(queries: dict[str, str], name: str, lines: list[str], source: str) -> None:
    text = "\n".join(lines).strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise QueryFileError(f"{source}: query {name!r} is empty")
    queries[name] = text


def _start(queries: dict[str, str], name: str, lineno: int, source: str) -> str:
    if not _IDENT_RE.match(name):
        raise QueryFileError(f"{source}:{lineno}: {name!r} is not a valid query name")
    if name in queries:
        raise QueryFileError(f"{source}:{lineno}: query {name!r} is defined twice")
    return name


def parse_queries(text: str, source: str = "<string>") -> dict[str, str]:
    """Split `text` into `{name: sql}`; raises `QueryFileError` on a malformed file."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        match = _NAME_RE.match(line.strip())
        if match:
            if name is not None:
                _finish(queries, name, lines, source)
            name, lines = _start(queries, match.group(1), lineno, source), []
        elif name is not None:
            lines.append(line)
        elif line.strip() and not line.strip().startswith("--"):
            raise QueryFileError(f"{source}:{lineno}: SQL before the first `-- name:` line")
    if name is not None:
        _finish(queries, name, lines, source)
    return queries


@functools.cache
def load_queries(filename: str) -> dict[str, str]:
    """The named queries of `filename` in this package's directory (read once, cached).

    The returned dict is shared between callers: treat it as read-only.
    """
    path = QUERY_DIR / filename
    return parse_queries(path.read_text(encoding="utf-8"), source=filename)
