"""What a backfill is: which rows, what change, which rows cannot be done and why.

A definition is declarative and holds no state; the *run* (state, cursor, counters)
lives in `backfills.runs`, and the *executor* in `backfills.batch`. SQL fragments refer
to the table the batches walk by the alias `t`.

Two kinds: an *update* changes rows of its table in place (`needs` + `sets`); a *copy*
(`into`) inserts the rows of its table (the source) whose key is not yet in another
table (the target). Both run through the same engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Backfill", "CopyInto", "DefinitionError"]

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class DefinitionError(Exception):
    """A backfill definition is malformed."""


def _check_ident(backfill: str, label: str, ident: str) -> None:
    if not _IDENT.match(ident):
        raise DefinitionError(f"backfill {backfill!r}: {label} {ident!r} is not a plain lower-case identifier")


@dataclass(frozen=True)
class CopyInto:
    """The target of a copy backfill.

    - `table`: the target table; it shares the definition's `key` columns with the source.
    - `columns`: target column -> SQL expression over the source row, alias `s`.
    """

    table: str
    columns: Mapping[str, str]
    schema: str = "public"

    @property
    def qualified_table(self) -> str:
        """`schema.table`, quoted."""
        return f'"{self.schema}"."{self.table}"'

    def validate(self, backfill: str, key: tuple[str, ...]) -> None:
        """Refuse a target without columns, or one that does not receive the key."""
        for label, ident in (("target table", self.table), ("target schema", self.schema),
                             *(("target column", c) for c in self.columns)):
            _check_ident(backfill, label, ident)
        if not key:
            raise DefinitionError(f"backfill {backfill!r} copies rows: name the key the tables share (`key`)")
        missing = [k for k in key if k not in self.columns]
        if missing:
            raise DefinitionError(f"backfill {backfill!r} copies rows but does not fill the key {', '.join(missing)}")


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
    - `into`: makes it a copy: `table` is the source, rows go to `into.table`; `needs`
      is then derived (the key is not in the target) and `sets` stays empty.
    """

    name: str
    table: str
    description: str
    needs: str = ""
    sets: Mapping[str, str] = field(default_factory=dict)
    invalid_reason: str | None = None
    key: tuple[str, ...] = ()
    tenant_column: str | None = None
    schema: str = "public"
    tags: tuple[str, ...] = field(default_factory=tuple)
    into: CopyInto | None = None

    def __post_init__(self) -> None:
        for label, ident in (("name", self.name), ("table", self.table), ("schema", self.schema),
                             *(("column", c) for c in self.sets), *(("key", k) for k in self.key)):
            _check_ident(self.name, label, ident)
        if self.tenant_column is not None and not _IDENT.match(self.tenant_column):
            raise DefinitionError(f"backfill {self.name!r}: tenant_column {self.tenant_column!r} is not an identifier")
        if self.into is not None:
            self._derive_copy(self.into)
        if not self.sets and self.into is None:
            raise DefinitionError(f"backfill {self.name!r} sets no column")
        if not self.needs.strip():
            raise DefinitionError(f"backfill {self.name!r} has an empty `needs` predicate")

    def _derive_copy(self, into: CopyInto) -> None:
        """A copy's rows to do are the source rows whose key the target lacks, each looked
        up in the target's key index (`OFFSET 0` keeps the planner from turning the probe
        into an anti-join, which may read the whole target for every batch)."""
        into.validate(self.name, self.key)
        match = " AND ".join(f'target."{k}" = t."{k}"' for k in self.key)
        derived = f"NOT EXISTS (SELECT 1 FROM {into.qualified_table} target WHERE {match} OFFSET 0)"
        if self.sets or self.invalid_reason or self.needs not in ("", derived):
            raise DefinitionError(f"backfill {self.name!r} copies rows: `needs`, `sets` and `invalid_reason` "
                                  f"belong to in-place backfills (the target's constraints decide what fails)")
        object.__setattr__(self, "needs", derived)

    @property
    def kind(self) -> str:
        """`update` (rows changed in place) or `copy` (missing rows inserted elsewhere)."""
        return "update" if self.into is None else "copy"

    @property
    def qualified_table(self) -> str:
        """`schema.table`, quoted."""
        return f'"{self.schema}"."{self.table}"'

    @property
    def tenant_scopable(self) -> bool:
        """Whether `--tenant` runs are allowed."""
        return self.tenant_column is not None
