-- 014_add_aois_status_default: EXPAND step for aois.status NOT NULL.
--
-- What: new rows get status ACTIVE when the application does not give one.
-- Existing rows with a NULL status are left alone here: changing them is a
-- data change over the whole table, done by the aois_status backfill in
-- small batches. 017 (contract) then makes the column NOT NULL.
--
-- Locks: SET DEFAULT only changes the catalog (no rewrite, no scan), with a
-- short ACCESS EXCLUSIVE lock on aois. Setting the same default again is a
-- no-op, so the file is idempotent.

ALTER TABLE aois ALTER COLUMN status SET DEFAULT 'ACTIVE';
