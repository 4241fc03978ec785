-- requires-backfill: aois_area_ha_numeric
--
-- 019_swap_aois_area_ha: CONTRACT step of aois.area_ha
-- double precision -> NUMERIC(10,2).
--
-- What: removes the sync trigger and function of 015, drops the old
-- double precision area_ha and renames area_ha_new to area_ha. From here on
-- aois.area_ha is NUMERIC(10,2).
-- Applied only when backfill verify aois_area_ha_numeric is 0, i.e. every
-- row with an area_ha has its area_ha_new, so dropping area_ha loses no
-- value. The application must already read area_ha_new (or tolerate both)
-- before this runs.
-- No index, constraint or policy refers to area_ha (idx_aois_tenant_status
-- is on tenant_id, status), so nothing else has to be rebuilt.
--
-- Locks: every statement here is catalog-only (DROP COLUMN only marks the
-- column dropped, RENAME only changes its name), but together they need a
-- short ACCESS EXCLUSIVE lock on aois. Transactional so that the application
-- sees either the old or the new shape, never a table without area_ha. The
-- runner lock_timeout and retries keep the lock request from queueing
-- behind long transactions and blocking everyone behind it.
--
-- Idempotent: the swap is guarded by a check that area_ha_new still exists,
-- so a re-run after success does not drop the new area_ha.

DROP TRIGGER IF EXISTS aois_sync_area_ha_new ON aois;
DROP FUNCTION IF EXISTS aois_sync_area_ha_new();

-- lint: allow rename because this is the contract step of the expand/contract column type change, the application already uses the new column and the rename only touches the catalog
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = 'aois'::regclass
                 AND attname = 'area_ha_new'
                 AND NOT attisdropped) THEN
        ALTER TABLE aois DROP COLUMN IF EXISTS area_ha;
        ALTER TABLE aois RENAME COLUMN area_ha_new TO area_ha;
    END IF;
END
$$;
