"""The pure planner: what `up` or `down` would do, given the files and what is applied.

No IO here: the executor reads `schema_migrations`, calls these functions and applies
the steps they return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from migrations.files import TOOL_TRACK_START, MigrationError, MigrationFile

__all__ = ["Applied", "check_drift", "pending", "to_revert", "status_rows"]


@dataclass(frozen=True)
class Applied:
    """A row of `schema_migrations`."""

    version: str
    name: str
    checksum: str
    applied_at: datetime | None = None
    duration_ms: int | None = None


def check_drift(files: Sequence[MigrationFile], applied: Sequence[Applied]) -> None:
    """Refuse when an applied migration's file changed or disappeared."""
    by_version = {f.version: f for f in files}
    for row in applied:
        current = by_version.get(row.version)
        if current is None:
            raise MigrationError(
                f"migration {row.version}_{row.name} is applied but its file is missing; "
                f"restore the file or revert it with its down file"
            )
        if current.checksum != row.checksum:
            raise MigrationError(
                f"migration {current.filename} was changed after it was applied "
                f"(checksum {row.checksum[:12]} applied, {current.checksum[:12]} on disk); "
                f"applied migrations are immutable: write a new migration instead"
            )


def _known_version(files: Sequence[MigrationFile], version: str) -> str:
    normalized = version.zfill(3) if version.isdigit() else version
    if normalized not in {f.version for f in files}:
        known = ", ".join(f.version for f in files)
        raise MigrationError(f"unknown migration version {version!r}; known versions: {known}")
    return normalized


def pending(
    files: Sequence[MigrationFile], applied: Sequence[Applied], target: str | None = None
) -> list[MigrationFile]:
    """Migrations `up` applies, in order: this tool's track first, then the application's.

    With an application `target`, application migrations stop at that version (inclusive)
    and the tool's own track is brought up to date, since nothing else works without it.
    With a tool-track `target` (>= 100), only the tool's track is applied, up to it.
    """
    check_drift(files, applied)
    limit = _known_version(files, target) if target is not None else None
    done = {row.version for row in applied}
    todo = [f for f in files if f.version not in done]
    if limit is not None and int(limit) >= TOOL_TRACK_START:
        return [f for f in todo if f.track == "tool" and f.version <= limit]
    tool = [f for f in todo if f.track == "tool"]
    app = [f for f in todo if f.track == "app" and (limit is None or f.version <= limit)]
    return tool + app


def to_revert(
    files: Sequence[MigrationFile], applied: Sequence[Applied], version: str
) -> list[MigrationFile]:
    """Migrations `down VERSION` reverts, newest first: every applied one of VERSION's
    track at or above VERSION. Refuses when one of them has no down file."""
    check_drift(files, applied)
    target = _known_version(files, version)
    track = next(f.track for f in files if f.version == target)
    done = {row.version for row in applied}
    steps = [f for f in reversed(files) if f.version in done and f.track == track and f.version >= target]
    missing = [f.filename for f in steps if f.down_sql is None]
    if missing:
        raise MigrationError(f"cannot revert: no down file for {', '.join(missing)}")
    return steps


def status_rows(files: Sequence[MigrationFile], applied: Sequence[Applied]) -> list[dict[str, object]]:
    """One row per migration: version, name, applied, applied_at, requires_backfill."""
    by_version = {row.version: row for row in applied}
    rows = []
    for f in files:
        row = by_version.get(f.version)
        rows.append({
            "version": f.version,
            "name": f.name,
            "applied": row is not None,
            "applied_at": row.applied_at.isoformat() if row and row.applied_at else None,
            "requires_backfill": list(f.requires_backfill),
        })
    return rows
