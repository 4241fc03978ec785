-- migrate: no-transaction
-- requires-backfill: aois_status
--
-- 017_aois_status_not_null: CONTRACT step, aois.status becomes NOT NULL.
--
-- What: after 014 (DEFAULT ACTIVE for new rows) and the aois_status
-- backfill (old NULL rows set to ACTIVE), forbid NULL for good.
-- Applied only when backfill verify aois_status is 0.
--
-- Why not a plain SET NOT NULL: it scans the whole table to prove there is
-- no NULL while holding ACCESS EXCLUSIVE on aois, blocking every read and
-- write for the duration of the scan. Instead:
--   1. ADD CONSTRAINT aois_status_not_null CHECK (status IS NOT NULL)
--      NOT VALID: short ACCESS EXCLUSIVE lock, no scan. New writes are
--      checked from now on.
--   2. VALIDATE CONSTRAINT in a separate statement, i.e. a separate
--      transaction: scans aois holding only SHARE UPDATE EXCLUSIVE, reads
--      and writes go on. This is why the file is no-transaction: in one
--      transaction the ACCESS EXCLUSIVE lock of step 1 would still be held
--      during the scan of step 2.
--   3. SET NOT NULL: PostgreSQL 12+ sees the validated CHECK and skips the
--      scan, so only a short ACCESS EXCLUSIVE lock.
--   4. DROP the now redundant CHECK (catalog-only).
--
-- Idempotent: a failed file is re-run from the top. Step 1 runs only while
-- the constraint is missing and the column is still nullable, step 2 only
-- while the constraint is not yet validated, steps 3 and 4 are no-ops once
-- done.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'aois'::regclass
                     AND conname = 'aois_status_not_null')
       AND EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'aois'::regclass
                     AND attname = 'status'
                     AND NOT attisdropped
                     AND NOT attnotnull) THEN
        ALTER TABLE aois
            ADD CONSTRAINT aois_status_not_null CHECK (status IS NOT NULL) NOT VALID;
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'aois'::regclass
                 AND conname = 'aois_status_not_null'
                 AND NOT convalidated) THEN
        ALTER TABLE aois VALIDATE CONSTRAINT aois_status_not_null;
    END IF;
END
$$;

ALTER TABLE aois ALTER COLUMN status SET NOT NULL;

ALTER TABLE aois DROP CONSTRAINT IF EXISTS aois_status_not_null;
