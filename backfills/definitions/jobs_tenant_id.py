"""jobs.tenant_id from the job's AOI (expand 016, contract 018)."""

from backfills.definition import Backfill

BACKFILL = Backfill(
    name="jobs_tenant_id",
    table="jobs",
    description="Set jobs.tenant_id to the tenant of the job's AOI, before 018 makes it NOT NULL with a FK.",
    needs="t.tenant_id IS NULL",
    sets={"tenant_id": "(SELECT a.tenant_id FROM public.aois a WHERE a.id = t.aoi_id)"},
    invalid_reason="""CASE
        WHEN t.aoi_id IS NULL THEN 'aoi_id is NULL: no AOI to take the tenant from'
        WHEN NOT EXISTS (SELECT 1 FROM public.aois a WHERE a.id = t.aoi_id)
            THEN 'AOI ' || t.aoi_id::text || ' does not exist'
    END""",
    tenant_column=None,  # these rows have no tenant yet: a tenant-scoped run is meaningless
)
