-- down 014_add_aois_status_default: removes the default of aois.status.
--
-- Catalog-only, short ACCESS EXCLUSIVE lock on aois. Rows already written
-- with ACTIVE (by the default or by the backfill) keep that value, which is
-- a valid status for the old code too.

ALTER TABLE aois ALTER COLUMN status DROP DEFAULT;
