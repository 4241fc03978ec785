-- down 017_aois_status_not_null: aois.status accepts NULL again.
--
-- DROP NOT NULL is catalog-only (short ACCESS EXCLUSIVE lock on aois) and a
-- no-op when the column is already nullable. The helper CHECK of 017 is
-- dropped too, in case a failed run of 017 left it behind.

ALTER TABLE aois ALTER COLUMN status DROP NOT NULL;
ALTER TABLE aois DROP CONSTRAINT IF EXISTS aois_status_not_null;
