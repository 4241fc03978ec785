-- migrate: no-transaction
--
-- 012_add_farm_created_by_user: records who created a farm, for the
-- EDITOR versus TENANT_ADMIN rules (runbook, Add farm ownership).
--
-- What: farms.created_by_user_id uuid NULL, referencing identities (id)
-- ON DELETE SET NULL (foreign key farms_created_by_user_fk), and the index
-- farms_created_by_user_idx on (tenant_id, created_by_user_id).
-- Existing farms keep NULL here. Giving them an owner is a data change over
-- the whole table and belongs in a backfill, not in this migration.
--
-- Locks, and why no-transaction:
--   * ADD COLUMN (nullable, no default) is catalog-only. The foreign key is
--     NOT declared inline: ADD COLUMN ... REFERENCES would check all rows
--     while holding the lock of the ALTER TABLE.
--   * The foreign key is added NOT VALID (short lock, no scan), then
--     validated in a separate statement (its own transaction) that scans
--     farms under SHARE UPDATE EXCLUSIVE only, so writes go on.
--   * The index is built CONCURRENTLY, which cannot run in a transaction.
-- Idempotent: IF NOT EXISTS, DO blocks that look in pg_constraint first. An
-- INVALID leftover of a failed CONCURRENTLY build is dropped by the runner
-- (DROP INDEX CONCURRENTLY) before the CREATE INDEX is run again.

ALTER TABLE farms ADD COLUMN IF NOT EXISTS created_by_user_id uuid;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'farms'::regclass
                     AND conname = 'farms_created_by_user_fk') THEN
        ALTER TABLE farms
            ADD CONSTRAINT farms_created_by_user_fk
            FOREIGN KEY (created_by_user_id) REFERENCES identities (id) ON DELETE SET NULL
            NOT VALID;
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'farms'::regclass
                 AND conname = 'farms_created_by_user_fk'
                 AND NOT convalidated) THEN
        ALTER TABLE farms VALIDATE CONSTRAINT farms_created_by_user_fk;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS farms_created_by_user_idx
    ON farms (tenant_id, created_by_user_id);
