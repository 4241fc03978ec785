"""What a backfill is: which rows, what change, which rows cannot be done and why.

A definition is declarative and holds no state; the *run* (state, cursor, counters)
lives in `backfills.runs`, and the *executor* in `backfills.batch`. SQL fragments refer
to the target table by the alias `t`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Backfill", "DefinitionError"]

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class DefinitionError(Exception):
    """A backfill definition is malformed."""


@dataclass(frozen=True)
class Backfill:
    """A backfill definition.

    - `needs`: SQL predicate over `t` for rows that still need the backfill.
    - `sets`: column -> SQL expression over `t`, the new values.
    - `invalid_reason`: optional SQL expression over `t` giving why a row cannot be done
      (text) or NULL when it can. Such rows are recorded as row errors and left as is.
    - `key`: the key columns, in index order; empty means the table's primary key.
    - `tenant_column`: the column that scopes a row to a tenant, or None when the
      backfill cannot be scoped to one tenant (`--tenant` is then refused).
    """

    name: str
    table: str
    description: str
    needs: str
    sets: Mapping[str, str]
    invalid_reason: str | None = None
    key: tuple[str, ...] = ()
    tenant_column: str | None = None
    schema: str = "public"
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for label, ident in (("name", self.name), ("table", self.table), ("schema", self.schema),
                             *(("column", c) for c in self.sets), *(("key", k) for k in self.key)):
            if not _IDENT.match(ident):
                raise DefinitionError(f"backfill {self.name!r}: {label} {ident!r} is not a plain lower-case identifier")
        if self.tenant_column is not None and not _IDENT.match(self.tenant_column):
            raise DefinitionError(f"backfill {self.name!r}: tenant_column {self.tenant_column!r} is not an identifier")
        if not self.sets:
            raise DefinitionError(f"backfill {self.name!r} sets no column")
        if not self.needs.strip():
            raise DefinitionError(f"backfill {self.name!r} has an empty `needs` predicate")

    @property
    def qualified_table(self) -> str:
        """`schema.table`, quoted."""
        return f'"{self.schema}"."{self.table}"'

    @property
    def tenant_scopable(self) -> bool:
        """Whether `--tenant` runs are allowed."""
        return self.tenant_column is not None
