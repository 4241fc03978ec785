-- down 005_enable_rls: removes row level security from the tenant tables.
--
-- For each table of 005: drop both policies, NO FORCE, DISABLE (runbook
-- rollback, done for every table of the migration). Catalog-only, a short
-- ACCESS EXCLUSIVE lock per table, one transaction so that the tables are
-- never left half protected. After this, tenant isolation relies on the
-- application alone again.

-- opportunity_signals
DROP POLICY IF EXISTS tenant_isolation ON opportunity_signals;
DROP POLICY IF EXISTS system_admin_bypass ON opportunity_signals;
ALTER TABLE opportunity_signals NO FORCE ROW LEVEL SECURITY;
ALTER TABLE opportunity_signals DISABLE ROW LEVEL SECURITY;

-- derived_weather_daily
DROP POLICY IF EXISTS tenant_isolation ON derived_weather_daily;
DROP POLICY IF EXISTS system_admin_bypass ON derived_weather_daily;
ALTER TABLE derived_weather_daily NO FORCE ROW LEVEL SECURITY;
ALTER TABLE derived_weather_daily DISABLE ROW LEVEL SECURITY;

-- ai_assistant_threads
DROP POLICY IF EXISTS tenant_isolation ON ai_assistant_threads;
DROP POLICY IF EXISTS system_admin_bypass ON ai_assistant_threads;
ALTER TABLE ai_assistant_threads NO FORCE ROW LEVEL SECURITY;
ALTER TABLE ai_assistant_threads DISABLE ROW LEVEL SECURITY;

-- aois
DROP POLICY IF EXISTS tenant_isolation ON aois;
DROP POLICY IF EXISTS system_admin_bypass ON aois;
ALTER TABLE aois NO FORCE ROW LEVEL SECURITY;
ALTER TABLE aois DISABLE ROW LEVEL SECURITY;

-- farms
DROP POLICY IF EXISTS tenant_isolation ON farms;
DROP POLICY IF EXISTS system_admin_bypass ON farms;
ALTER TABLE farms NO FORCE ROW LEVEL SECURITY;
ALTER TABLE farms DISABLE ROW LEVEL SECURITY;
