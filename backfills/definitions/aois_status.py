"""aois.status NULL -> 'ACTIVE' (expand 014, contract 017)."""

from backfills.definition import Backfill

BACKFILL = Backfill(
    name="aois_status",
    table="aois",
    description="Set aois.status to 'ACTIVE' where it is NULL, before 017 makes it NOT NULL.",
    needs="t.status IS NULL",
    sets={"status": "'ACTIVE'"},
    tenant_column="tenant_id",
)
