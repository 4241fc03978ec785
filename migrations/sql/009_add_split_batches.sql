-- 009_add_split_batches: idempotency records for AOI splits
-- (runbook, Add split_batches for idempotent splits).
--
-- What: when a user confirms the split of a macro area into paddocks, the
-- application stores the idempotency key of the request together with the
-- ids of the AOIs it created. A repeated confirmation (double click, client
-- retry) finds the row and returns the same AOIs instead of creating
-- duplicates. UNIQUE (tenant_id, idempotency_key) is what makes that safe
-- under concurrency. The table is tenant scoped, so it gets the row level
-- security of 005.
--
-- Locks: new table. Its foreign keys take SHARE ROW EXCLUSIVE on tenants
-- and aois for the short duration of this transaction (catalog-only work,
-- no data is copied), and the runner lock_timeout bounds the wait. The index
-- is on the new, empty table, so plain CREATE INDEX is fine.
-- Idempotent: IF NOT EXISTS, DROP POLICY IF EXISTS before CREATE POLICY.

CREATE TABLE IF NOT EXISTS split_batches (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    parent_aoi_id   uuid        NOT NULL REFERENCES aois (id) ON DELETE CASCADE,
    idempotency_key text        NOT NULL,
    created_ids     jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT split_batches_tenant_idempotency_key UNIQUE (tenant_id, idempotency_key)
);

CREATE INDEX IF NOT EXISTS split_batches_parent_idx
    ON split_batches (tenant_id, parent_aoi_id, created_at DESC);

-- Row level security, same policies as 005.
ALTER TABLE split_batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE split_batches FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON split_batches;
CREATE POLICY tenant_isolation ON split_batches
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
DROP POLICY IF EXISTS system_admin_bypass ON split_batches;
CREATE POLICY system_admin_bypass ON split_batches
    USING (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean)
    WITH CHECK (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean);
