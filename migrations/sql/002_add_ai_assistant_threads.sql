-- migrate: no-transaction
--
-- 002_add_ai_assistant_threads: EXPAND step of the copilot_threads ->
-- ai_assistant_threads rename (runbook, Expand/Contract Pattern).
--
-- What: creates ai_assistant_threads with exactly the columns, defaults,
-- keys and indexes of copilot_threads, then copies the existing rows.
-- copilot_threads stays in place and keeps being written by the old code
-- until the contract step (003) drops it. A plain RENAME would break every
-- running instance of the old code at once, which is what this avoids.
--
-- Why no-transaction: CREATE TABLE with foreign keys to tenants and aois
-- takes a SHARE ROW EXCLUSIVE lock on both parents (it blocks their writes).
-- Inside one transaction that lock would be held for the whole copy. Run
-- statement by statement, the lock is released as soon as the empty table
-- exists, and the copy only takes ACCESS SHARE on copilot_threads (readers
-- and writers of copilot_threads are not blocked).
--
-- Idempotent: every statement can be re-run from the top after a failure
-- (IF NOT EXISTS, ON CONFLICT DO NOTHING). Rows written to copilot_threads by
-- old code after the copy are picked up by re-running the same copy
-- (runbook step 3, sync) before 003 is applied.

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

-- Copy the existing threads. Explicit column lists so the copy never depends
-- on column order.
-- lint: allow bulk-data-change because the copy into the brand-new, still unused table is the expand step itself (copilot_threads is small, only ACCESS SHARE is taken on it, and ON CONFLICT makes re-runs and the later sync safe)
INSERT INTO ai_assistant_threads (id, tenant_id, aoi_id, title, status, created_at, updated_at)
SELECT id, tenant_id, aoi_id, title, status, created_at, updated_at
FROM copilot_threads
ON CONFLICT (id) DO NOTHING;
