-- 015_add_aois_area_ha_new: EXPAND step of aois.area_ha
-- double precision -> NUMERIC(10,2).
--
-- What: adds the nullable column aois.area_ha_new NUMERIC(10,2) and a
-- BEFORE INSERT OR UPDATE OF area_ha trigger (aois_sync_area_ha_new) that
-- keeps it in sync for every new write: area_ha_new = round(area_ha, 2).
-- Existing rows are filled by the aois_area_ha_numeric backfill, in small
-- batches. The backfill writes area_ha_new only, which does not fire the
-- trigger (it is restricted to UPDATE OF area_ha). 019 (contract) then drops
-- the old column and renames the new one.
--
-- A bad value must never make the application write fail. When area_ha is
-- NULL, NaN, +Infinity, -Infinity, or rounds to an absolute value of 10^8 or
-- more (too big for NUMERIC(10,2), for example 1e12 or 99999999.996), the
-- trigger stores NULL in area_ha_new and lets the write through. Such rows
-- still count as rows that need the backfill, which reports them as row
-- errors, so 019 stays blocked until someone fixes the data, and no value
-- disappears silently. The checks are explicit (verified on PostgreSQL 15:
-- NaN cast to NUMERIC(10,2) is accepted and stored as NaN, Infinity raises
-- numeric field overflow), and an EXCEPTION handler that falls back to NULL
-- covers anything unforeseen. The handler costs a subtransaction per row,
-- but the body writes nothing, so no subtransaction id is ever assigned.
--
-- Locks: ADD COLUMN (nullable, no default) is catalog-only. CREATE TRIGGER
-- takes SHARE ROW EXCLUSIVE. Both are short, in one transaction, bounded by
-- the runner lock_timeout.
-- Idempotent: ADD COLUMN IF NOT EXISTS, CREATE OR REPLACE FUNCTION, and
-- DROP TRIGGER IF EXISTS before CREATE TRIGGER (works on PostgreSQL 12+).

ALTER TABLE aois ADD COLUMN IF NOT EXISTS area_ha_new numeric(10,2);

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
