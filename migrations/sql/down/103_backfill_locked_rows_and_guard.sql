-- Removes the skipped-row records, the guard's probe table and the throttle times.
DROP TABLE IF EXISTS backfill.throttle_time;
DROP TABLE IF EXISTS backfill.probe;
DROP TABLE IF EXISTS backfill.skipped_rows;
ALTER TABLE backfill.progress DROP COLUMN IF EXISTS rows_skipped;
