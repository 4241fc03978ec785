"""Static checks that flag migration SQL which would lock or rewrite large tables.

Each statement is normalised before matching: comments are dropped, string
literals become ``''``, quoted identifiers are lower-cased, whitespace is
collapsed.  The bodies of ``DO`` blocks are split and checked statement by
statement; other dollar-quoted bodies (``CREATE FUNCTION`` and the like) are
opaque.  A rule can be waived for one statement with a comment line directly
above it: ``-- lint: allow RULE because REASON``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from migrations.sqltext import Segment, SegmentKind, Statement, scan, split_statements

RULES: dict[str, str] = {
    "create-index-concurrently": (
        "Use CREATE INDEX CONCURRENTLY in a file headed `-- migrate: no-transaction`."
    ),
    "add-column-not-null": (
        "Add the column nullable, backfill it, then ADD CONSTRAINT ... CHECK (col IS NOT NULL)"
        " NOT VALID, VALIDATE CONSTRAINT, and SET NOT NULL."
    ),
    "alter-column-type": (
        "Expand/contract: add a new column of the new type, backfill it, switch reads,"
        " drop the old column."
    ),
    "set-not-null": (
        "First ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT,"
        " then SET NOT NULL."
    ),
    "constraint-not-valid": (
        "Add the constraint NOT VALID, then VALIDATE CONSTRAINT in a separate"
        " statement/transaction."
    ),
    "bulk-data-change": (
        "Bulk data changes belong in a backfill (`backfill enqueue`), not in a migration."
    ),
    "rename": (
        "Expand/contract: add the new name, dual-write, switch reads, then drop the old name."
    ),
    "bad-waiver": (
        "Write waivers as `-- lint: allow RULE because REASON` with a known rule id"
        " and a non-empty reason."
    ),
}

_WORD = r'[\w"$]'
_BOUNDARY = rf"(?:(?<!{_WORD})(?={_WORD})|(?<={_WORD})(?!{_WORD}))"
_IDENT = r'(?:"[^"]*"|[a-z_][\w$]*)'
_QNAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT}){{0,2}}"


def _rx(pattern: str) -> re.Pattern[str]:
    r"""Compile ``pattern``; ``\b`` treats quoted identifiers as single words."""
    return re.compile(pattern.replace(r"\b", _BOUNDARY))


_DO = _rx(r"^do\b")
_CREATE_TABLE = _rx(
    r"\bcreate\s+(?:(?:global|local)\s+)?(?:(?:temp|temporary|unlogged)\s+)?table\s+"
    rf"(?:if\s+not\s+exists\s+)?(?P<table>{_QNAME})"
)
_CREATE_INDEX = _rx(
    r"\bcreate\s+(?:unique\s+)?index\s+(?P<conc>concurrently\s+)?(?:if\s+not\s+exists\s+)?"
    rf"(?:(?!on\b){_IDENT}\s+)?on\s+(?:only\s+)?(?P<table>{_QNAME})"
)
_ALTER_TABLE = _rx(
    rf"\balter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?(?P<table>{_QNAME})"
    r"(?:\s*\*)?\s*(?P<actions>.*)$"
)
_ALTER_INDEX_RENAME = _rx(rf"\balter\s+index\s+(?:if\s+exists\s+)?(?P<index>{_QNAME})\s+rename\b")
_ADD_COLUMN = _rx(
    r"^add\s+(?:column\s+)?+(?:if\s+not\s+exists\s+)?"
    rf"(?!(?:constraint|primary|unique|foreign|check|exclude)\b)(?P<col>{_IDENT})\s"
)
_ADD_CONSTRAINT = _rx(
    rf"^add\s+(?:constraint\s+(?P<name>{_IDENT})\s+)?(?P<kind>foreign\s+key|check)\b"
)
_CHECK_BODY = _rx(r"^check\s*\((?P<expr>.*)\)(?:\s*no\s+inherit)?(?:\s*not\s+valid)?$")
_IS_NOT_NULL = _rx(rf"^(?P<col>{_IDENT})\s+is\s+not\s+null$")
_VALIDATE = _rx(rf"^validate\s+constraint\s+(?P<name>{_IDENT})\b")
_ALTER_TYPE = _rx(rf"^alter\s+(?:column\s+)?+(?P<col>{_IDENT})\s+(?:set\s+data\s+)?type\b")
_SET_NOT_NULL = _rx(rf"^alter\s+(?:column\s+)?+(?P<col>{_IDENT})\s+set\s+not\s+null\b")
_RENAME = _rx(r"^rename\b")
_NOT_NULL = _rx(r"(?<!is )\bnot\s+null\b")
_NOT_VALID = _rx(r"\bnot\s+valid\b")
_DEFAULT = _rx(r"\bdefault\b")
_REFERENCES = _rx(r"\breferences\b")
_UPDATE = _rx(
    r"\bupdate\s+(?:only\s+)?"
    rf"(?P<table>{_QNAME})(?:\s*\*)?\s+(?:(?:as\s+)?{_IDENT}\s+)?set\b"
)
_DELETE = _rx(rf"\bdelete\s+from\s+(?:only\s+)?(?P<table>{_QNAME})")
_INSERT = _rx(rf"\binsert\s+into\s+(?P<table>{_QNAME})")
_INSERT_VALUES = _rx(
    rf"^\s*(?:as\s+{_IDENT}\s*)?(?:\(\)\s*)?(?:overriding\s+\w+\s+value\s+)?"
    r"(?:default\s+)?values\b"
)
_WAIVER_START = re.compile(r"^lint\s*:", re.IGNORECASE)
_WAIVER = re.compile(
    r"^lint\s*:\s*allow\s+(?P<rule>[\w-]+)(?:\s+because\b(?P<reason>.*))?$", re.IGNORECASE
)


@dataclass(frozen=True)
class Finding:
    """One problem found in a migration file."""

    path: str
    line: int
    rule: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message} Fix: {self.fix}"


@dataclass(frozen=True)
class _FileState:
    """What earlier statements of the file established (the sets grow as we go)."""

    created: set[str] = field(default_factory=set)
    checks: dict[tuple[str, str], str] = field(default_factory=dict)
    validated: set[tuple[str, str]] = field(default_factory=set)

    def proven_not_null(self, table: str, column: str) -> bool:
        """Whether a validated ``CHECK (column IS NOT NULL)`` exists on ``table``."""
        return any(
            checked == column and (tbl, name) in self.validated
            for (tbl, name), checked in self.checks.items()
            if tbl == table
        )


_Hit = tuple[str, str]


def _bare(name: str) -> str:
    """Unqualified, unquoted, lower-case form of a possibly qualified name."""
    return name.split(".")[-1].strip().strip('"')


def _display(name: str) -> str:
    """A qualified name as shown in messages."""
    return ".".join(part.strip().strip('"') for part in name.split("."))


def _dollar_body(text: str) -> str:
    tag = re.match(r"\$[^$]*\$", text)
    assert tag is not None
    end = len(text) - len(tag.group())
    if end >= tag.end() and text.endswith(tag.group()):
        return text[tag.end() : end]
    return text[tag.end() :]


def _normal_ident(text: str) -> str:
    inner = text[1:-1] if text.endswith('"') and len(text) > 1 else text[1:]
    return '"' + re.sub(r"\W", "_", inner.replace('""', '"').lower()) + '"'


def _normal_piece(segment: Segment) -> str:
    kind = segment.kind
    if kind is SegmentKind.CODE:
        return segment.text.lower()
    if kind is SegmentKind.STRING:
        return " '' "
    if kind is SegmentKind.IDENT:
        return _normal_ident(segment.text)
    if kind is SegmentKind.DOLLAR:
        return " $$ "
    return " "


def _clauses(text: str) -> list[str]:
    """The normalised statement, then (for a DO block) the statements of its body."""
    pieces: list[str] = []
    nested: list[str] = []
    for segment in scan(text):
        pieces.append(_normal_piece(segment))
        if segment.kind is SegmentKind.DOLLAR and _DO.match("".join(pieces).strip()):
            for inner in split_statements(_dollar_body(segment.text)):
                nested.extend(_clauses(inner.text))
    return [re.sub(r"\s+", " ", "".join(pieces)).strip(), *nested]


def _depth0(text: str) -> str:
    """``text`` with the contents of parentheses removed (``f(a, b)`` -> ``f()``)."""
    out: list[str] = []
    depth = 0
    for char in text:
        if char == ")":
            depth = max(depth - 1, 0)
        if depth == 0:
            out.append(char)
        if char == "(":
            depth += 1
    return "".join(out)


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = start = 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def _check_add_column(table: str, action: str, state: _FileState) -> Iterator[_Hit]:
    match = _ADD_COLUMN.match(action)
    if match is None or _bare(table) in state.created:
        return
    column, flat = _bare(match["col"]), _depth0(action)
    if _NOT_NULL.search(flat) and not _DEFAULT.search(flat):
        yield "add-column-not-null", (
            f"Adding NOT NULL column {column} without a DEFAULT to existing table"
            f" {_display(table)} fails on a non-empty table and holds an ACCESS EXCLUSIVE lock."
        )
    if _REFERENCES.search(flat):
        yield "constraint-not-valid", (
            f"Adding column {column} with an inline REFERENCES to existing table"
            f" {_display(table)} validates the foreign key at once (it cannot be NOT VALID),"
            " blocking writes during the scan."
        )


def _check_add_constraint(table: str, action: str, state: _FileState) -> Iterator[_Hit]:
    match = _ADD_CONSTRAINT.match(action)
    if match is None:
        return
    body = _CHECK_BODY.match(action[match.start("kind") :])
    if match["name"] and body:
        expr = body["expr"].replace("(", " ").replace(")", " ").strip()
        is_not_null = _IS_NOT_NULL.match(re.sub(r"\s+", " ", expr))
        if is_not_null:
            state.checks[(_bare(table), _bare(match["name"]))] = _bare(is_not_null["col"])
    if _bare(table) not in state.created and not _NOT_VALID.search(_depth0(action)):
        kind = " ".join(match["kind"].upper().split())
        yield "constraint-not-valid", (
            f"Adding a {kind} constraint to existing table {_display(table)} without NOT VALID"
            " scans the whole table while holding a lock that blocks writes."
        )


def _check_alter_column(table: str, action: str, state: _FileState) -> Iterator[_Hit]:
    typed = _ALTER_TYPE.match(action)
    if typed:
        yield "alter-column-type", (
            f"Changing the type of column {_bare(typed['col'])} on {_display(table)}"
            " rewrites the table under an ACCESS EXCLUSIVE lock."
        )
    not_null = _SET_NOT_NULL.match(action)
    if not_null and not state.proven_not_null(_bare(table), _bare(not_null["col"])):
        column = _bare(not_null["col"])
        yield "set-not-null", (
            f"SET NOT NULL on {_display(table)}.{column} scans the whole table under an"
            f" ACCESS EXCLUSIVE lock unless a validated CHECK ({column} IS NOT NULL) exists."
        )


def _check_action(table: str, action: str, state: _FileState) -> Iterator[_Hit]:
    yield from _check_add_column(table, action, state)
    yield from _check_add_constraint(table, action, state)
    yield from _check_alter_column(table, action, state)
    validate = _VALIDATE.match(action)
    if validate:
        state.validated.add((_bare(table), _bare(validate["name"])))
    if _RENAME.match(action):
        yield "rename", (
            f"Renaming on {_display(table)} breaks running application code that still"
            " uses the old name."
        )


def _check_alter_table(clause: str, state: _FileState) -> Iterator[_Hit]:
    match = _ALTER_TABLE.search(clause)
    if match is None:
        return
    for action in _split_top(match["actions"]):
        yield from _check_action(match["table"], action, state)


def _check_index(clause: str, state: _FileState) -> Iterator[_Hit]:
    created = _CREATE_INDEX.search(clause)
    if created and not created["conc"] and _bare(created["table"]) not in state.created:
        yield "create-index-concurrently", (
            f"CREATE INDEX on existing table {_display(created['table'])} without CONCURRENTLY"
            " takes a SHARE lock that blocks writes for the whole index build."
        )
    renamed = _ALTER_INDEX_RENAME.search(clause)
    if renamed:
        yield "rename", (
            f"Renaming index {_display(renamed['index'])} breaks running code and tooling"
            " that still use the old name."
        )


def _bulk_verb(clause: str) -> tuple[str, str] | None:
    for verb, pattern in (("UPDATE", _UPDATE), ("DELETE", _DELETE)):
        match = pattern.search(clause)
        if match:
            return verb, match["table"]
    flat = _depth0(clause)
    insert = _INSERT.search(flat)
    if insert and not _INSERT_VALUES.match(flat[insert.end() :]):
        return "INSERT ... SELECT", insert["table"]
    return None


def _check_bulk(clause: str) -> Iterator[_Hit]:
    found = _bulk_verb(clause)
    if found:
        yield "bulk-data-change", (
            f"{found[0]} on {_display(found[1])} changes rows in bulk inside the migration,"
            " holding row locks for the whole transaction and bloating the table."
        )


def _check_clause(clause: str, state: _FileState) -> Iterator[_Hit]:
    table = _CREATE_TABLE.search(clause)
    if table:
        state.created.add(_bare(table["table"]))
    yield from _check_index(clause, state)
    yield from _check_alter_table(clause, state)
    yield from _check_bulk(clause)


def _waiver_problem(comment: str) -> tuple[str | None, str | None]:
    """Parse a waiver comment: ``(rule, None)`` if valid, ``(None, problem)`` if not."""
    match = _WAIVER.match(comment)
    if match is None:
        return None, f"'{comment}' is not of the form 'lint: allow RULE because REASON'"
    rule = match["rule"].lower()
    if rule not in RULES or rule == "bad-waiver":
        return None, f"'{comment}' names unknown rule '{match['rule']}'"
    if not (match["reason"] or "").strip():
        return None, f"'{comment}' gives no reason after 'because'"
    return rule, None


def _waivers(comments: tuple[str, ...]) -> tuple[set[str], list[str]]:
    """Rules waived by ``comments`` and the problems with malformed waivers."""
    allowed: set[str] = set()
    problems: list[str] = []
    for comment in comments:
        if not _WAIVER_START.match(comment):
            continue
        rule, problem = _waiver_problem(comment)
        if rule:
            allowed.add(rule)
        if problem:
            problems.append(problem)
    return allowed, problems


def _lint_statement(statement: Statement, state: _FileState, path: str) -> list[Finding]:
    hits: dict[str, str] = {}
    for clause in _clauses(statement.text):
        for rule, message in _check_clause(clause, state):
            hits.setdefault(rule, message)
    allowed, problems = _waivers(statement.comments)
    findings = [
        Finding(path, statement.line, rule, message, RULES[rule])
        for rule, message in hits.items()
        if rule not in allowed
    ]
    if problems:
        message = "Malformed lint waiver ignored (it waives nothing): " + "; ".join(problems) + "."
        findings.append(Finding(path, statement.line, "bad-waiver", message, RULES["bad-waiver"]))
    return findings


def lint_sql(sql: str, path: str = "<sql>") -> list[Finding]:
    """Check one migration file's SQL and return its findings in file order."""
    state = _FileState()
    findings: list[Finding] = []
    for statement in split_statements(sql):
        findings.extend(_lint_statement(statement, state, path))
    return findings
