-- 007_add_stac_scene_cache: cache table for STAC scene search results
-- (runbook, Add STAC Scene Cache Table).
--
-- What: stores the scene list returned by a STAC provider for one search
-- (provider, collections, date range, cloud cover, area), keyed by a hash of
-- the search, so that a provider outage can fall back to the last answer.
-- It caches public satellite catalogue metadata, not tenant data: there is
-- no tenant_id and therefore no row level security on it.
--
-- Locks: a new table with no foreign keys, so nothing else is locked and the
-- indexes can be built with plain CREATE INDEX on the empty table.
-- Transactional and idempotent (IF NOT EXISTS).

CREATE TABLE IF NOT EXISTS stac_scene_cache (
    cache_key       text             PRIMARY KEY,
    provider_name   text             NOT NULL,
    collections     text[]           NOT NULL,
    start_date      date             NOT NULL,
    end_date        date             NOT NULL,
    max_cloud_cover double precision NOT NULL,
    bbox            jsonb            NULL,
    geometry        jsonb            NULL,
    scenes          jsonb            NOT NULL,
    created_at      timestamptz      NOT NULL DEFAULT now(),
    updated_at      timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT stac_scene_cache_date_range_check CHECK (start_date <= end_date)
);

CREATE INDEX IF NOT EXISTS stac_scene_cache_provider_idx
    ON stac_scene_cache (provider_name);
-- Used to expire old entries.
CREATE INDEX IF NOT EXISTS stac_scene_cache_created_at_idx
    ON stac_scene_cache (created_at);
