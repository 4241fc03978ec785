"""Migration files on disk: `sql/NNN_name.sql` with reverts in `sql/down/NNN_name.sql`.

Header directives are comment lines before the first statement:
`-- migrate: no-transaction` and `-- requires-backfill: NAME`.
Versions below 100 are the application's schema; 100 and above are this tool's own
tables (schema `backfill`), a separate track that `migrate up` applies first.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MigrationError", "MigrationFile", "SQL_DIR", "load_migrations", "TOOL_TRACK_START"]

SQL_DIR = Path(__file__).parent / "sql"
TOOL_TRACK_START = 100
_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_DIRECTIVE_RE = re.compile(r"^--\s*(migrate|requires-backfill)\s*:\s*(.+?)\s*$", re.IGNORECASE)


class MigrationError(Exception):
    """A migration cannot be planned or applied; the message says which and why."""


@dataclass(frozen=True)
class MigrationFile:
    """One migration: its version, name, SQL, revert SQL and header directives."""

    version: str
    name: str
    sql: str
    down_sql: str | None
    transactional: bool
    down_transactional: bool
    requires_backfill: tuple[str, ...]

    @property
    def checksum(self) -> str:
        """sha256 of the up file: an applied file whose checksum changed is drift."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def track(self) -> str:
        """`app` for the application's schema (< 100), `tool` for this tool's own tables."""
        return "tool" if int(self.version) >= TOOL_TRACK_START else "app"

    @property
    def filename(self) -> str:
        """`NNN_name.sql`."""
        return f"{self.version}_{self.name}.sql"


def parse_directives(sql: str) -> tuple[bool, tuple[str, ...]]:
    """(transactional, required backfills) from the header comment lines of `sql`."""
    transactional, requires = True, list[str]()
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        match = _DIRECTIVE_RE.match(stripped)
        if not match:
            continue
        key, value = match.group(1).lower(), match.group(2)
        if key == "migrate" and value.lower() == "no-transaction":
            transactional = False
        elif key == "requires-backfill":
            requires.extend(name.strip() for name in value.split(",") if name.strip())
    return transactional, tuple(requires)


def _read_one(path: Path, down_dir: Path) -> MigrationFile:
    match = _FILE_RE.match(path.name)
    assert match is not None
    sql = path.read_text()
    down_path = down_dir / path.name
    down_sql = down_path.read_text() if down_path.exists() else None
    transactional, requires = parse_directives(sql)
    down_transactional = parse_directives(down_sql)[0] if down_sql is not None else True
    return MigrationFile(match.group(1), match.group(2), sql, down_sql, transactional,
                         down_transactional, requires)


def load_migrations(directory: Path = SQL_DIR) -> list[MigrationFile]:
    """Every migration in `directory`, sorted by version; refuses malformed or duplicate names."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    files: dict[str, MigrationFile] = {}
    for path in sorted(directory.glob("*.sql")):
        if not _FILE_RE.match(path.name):
            raise MigrationError(f"{path.name}: migration files are named NNN_lower_snake_name.sql")
        migration = _read_one(path, directory / "down")
        if migration.version in files:
            raise MigrationError(
                f"two migrations share version {migration.version}: "
                f"{files[migration.version].filename} and {migration.filename}"
            )
        files[migration.version] = migration
    return [files[v] for v in sorted(files)]
