-- migrate: no-transaction
--
-- 006_add_tenant_query_indexes: composite indexes for tenant-scoped queries
-- (runbook, Add Composite Indexes for Tenant Queries).
--
-- What:
--   idx_aois_tenant_status               aois (tenant_id, status)
--   idx_opportunity_signals_tenant_week  opportunity_signals (tenant_id, week)
-- The runbook also names idx_jobs_tenant_status_created on
-- jobs (tenant_id, status, created_at). jobs has no tenant_id column before
-- 016 (expand) and 018 (contract), so that index cannot be built here.
-- Building it under that name on other columns would lie to whoever reads
-- the catalog. It is created by 018, the contract step that also gives
-- jobs.tenant_id its foreign key and NOT NULL, and dropped by down 018.
--
-- Locks: aois and opportunity_signals are live tables, so the indexes are
-- built with CREATE INDEX CONCURRENTLY, which only takes SHARE UPDATE
-- EXCLUSIVE (reads and writes go on, only other DDL waits). CONCURRENTLY
-- cannot run inside a transaction block, hence no-transaction: the runner
-- runs each statement on its own in autocommit.
--
-- Idempotent: IF NOT EXISTS skips an index that is already there. A
-- CONCURRENTLY build that fails (lock_timeout, cancel, crash) leaves an
-- INVALID index behind, which IF NOT EXISTS alone would then skip forever:
-- before each CREATE INDEX CONCURRENTLY the runner (migrations/executor.py)
-- drops an INVALID index of that name with DROP INDEX CONCURRENTLY, so a
-- re-run from the top rebuilds it. An invalid index is never used by
-- queries, so dropping it changes nothing for the application.

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_aois_tenant_status
    ON aois (tenant_id, status);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_opportunity_signals_tenant_week
    ON opportunity_signals (tenant_id, week);
