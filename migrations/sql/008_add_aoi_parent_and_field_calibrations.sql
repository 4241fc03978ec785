-- migrate: no-transaction
--
-- 008_add_aoi_parent_and_field_calibrations: lets a macro area be split
-- into paddocks (aois.parent_aoi_id) and records field calibrations
-- (runbook, Add AOI parent + Field Calibrations).
--
-- What:
--   * new table field_calibrations (measured values per AOI, date and
--     metric, versioned, one active row per AOI/date/metric) with the
--     indexes field_calibrations_aoi_time_idx, field_calibrations_active_idx
--     and field_calibrations_version_idx, and the same row level security as
--     the other tenant tables (005): ENABLE + FORCE, tenant_isolation and
--     system_admin_bypass.
--   * aois.parent_aoi_id uuid NULL, foreign key aois_parent_aoi_fk to
--     aois (id) ON DELETE SET NULL, and index aois_parent_idx.
--
-- Locks, and why no-transaction:
--   * field_calibrations is new: plain CREATE INDEX on it is free. Its
--     foreign keys lock tenants and aois in SHARE ROW EXCLUSIVE only until
--     the CREATE TABLE statement commits (autocommit), not for the file.
--   * ADD COLUMN parent_aoi_id (nullable, no default) is catalog-only, a
--     short ACCESS EXCLUSIVE lock on aois.
--   * The foreign key is added NOT VALID (short SHARE ROW EXCLUSIVE lock, no
--     scan) and validated in a separate statement, i.e. a separate
--     transaction, which scans aois holding only SHARE UPDATE EXCLUSIVE, so
--     reads and writes go on during the scan. In one transaction the
--     stronger lock of the ADD CONSTRAINT would be held through the scan.
--   * aois_parent_idx is built CONCURRENTLY, which cannot run in a
--     transaction block.
-- Idempotent: a failed file is re-run from the top. IF NOT EXISTS on the
-- DDL, DO blocks that look in pg_constraint / pg_policy before adding. An
-- INVALID leftover of a failed CONCURRENTLY build is dropped by the runner
-- (DROP INDEX CONCURRENTLY) before the CREATE INDEX is run again.

-- ---------------------------------------------------------------------------
-- field_calibrations (new table)
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS field_calibrations (
    id            uuid             PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid             NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    aoi_id        uuid             NOT NULL REFERENCES aois (id) ON DELETE CASCADE,
    observed_date date             NOT NULL,
    metric_type   text             NOT NULL,
    value         double precision NOT NULL,
    unit          text             NOT NULL DEFAULT 'kg_ha',
    source        text             NOT NULL DEFAULT 'MANUAL',
    is_active     boolean          NOT NULL DEFAULT true,
    version       integer          NOT NULL DEFAULT 1,
    created_at    timestamptz      NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS field_calibrations_aoi_time_idx
    ON field_calibrations (tenant_id, aoi_id, observed_date DESC);
-- At most one active calibration per AOI, date and metric.
CREATE UNIQUE INDEX IF NOT EXISTS field_calibrations_active_idx
    ON field_calibrations (tenant_id, aoi_id, observed_date, metric_type)
    WHERE is_active;
-- Version numbers are unique per AOI, date and metric.
CREATE UNIQUE INDEX IF NOT EXISTS field_calibrations_version_idx
    ON field_calibrations (tenant_id, aoi_id, observed_date, metric_type, version);

-- Row level security, same policies as 005.
ALTER TABLE field_calibrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE field_calibrations FORCE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policy
                   WHERE polrelid = 'field_calibrations'::regclass
                     AND polname = 'tenant_isolation') THEN
        CREATE POLICY tenant_isolation ON field_calibrations
            USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policy
                   WHERE polrelid = 'field_calibrations'::regclass
                     AND polname = 'system_admin_bypass') THEN
        CREATE POLICY system_admin_bypass ON field_calibrations
            USING (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean)
            WITH CHECK (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean);
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- aois.parent_aoi_id (existing, live table)
-- ---------------------------------------------------------------------------
ALTER TABLE aois ADD COLUMN IF NOT EXISTS parent_aoi_id uuid;

-- Step 1: add the foreign key without checking existing rows (no scan).
-- New and updated rows are checked from now on.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'aois'::regclass
                     AND conname = 'aois_parent_aoi_fk') THEN
        ALTER TABLE aois
            ADD CONSTRAINT aois_parent_aoi_fk
            FOREIGN KEY (parent_aoi_id) REFERENCES aois (id) ON DELETE SET NULL
            NOT VALID;
    END IF;
END
$$;

-- Step 2: check the existing rows, in its own transaction, holding only
-- SHARE UPDATE EXCLUSIVE on aois. All of them are NULL, so it cannot fail.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'aois'::regclass
                 AND conname = 'aois_parent_aoi_fk'
                 AND NOT convalidated) THEN
        ALTER TABLE aois VALIDATE CONSTRAINT aois_parent_aoi_fk;
    END IF;
END
$$;

-- Index for listing the paddocks of a macro area within a tenant.
CREATE INDEX CONCURRENTLY IF NOT EXISTS aois_parent_idx
    ON aois (tenant_id, parent_aoi_id);
