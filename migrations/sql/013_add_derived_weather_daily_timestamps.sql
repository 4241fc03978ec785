-- 013_add_derived_weather_daily_timestamps: created_at / updated_at on
-- derived_weather_daily (runbook, Add Timestamps to derived_weather_daily).
--
-- What: the weather worker upserts rows and sets updated_at, which older
-- databases do not have. Both columns are added if missing, nullable, with
-- DEFAULT now(), exactly as the runbook plans them.
--
-- Locks: now() is STABLE, not VOLATILE, so since PostgreSQL 11 a column
-- with this default is added without rewriting the table. The default is
-- evaluated once and stored in the catalog, every existing row reads the
-- time of this migration. Only a short ACCESS EXCLUSIVE lock on
-- derived_weather_daily is needed. IF NOT EXISTS makes a re-run a no-op.

ALTER TABLE derived_weather_daily
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at timestamptz DEFAULT now();
