-- migrate: no-transaction
--
-- down 018_jobs_tenant_id_not_null_fk: back to a nullable jobs.tenant_id
-- without foreign key and without idx_jobs_tenant_status_created.
--
-- DROP NOT NULL and DROP CONSTRAINT are catalog-only (short ACCESS
-- EXCLUSIVE lock on jobs, and on tenants for the foreign key triggers). The
-- index is dropped CONCURRENTLY so jobs stays writable, which is why this
-- file is no-transaction. The constraints are dropped before the index that
-- serves the ON DELETE CASCADE. Every statement is a no-op when already
-- done, so the file can be re-run. The helper CHECK of 018 is dropped too,
-- in case a failed run left it behind.

ALTER TABLE jobs ALTER COLUMN tenant_id DROP NOT NULL;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_tenant_id_not_null;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_tenant_fk;
DROP INDEX CONCURRENTLY IF EXISTS idx_jobs_tenant_status_created;
