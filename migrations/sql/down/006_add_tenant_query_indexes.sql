-- migrate: no-transaction
--
-- down 006_add_tenant_query_indexes: drops the two indexes of 006.
--
-- DROP INDEX CONCURRENTLY only takes SHARE UPDATE EXCLUSIVE on the table,
-- so reads and writes continue. It cannot run in a transaction block, hence
-- no-transaction. IF EXISTS makes every statement safe to re-run.
-- idx_jobs_tenant_status_created (listed in the runbook rollback for 006) is
-- created by 018 in this project and dropped by down 018, which always runs
-- before this file.

DROP INDEX CONCURRENTLY IF EXISTS idx_opportunity_signals_tenant_week;
DROP INDEX CONCURRENTLY IF EXISTS idx_aois_tenant_status;
