-- migrate: no-transaction
--
-- down 012_add_farm_created_by_user: runbook rollback of 012.
--
-- Drops the index CONCURRENTLY (farms stays writable), then the foreign key
-- and the column (catalog-only, short ACCESS EXCLUSIVE lock on farms, and on
-- identities for the foreign key triggers). Farm ownership is lost.
-- No-transaction because of DROP INDEX CONCURRENTLY, IF EXISTS everywhere so
-- the file can be re-run.

DROP INDEX CONCURRENTLY IF EXISTS farms_created_by_user_idx;
ALTER TABLE farms DROP CONSTRAINT IF EXISTS farms_created_by_user_fk;
ALTER TABLE farms DROP COLUMN IF EXISTS created_by_user_id;
