-- down 013_add_derived_weather_daily_timestamps: drops the two timestamps.
--
-- Catalog-only, short ACCESS EXCLUSIVE lock on derived_weather_daily. The
-- weather worker must be back on a version that does not write updated_at.

ALTER TABLE derived_weather_daily
    DROP COLUMN IF EXISTS updated_at,
    DROP COLUMN IF EXISTS created_at;
