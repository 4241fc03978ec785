-- down 016_add_jobs_tenant_id: drops jobs.tenant_id.
--
-- Catalog-only, short ACCESS EXCLUSIVE lock on jobs. The backfilled values
-- are lost, but they can always be derived again from jobs.aoi_id.

ALTER TABLE jobs DROP COLUMN IF EXISTS tenant_id;
