-- The recommended database role for `backfill worker` (and the CLI's run commands).
-- Not a superuser and not BYPASSRLS: row-level security applies to it, so a
-- `--tenant` run can only ever touch that tenant's rows, whatever a definition says.
-- Whole-table runs set app.is_system_admin for their own transactions (policy
-- system_admin_bypass), so they are never silently filtered.
-- Run as the owner of the schema (the role that applies migrations), after
-- `backfill migrate up`. Replace backfill_worker and the password with your own.

CREATE ROLE backfill_worker LOGIN PASSWORD 'change-me' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;

-- lag and lock readings (pg_stat_replication, pg_locks, pg_blocking_pids of other sessions)
GRANT pg_monitor TO backfill_worker;

-- the application tables the shipped backfills read and change
GRANT USAGE ON SCHEMA public TO backfill_worker;
GRANT SELECT ON tenants TO backfill_worker;
GRANT SELECT, UPDATE ON aois, jobs TO backfill_worker;

-- the tool's own records
GRANT USAGE ON SCHEMA backfill TO backfill_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA backfill TO backfill_worker;
