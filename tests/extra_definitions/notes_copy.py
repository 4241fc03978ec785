"""A copy backfill defined only here: notes_old -> notes_new, bodies trimmed on the way.
The tables are created by the tests that use it (tests/support/copies.py)."""

from backfills.definition import Backfill, CopyInto

BACKFILL = Backfill(
    name="notes_copy",
    table="notes_old",
    description="Copy the notes of notes_old that notes_new lacks, bodies trimmed.",
    key=("id",),
    into=CopyInto(table="notes_new", columns={"id": "s.id", "tenant_id": "s.tenant_id",
                                              "body": "btrim(s.body)", "created_at": "s.created_at"}),
    tenant_column="tenant_id",
)
