-- migrate: no-transaction
-- requires-backfill: jobs_tenant_id
--
-- 018_jobs_tenant_id_not_null_fk: CONTRACT step for jobs.tenant_id.
--
-- What: after 016 (nullable jobs.tenant_id), the application writing it for
-- new jobs and the jobs_tenant_id backfill filling old ones:
--   * idx_jobs_tenant_status_created on jobs (tenant_id, status, created_at),
--     the tenant query index of the runbook (006 could not build it, jobs
--     had no tenant_id then). It also serves the ON DELETE CASCADE of the
--     foreign key below, so it is built first: once the foreign key exists,
--     deleting a tenant must not scan all of jobs.
--   * foreign key jobs_tenant_fk (tenant_id) -> tenants (id) ON DELETE CASCADE
--   * tenant_id NOT NULL
-- Applied only when backfill verify jobs_tenant_id is 0.
--
-- Locks, step by step (no-transaction: each statement is its own
-- transaction, so no strong lock is ever held during a scan):
--   1. CREATE INDEX CONCURRENTLY: SHARE UPDATE EXCLUSIVE, jobs stays
--      readable and writable. Cannot run in a transaction block anyway.
--   2. ADD CONSTRAINT jobs_tenant_fk ... NOT VALID: short SHARE ROW
--      EXCLUSIVE on jobs and tenants, no scan. New writes are checked.
--   3. VALIDATE CONSTRAINT jobs_tenant_fk: scans jobs holding SHARE UPDATE
--      EXCLUSIVE on jobs and ROW SHARE on tenants, writes go on.
--   4. ADD CONSTRAINT jobs_tenant_id_not_null CHECK (tenant_id IS NOT NULL)
--      NOT VALID: short lock, no scan.
--   5. VALIDATE it: scan under SHARE UPDATE EXCLUSIVE.
--   6. SET NOT NULL: PostgreSQL 12+ uses the validated CHECK and skips the
--      scan, short ACCESS EXCLUSIVE lock.
--   7. DROP the redundant CHECK, catalog-only.
-- From step 2 on, a write of a job without tenant_id fails, so every
-- running version of the application must already write tenant_id.
--
-- Idempotent: a failed file is re-run from the top. An INVALID leftover of
-- a failed CONCURRENTLY build is dropped by the runner (DROP INDEX
-- CONCURRENTLY) before CREATE INDEX IF NOT EXISTS runs again. The
-- constraints are added only when missing (looked up in pg_constraint) and
-- validated only when not yet valid. SET NOT NULL and DROP CONSTRAINT IF
-- EXISTS are no-ops once done.

-- 1. Index
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_jobs_tenant_status_created
    ON jobs (tenant_id, status, created_at);

-- 2. Foreign key, not checked for existing rows yet
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'jobs'::regclass
                     AND conname = 'jobs_tenant_fk') THEN
        ALTER TABLE jobs
            ADD CONSTRAINT jobs_tenant_fk
            FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
            NOT VALID;
    END IF;
END
$$;

-- 3. Check existing rows against tenants
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'jobs'::regclass
                 AND conname = 'jobs_tenant_fk'
                 AND NOT convalidated) THEN
        ALTER TABLE jobs VALIDATE CONSTRAINT jobs_tenant_fk;
    END IF;
END
$$;

-- 4. NOT NULL as a CHECK, not checked for existing rows yet
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'jobs'::regclass
                     AND conname = 'jobs_tenant_id_not_null')
       AND EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'jobs'::regclass
                     AND attname = 'tenant_id'
                     AND NOT attisdropped
                     AND NOT attnotnull) THEN
        ALTER TABLE jobs
            ADD CONSTRAINT jobs_tenant_id_not_null CHECK (tenant_id IS NOT NULL) NOT VALID;
    END IF;
END
$$;

-- 5. Check existing rows for NULL
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'jobs'::regclass
                 AND conname = 'jobs_tenant_id_not_null'
                 AND NOT convalidated) THEN
        ALTER TABLE jobs VALIDATE CONSTRAINT jobs_tenant_id_not_null;
    END IF;
END
$$;

-- 6. Real NOT NULL, no scan thanks to the validated CHECK
ALTER TABLE jobs ALTER COLUMN tenant_id SET NOT NULL;

-- 7. The CHECK is now redundant
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_tenant_id_not_null;
