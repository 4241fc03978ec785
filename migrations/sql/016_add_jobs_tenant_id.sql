-- 016_add_jobs_tenant_id: EXPAND step, nullable jobs.tenant_id UUID.
--
-- What: jobs gets its own tenant_id so that tenant-scoped job queries no
-- longer need to join aois. The column is nullable and has no foreign key
-- yet. The application starts writing it for new jobs, the jobs_tenant_id
-- backfill copies the tenant of jobs.aoi_id for existing rows, and 018
-- (contract) adds the foreign key jobs_tenant_fk, NOT NULL and the index
-- idx_jobs_tenant_status_created.
--
-- Locks: nullable column, no default, so catalog-only, short ACCESS
-- EXCLUSIVE lock on jobs. IF NOT EXISTS makes a re-run a no-op.

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS tenant_id uuid;
