-- migrate: no-transaction
--
-- down 008_add_aoi_parent_and_field_calibrations: runbook rollback of 008.
--
-- Drops field_calibrations (with its indexes and policies), then the
-- aois_parent_idx index CONCURRENTLY (reads and writes on aois continue),
-- then the foreign key and the column. Dropping the constraint and the
-- column are catalog-only changes with a short ACCESS EXCLUSIVE lock on
-- aois. No-transaction because of DROP INDEX CONCURRENTLY. Every statement
-- uses IF EXISTS, so the file can be re-run from the top.

DROP TABLE IF EXISTS field_calibrations;
DROP INDEX CONCURRENTLY IF EXISTS aois_parent_idx;
ALTER TABLE aois DROP CONSTRAINT IF EXISTS aois_parent_aoi_fk;
ALTER TABLE aois DROP COLUMN IF EXISTS parent_aoi_id;
