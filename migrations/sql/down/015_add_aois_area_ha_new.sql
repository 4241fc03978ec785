-- down 015_add_aois_area_ha_new: undo the expand step.
--
-- Drops the trigger, its function and aois.area_ha_new. Nothing is lost:
-- area_ha is still the column of record until 019. Catalog-only, short
-- ACCESS EXCLUSIVE lock on aois, one transaction.

DROP TRIGGER IF EXISTS aois_sync_area_ha_new ON aois;
DROP FUNCTION IF EXISTS aois_sync_area_ha_new();
ALTER TABLE aois DROP COLUMN IF EXISTS area_ha_new;
