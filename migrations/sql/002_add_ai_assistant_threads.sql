-- migrate: no-transaction
--
-- 002_add_ai_assistant_threads: EXPAND step of the copilot_threads ->
-- ai_assistant_threads rename (runbook, Expand/Contract Pattern, step 1).
--
-- What: creates ai_assistant_threads with exactly the columns, defaults,
-- keys and indexes of copilot_threads. DDL only: the rows are copied by the
-- backfill ai_assistant_threads_copy (runbook step 3, sync), in small
-- throttled batches, as often as needed while old code still writes
-- copilot_threads; 003 waits for it. copilot_threads stays in place until
-- the contract step (003) drops it. A plain RENAME would break every running
-- instance of the old code at once, which is what this avoids.
--
-- This file changed before the product's first release: it used to copy the
-- rows itself with one INSERT ... SELECT. No released database has it
-- applied, so the change cannot be a drift anywhere.
--
-- Why no-transaction: CREATE TABLE with foreign keys to tenants and aois
-- takes a SHARE ROW EXCLUSIVE lock on both parents (it blocks their writes).
-- Run statement by statement, the lock is released as soon as the empty
-- table exists instead of being held until the indexes are built too.
--
-- Idempotent: every statement can be re-run from the top after a failure
-- (IF NOT EXISTS).

CREATE TABLE IF NOT EXISTS ai_assistant_threads (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    aoi_id      uuid        NULL REFERENCES aois (id) ON DELETE SET NULL,
    title       text        NULL,
    status      text        NOT NULL DEFAULT 'OPEN',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The table was created just above and is still empty on the first run, so
-- plain CREATE INDEX costs nothing and blocks nobody (the application does
-- not use the table before this migration has finished).
CREATE INDEX IF NOT EXISTS ai_assistant_threads_tenant_created_idx
    ON ai_assistant_threads (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS ai_assistant_threads_aoi_idx
    ON ai_assistant_threads (aoi_id);
