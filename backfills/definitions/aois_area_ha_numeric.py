"""aois.area_ha (double precision) -> area_ha_new NUMERIC(10,2) (expand 015, contract 019)."""

from backfills.definition import Backfill

BACKFILL = Backfill(
    name="aois_area_ha_numeric",
    table="aois",
    description="Copy round(area_ha, 2) into area_ha_new NUMERIC(10,2), before 019 swaps the columns.",
    needs="t.area_ha_new IS NULL AND t.area_ha IS NOT NULL",
    sets={"area_ha_new": "round(t.area_ha::numeric, 2)"},
    invalid_reason="""CASE
        WHEN t.area_ha = 'NaN'::float8 THEN 'area_ha is NaN'
        WHEN t.area_ha = 'Infinity'::float8 THEN 'area_ha is Infinity'
        WHEN t.area_ha = '-Infinity'::float8 THEN 'area_ha is -Infinity'
        WHEN abs(round(t.area_ha::numeric, 2)) >= 1e8
            THEN 'area_ha ' || t.area_ha::text || ' does not fit NUMERIC(10,2) (|x| must round below 10^8)'
    END""",
    tenant_column="tenant_id",
)
