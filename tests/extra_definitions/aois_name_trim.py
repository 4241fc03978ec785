"""A fifth backfill, defined only here: trim whitespace around AOI names."""

from backfills.definition import Backfill

BACKFILL = Backfill(
    name="aois_name_trim",
    table="aois",
    description="Trim surrounding whitespace from aois.name.",
    needs="t.name <> btrim(t.name)",
    sets={"name": "btrim(t.name)"},
    tenant_column="tenant_id",
)
