-- down 003_drop_copilot_threads: recreate copilot_threads and refill it.
--
-- What: recreates copilot_threads exactly as 001 created it (same columns,
-- defaults, keys, indexes) and copies every row back from
-- ai_assistant_threads, so that old code reading copilot_threads sees all
-- threads again, including the ones written since 003 was applied.
--
-- Locks: the CREATE TABLE takes SHARE ROW EXCLUSIVE on tenants and aois for
-- its foreign keys. This is a rollback of a small table, run in one
-- transaction so that the table never appears half filled.

CREATE TABLE IF NOT EXISTS copilot_threads (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    aoi_id      uuid        NULL REFERENCES aois (id) ON DELETE SET NULL,
    title       text        NULL,
    status      text        NOT NULL DEFAULT 'OPEN',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS copilot_threads_tenant_created_idx
    ON copilot_threads (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS copilot_threads_aoi_idx ON copilot_threads (aoi_id);

-- lint: allow bulk-data-change because the rollback must give the recreated, still unused copilot_threads every thread back, otherwise reverting the contract step would lose data
INSERT INTO copilot_threads (id, tenant_id, aoi_id, title, status, created_at, updated_at)
SELECT id, tenant_id, aoi_id, title, status, created_at, updated_at
FROM ai_assistant_threads
ON CONFLICT (id) DO NOTHING;
