-- 001_initial: baseline schema of the application database.
--
-- What: creates the tenancy tables (tenants, identities, memberships), the
-- domain tables (farms, aois, jobs), the assistant thread table under its old
-- name (copilot_threads, renamed by expand/contract in 002 and 003), the
-- per-AOI weather series (derived_weather_daily) and the weekly opportunity
-- signals (opportunity_signals).
--
-- Why it looks like this: this is the schema as it stood before the planned
-- migrations of the runbook, on purpose. Later files change it step by step:
--   * aois.status is NULL-able with no default (014 adds the default,
--     the aois_status backfill fills old rows, 017 sets NOT NULL).
--   * aois.area_ha is double precision (015 adds area_ha_new NUMERIC(10,2),
--     the aois_area_ha_numeric backfill fills it, 019 swaps the columns).
--   * jobs has no tenant_id and no error_message (004 and 016 add them).
--   * identities has no password columns (011) and farms no owner (012).
--   * derived_weather_daily has no created_at / updated_at (013).
--
-- Locks: every table is created in this file, so nothing here can block the
-- application. Indexes are therefore built with plain CREATE INDEX (there is
-- nothing to build them concurrently against). The indexes created here are
-- the ones that foreign keys need (ON DELETE CASCADE / SET NULL from a parent
-- would otherwise scan the whole child table) plus the natural unique keys.
-- gen_random_uuid() is built into PostgreSQL 13 and later, no extension needed.
-- Transactional: the runner wraps the whole file in one transaction.

-- ---------------------------------------------------------------------------
-- Tenancy
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS tenants (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per login identity at an identity provider (local, google, ...).
-- Not tenant scoped: one identity can belong to several tenants.
CREATE TABLE IF NOT EXISTS identities (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    provider    text        NOT NULL,
    subject     text        NOT NULL,
    email       text        NOT NULL,
    name        text        NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT identities_provider_subject_key UNIQUE (provider, subject)
);

-- Which identity belongs to which tenant, with which role.
CREATE TABLE IF NOT EXISTS memberships (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    identity_id uuid        NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    role        text        NOT NULL DEFAULT 'VIEWER',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memberships_role_check
        CHECK (role IN ('TENANT_ADMIN', 'EDITOR', 'VIEWER')),
    CONSTRAINT memberships_tenant_identity_key UNIQUE (tenant_id, identity_id)
);
CREATE INDEX IF NOT EXISTS memberships_identity_idx ON memberships (identity_id);

-- ---------------------------------------------------------------------------
-- Domain
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS farms (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS farms_tenant_idx ON farms (tenant_id);

-- Areas of interest (fields, paddocks). status and area_ha are deliberately
-- in their pre-migration shape, see the header.
CREATE TABLE IF NOT EXISTS aois (
    id          uuid             PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid             NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    farm_id     uuid             NULL REFERENCES farms (id) ON DELETE SET NULL,
    name        text             NOT NULL,
    area_ha     double precision NULL,
    status      text             NULL,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    updated_at  timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS aois_tenant_idx ON aois (tenant_id);
CREATE INDEX IF NOT EXISTS aois_farm_idx ON aois (farm_id);

-- Processing jobs. Tenant is only reachable through aoi_id at this point
-- (016 adds jobs.tenant_id, the jobs_tenant_id backfill fills it).
CREATE TABLE IF NOT EXISTS jobs (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aoi_id      uuid        NULL REFERENCES aois (id) ON DELETE SET NULL,
    job_type    text        NOT NULL,
    status      text        NOT NULL DEFAULT 'QUEUED',
    result      jsonb       NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobs_status_check
        CHECK (status IN ('QUEUED', 'RUNNING', 'DONE', 'FAILED'))
);
CREATE INDEX IF NOT EXISTS jobs_aoi_idx ON jobs (aoi_id);

-- ---------------------------------------------------------------------------
-- Assistant threads under their old name (see 002 and 003)
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS copilot_threads (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    aoi_id      uuid        NULL REFERENCES aois (id) ON DELETE SET NULL,
    title       text        NULL,
    status      text        NOT NULL DEFAULT 'OPEN',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS copilot_threads_tenant_created_idx
    ON copilot_threads (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS copilot_threads_aoi_idx ON copilot_threads (aoi_id);

-- ---------------------------------------------------------------------------
-- Weather and signals
-- ---------------------------------------------------------------------------
-- Daily weather per AOI, upserted by the ingestion worker on
-- (tenant_id, aoi_id, date). No created_at / updated_at yet (013).
CREATE TABLE IF NOT EXISTS derived_weather_daily (
    id                 uuid             PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          uuid             NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    aoi_id             uuid             NOT NULL REFERENCES aois (id) ON DELETE CASCADE,
    date               date             NOT NULL,
    temp_min_c         double precision NULL,
    temp_max_c         double precision NULL,
    temp_mean_c        double precision NULL,
    precip_mm          double precision NULL,
    et0_mm             double precision NULL,
    humidity_mean_pct  double precision NULL,
    wind_speed_mean_ms double precision NULL,
    CONSTRAINT derived_weather_daily_tenant_aoi_date_key UNIQUE (tenant_id, aoi_id, date)
);
CREATE INDEX IF NOT EXISTS derived_weather_daily_aoi_date_idx
    ON derived_weather_daily (aoi_id, date);

-- Weekly opportunity signals per AOI. week is the first day of the ISO week.
CREATE TABLE IF NOT EXISTS opportunity_signals (
    id          uuid             PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid             NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    aoi_id      uuid             NOT NULL REFERENCES aois (id) ON DELETE CASCADE,
    week        date             NOT NULL,
    signal_type text             NOT NULL,
    status      text             NOT NULL DEFAULT 'OPEN',
    severity    text             NOT NULL,
    score       double precision NOT NULL,
    evidence    jsonb            NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT opportunity_signals_status_check
        CHECK (status IN ('OPEN', 'ACK', 'RESOLVED', 'DISMISSED')),
    CONSTRAINT opportunity_signals_tenant_aoi_week_type_key
        UNIQUE (tenant_id, aoi_id, week, signal_type)
);
CREATE INDEX IF NOT EXISTS opportunity_signals_aoi_idx ON opportunity_signals (aoi_id);
