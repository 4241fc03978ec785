-- 010_add_field_feedback: feedback from the field per paddock
-- (runbook, Add field_feedback for paddock feedback).
--
-- What: a user reports an issue seen on a paddock, or marks a signal as a
-- false positive. One row per report, linked to the AOI and to the
-- membership that wrote it (kept as NULL if the membership is removed).
-- Tenant scoped, so it gets the row level security of 005.
--
-- Locks: new table. Its foreign keys take SHARE ROW EXCLUSIVE on tenants,
-- aois and memberships for this short, catalog-only transaction, bounded by
-- the runner lock_timeout. The index is on the new, empty table, so plain
-- CREATE INDEX is fine.
-- Idempotent: IF NOT EXISTS, DROP POLICY IF EXISTS before CREATE POLICY.

CREATE TABLE IF NOT EXISTS field_feedback (
    id                       uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id                uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    aoi_id                   uuid        NOT NULL REFERENCES aois (id) ON DELETE CASCADE,
    feedback_type            text        NOT NULL,
    message                  text        NOT NULL,
    created_by_membership_id uuid        NULL REFERENCES memberships (id) ON DELETE SET NULL,
    created_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT field_feedback_type_check
        CHECK (feedback_type IN ('ISSUE', 'FALSE_POSITIVE'))
);

CREATE INDEX IF NOT EXISTS field_feedback_aoi_time_idx
    ON field_feedback (tenant_id, aoi_id, created_at DESC);

-- Row level security, same policies as 005.
ALTER TABLE field_feedback ENABLE ROW LEVEL SECURITY;
ALTER TABLE field_feedback FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON field_feedback;
CREATE POLICY tenant_isolation ON field_feedback
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
DROP POLICY IF EXISTS system_admin_bypass ON field_feedback;
CREATE POLICY system_admin_bypass ON field_feedback
    USING (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean)
    WITH CHECK (coalesce(nullif(current_setting('app.is_system_admin', true), ''), 'false')::boolean);
