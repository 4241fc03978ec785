-- 005_enable_rls: row level security on every tenant-scoped table.
--
-- What: for each table that has a tenant_id column at this point (farms,
-- aois, ai_assistant_threads, derived_weather_daily, opportunity_signals)
-- enable and FORCE row level security, and create two permissive policies
-- (permissive policies are OR-ed, as the runbook says they are additive):
--   tenant_isolation     a row is visible and writable when its tenant_id
--                        equals the session setting app.tenant_id
--   system_admin_bypass  every row is visible and writable when the session
--                        setting app.is_system_admin is true
-- A session that sets neither sees no rows and cannot write any: a missing
-- setting reads as NULL (current_setting with missing_ok), NULL never
-- equals a tenant_id, and a missing flag reads as false.
--
-- Not covered: tenants, identities and memberships are excluded on purpose
-- (runbook). Login has to find the memberships of an identity before any
-- tenant is known, and tenants / identities have no tenant_id. jobs has no
-- tenant_id yet (016 adds it, 018 makes it NOT NULL) and is left out here.
-- Tables created later with a tenant_id (field_calibrations, split_batches,
-- field_feedback) get the same policies in the migration that creates them.
--
-- Why FORCE: by default row level security does not apply to the owner of
-- the table. The application may well connect as the role that owns the
-- tables, and then ENABLE alone would silently do nothing, the worst kind of
-- security control. FORCE applies the policies to the owner as well.
-- Superusers and roles with BYPASSRLS are still not filtered.
-- Migrations and backfills are not hurt by FORCE: the migration runner and
-- the backfill worker always set app.is_system_admin = true in their session,
-- so system_admin_bypass lets them see and write every row. Foreign key
-- checks and ON DELETE actions are never filtered by row security.
--
-- Locks: ALTER TABLE ... ROW LEVEL SECURITY and CREATE POLICY take an ACCESS
-- EXCLUSIVE lock on each table, but only change the catalog (no scan), so
-- each lock is held for milliseconds. The runner lock_timeout plus retries
-- keeps them from queueing behind long transactions. Transactional: either
-- all five tables are protected or none is.
--
-- Idempotent: DROP POLICY IF EXISTS before each CREATE POLICY (CREATE POLICY
-- has no IF NOT EXISTS), ENABLE / FORCE are no-ops when already set.
-- Before applying, the application must set app.tenant_id per request and
-- per job (runbook pre-requisites), otherwise it will see empty tables.

-- farms
ALTER TABLE farms ENABLE ROW LEVEL SECURITY;
ALTER TABLE farms FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON farms;
CREATE POLICY tenant_isolation ON farms
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
DROP POLICY IF EXISTS system_admin_bypass ON farms;
CREATE POLICY system_admin_bypass ON farms
    USING (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean)
    WITH CHECK (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean);

-- aois
ALTER TABLE aois ENABLE ROW LEVEL SECURITY;
ALTER TABLE aois FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON aois;
CREATE POLICY tenant_isolation ON aois
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
DROP POLICY IF EXISTS system_admin_bypass ON aois;
CREATE POLICY system_admin_bypass ON aois
    USING (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean)
    WITH CHECK (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean);

-- ai_assistant_threads
ALTER TABLE ai_assistant_threads ENABLE ROW LEVEL SECURITY;
ALTER TABLE ai_assistant_threads FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON ai_assistant_threads;
CREATE POLICY tenant_isolation ON ai_assistant_threads
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
DROP POLICY IF EXISTS system_admin_bypass ON ai_assistant_threads;
CREATE POLICY system_admin_bypass ON ai_assistant_threads
    USING (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean)
    WITH CHECK (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean);

-- derived_weather_daily
ALTER TABLE derived_weather_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE derived_weather_daily FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON derived_weather_daily;
CREATE POLICY tenant_isolation ON derived_weather_daily
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
DROP POLICY IF EXISTS system_admin_bypass ON derived_weather_daily;
CREATE POLICY system_admin_bypass ON derived_weather_daily
    USING (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean)
    WITH CHECK (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean);

-- opportunity_signals
ALTER TABLE opportunity_signals ENABLE ROW LEVEL SECURITY;
ALTER TABLE opportunity_signals FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON opportunity_signals;
CREATE POLICY tenant_isolation ON opportunity_signals
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
DROP POLICY IF EXISTS system_admin_bypass ON opportunity_signals;
CREATE POLICY system_admin_bypass ON opportunity_signals
    USING (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean)
    WITH CHECK (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean);
