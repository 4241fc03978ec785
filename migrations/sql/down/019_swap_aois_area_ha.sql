-- down 019_swap_aois_area_ha: back to area_ha double precision plus the
-- area_ha_new NUMERIC(10,2) column and the sync trigger of 015.
--
-- What: renames the NUMERIC(10,2) area_ha back to area_ha_new, adds a
-- nullable double precision area_ha, fills it from area_ha_new, and
-- recreates the trigger function and trigger exactly as 015 created them.
-- The values come back rounded to 2 decimals: the extra precision of the
-- old double precision values was given up at 019 and cannot be restored.
--
-- Locks: the rename and the ADD COLUMN are catalog-only, but the copy back
-- rewrites every row of aois while the transaction holds ACCESS EXCLUSIVE
-- on it (taken by the rename). On a large table the application waits for
-- the duration of the copy. This is an emergency rollback path, and doing
-- it in one transaction guarantees that old code never sees area_ha empty.
-- The trigger is created after the copy, so it does not fire for it.
-- Row level security: aois has FORCE ROW LEVEL SECURITY (005). The copy
-- relies on the runner session setting app.is_system_admin = true, without
-- it the UPDATE would only see the rows of app.tenant_id, or none at all.
-- Idempotent: the swap is guarded by a check that area_ha_new does not
-- exist yet, the copy only touches rows that still need it.

-- lint: allow rename because the rollback restores the names of the expand phase (area_ha_new) that the old application code expects
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'aois'::regclass
                     AND attname = 'area_ha_new'
                     AND NOT attisdropped) THEN
        ALTER TABLE aois RENAME COLUMN area_ha TO area_ha_new;
        ALTER TABLE aois ADD COLUMN area_ha double precision;
    END IF;
END
$$;

-- lint: allow bulk-data-change because the old code reads area_ha as double precision, so the rollback must put every value back in the same transaction that recreates the column
UPDATE aois
SET area_ha = area_ha_new::double precision
WHERE area_ha IS NULL
  AND area_ha_new IS NOT NULL;

CREATE OR REPLACE FUNCTION aois_sync_area_ha_new() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    rounded numeric;
BEGIN
    -- NULL, NaN and +/-Infinity have no NUMERIC(10,2) value. NaN is checked
    -- explicitly because NUMERIC(10,2) would accept it as NaN, and
    -- Infinity because the cast would raise an error.
    -- (For float8, NaN = NaN is true in PostgreSQL.)
    IF NEW.area_ha IS NULL
       OR NEW.area_ha = 'NaN'::double precision
       OR NEW.area_ha = 'Infinity'::double precision
       OR NEW.area_ha = '-Infinity'::double precision THEN
        NEW.area_ha_new := NULL;
        RETURN NEW;
    END IF;

    -- Round first, then check the range: 99999999.996 rounds to
    -- 100000000.00, which NUMERIC(10,2) cannot hold.
    rounded := round(NEW.area_ha::numeric, 2);
    IF abs(rounded) >= 100000000 THEN
        NEW.area_ha_new := NULL;
    ELSE
        NEW.area_ha_new := rounded;
    END IF;
    RETURN NEW;
EXCEPTION
    -- Belt and braces: the checks above cover every known case, but the
    -- application write must never fail because of this column.
    WHEN numeric_value_out_of_range OR invalid_text_representation THEN
        NEW.area_ha_new := NULL;
        RETURN NEW;
END;
$fn$;

DROP TRIGGER IF EXISTS aois_sync_area_ha_new ON aois;
CREATE TRIGGER aois_sync_area_ha_new
    BEFORE INSERT OR UPDATE OF area_ha ON aois
    FOR EACH ROW
    EXECUTE FUNCTION aois_sync_area_ha_new();
