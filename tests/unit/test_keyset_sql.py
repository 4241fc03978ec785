"""Unit tests for backfills.keyset: the SQL text of keyset batches (no database)."""

from __future__ import annotations

import re

import pytest

from backfills.definition import Backfill, CopyInto
from backfills.keyset import KeyColumn, Scope, build, key_params

TENANT = "0b9c5a34-1111-4222-8333-444455556666"
PARENT = "7e57ab1e-0000-4000-8000-000000000001"

SCOPED = Backfill(name="things_fix", table="things", description="d", needs="t.x IS NULL",
                  sets={"x": "t.y + 1"}, tenant_column="tenant_id")
UNSCOPED = Backfill(name="things_fix", table="things", description="d", needs="t.x IS NULL",
                    sets={"x": "t.y + 1"})
WITH_REASON = Backfill(name="things_fix", table="things", description="d", needs="t.x IS NULL",
                       sets={"x": "t.y + 1"}, invalid_reason="CASE WHEN t.y < 0 THEN 'negative' END")
UUID_KEY = (KeyColumn("id", "uuid"),)
COMPOSITE = (KeyColumn("a", "int"), KeyColumn("b", "text"))


def norm(sql: str) -> str:
    return re.sub(r"\s+", " ", sql)


def test_tenant_scope_is_refused_without_a_tenant_column() -> None:
    with pytest.raises(ValueError, match="things_fix cannot be scoped to a tenant"):
        build(UNSCOPED, UUID_KEY, Scope(tenant=TENANT))


def test_tenant_scope_is_accepted_with_a_tenant_column() -> None:
    build(SCOPED, UUID_KEY, Scope(tenant=TENANT))


def test_single_key_comparison_is_a_plain_comparison() -> None:
    sql = norm(build(UNSCOPED, UUID_KEY).batch(with_cursor=True))
    assert 't."id" > CAST(:c0 AS uuid)' in sql
    assert "(t.\"id\") >" not in sql


def test_composite_keys_use_row_comparisons() -> None:
    batch = build(UNSCOPED, COMPOSITE)
    sql = norm(batch.batch(with_cursor=True))
    assert '(t."a", t."b") > (CAST(:c0 AS int), CAST(:c1 AS text))' in sql
    # the batch's range ends at the last key taken, as a row comparison too
    assert '(t."a", t."b") <= (CAST(:h0 AS int), CAST(:h1 AS text))' in sql
    # the batch's last key is found first, in index order (forward probe, or a backward step at the end)
    bounds = norm(batch.bounds(with_cursor=True))
    assert 'ORDER BY t."a", t."b" OFFSET CAST(:limit AS bigint) - 1 LIMIT 1' in bounds
    assert 'ORDER BY t."a" DESC, t."b" DESC LIMIT 1' in bounds
    assert '(t."a", t."b") > (CAST(:c0 AS int), CAST(:c1 AS text))' in bounds
    # and the batch takes it as a value: a plain key range for the planner
    assert "CAST(:h0 AS int) AS \"a\"" in sql and ":limit" not in sql
    assert 'ORDER BY t."a", t."b" LIMIT :limit' in norm(batch.keys(with_cursor=True))
    keys = norm(batch.keys(with_cursor=True))
    assert '(t."a", t."b") > (CAST(:c0 AS int), CAST(:c1 AS text))' in keys
    # never a column-by-column comparison, which would skip rows
    assert not re.search(r't\."a" > CAST\(:c0', sql)


def test_first_batch_has_no_cursor_condition() -> None:
    batch = build(UNSCOPED, COMPOSITE)
    for sql in (batch.batch(with_cursor=False), batch.keys(with_cursor=False)):
        assert ":c0" not in sql and ":c1" not in sql


def test_explicit_upper_bound_for_bisection() -> None:
    sql = norm(build(UNSCOPED, COMPOSITE).batch(with_cursor=True))
    assert "CAST(:h0 AS int) AS \"a\"" in sql and "CAST(:h1 AS text) AS \"b\"" in sql
    assert "CAST(:scanned AS bigint)" in sql
    assert ":limit" not in sql  # the chunk is given by its last key, not a count


def test_tenant_scope_adds_the_tenant_predicate_everywhere() -> None:
    batch = build(SCOPED, UUID_KEY, Scope(tenant=TENANT))
    predicate = 't."tenant_id" = CAST(:tenant AS uuid)'
    sql = norm(batch.batch(with_cursor=True))
    changed = sql.split("changed AS")[1].split("rejected AS")[0]
    assert predicate in norm(batch.bounds(with_cursor=True)), "the keys of a tenant batch must be that tenant's keys"
    assert predicate in changed, "the UPDATE must touch only that tenant's rows"
    assert predicate in norm(batch.keys(with_cursor=False))
    assert predicate in norm(batch.remaining())


def test_unscoped_batch_has_no_tenant_predicate() -> None:
    sql = build(SCOPED, UUID_KEY).batch(with_cursor=True)
    assert ":tenant" not in sql


def test_partition_upper_bound_and_parent_run_scope() -> None:
    sql = norm(build(UNSCOPED, COMPOSITE, Scope(upper=("5", "x"), parent_run=PARENT)).batch(with_cursor=True))
    assert '(t."a", t."b") <= (CAST(:u0 AS int), CAST(:u1 AS text))' in sql
    assert ('(t."a", t."b") IN (SELECT CAST(e.key ->> 0 AS int), CAST(e.key ->> 1 AS text) '
            'FROM backfill.row_errors e WHERE e.run_id = CAST(:parent_run AS uuid))') in sql


def test_needs_and_sets_are_in_the_update() -> None:
    sql = norm(build(UNSCOPED, UUID_KEY).batch(with_cursor=True))
    changed = sql.split("changed AS")[1].split("rejected AS")[0]
    assert 'UPDATE "public"."things" t SET "x" = t.y + 1' in changed
    assert "(t.x IS NULL)" in changed


def test_invalid_reason_excludes_rows_from_the_update_and_records_them() -> None:
    sql = norm(build(WITH_REASON, UUID_KEY).batch(with_cursor=True))
    changed = sql.split("changed AS")[1].split("rejected AS")[0]
    rejected = sql.split("rejected AS")[1].split("skipped AS")[0]
    locked = sql.split("locked AS")[1].split("changed AS")[0]
    # the reason is judged once, on the row as locked, and only locked rows are judged;
    # the update takes the locked rows that were judged valid
    assert "CASE WHEN" not in changed and "FROM locked l WHERE l.invalid IS NULL" in changed
    assert "(CASE WHEN t.y < 0 THEN 'negative' END) AS invalid" in locked
    assert "INSERT INTO backfill.row_errors" in rejected
    assert "FROM locked l WHERE l.invalid IS NOT NULL" in rejected
    assert "ON CONFLICT (run_id, key) DO NOTHING" in rejected


def test_a_batch_changes_only_rows_it_could_lock_at_once_and_records_the_others() -> None:
    sql = norm(build(UNSCOPED, COMPOSITE).batch(with_cursor=True))
    locked = sql.split("locked AS")[1].split("changed AS")[0]
    changed = sql.split("changed AS")[1].split("rejected AS")[0]
    skipped = sql.split("skipped AS")[1].split("progress AS")[0]
    # never waits on a row lock: a batch cannot be part of a deadlock cycle
    assert "FOR NO KEY UPDATE OF t SKIP LOCKED" in locked
    assert '(t."a", t."b") <= (CAST(:h0 AS int), CAST(:h1 AS text))' in locked and "(t.x IS NULL)" in locked
    # the update finds the locked rows by key (a row a concurrent commit moved is still found),
    # through a hashed lookup, never a join the planner could make a nested loop over the CTE
    assert "FROM locked l" not in changed.split("IN (SELECT")[0]
    assert '((t."a", t."b") IN (SELECT l."a", l."b" FROM locked l WHERE l.invalid IS NULL)) IS TRUE' in changed
    # candidates minus locked, by key, counted in the same transaction
    assert "INSERT INTO backfill.skipped_rows (run_id, part, key)" in skipped
    assert '(t."a", t."b") NOT IN (SELECT l."a", l."b" FROM locked l)' in skipped
    assert "rows_skipped = p.rows_skipped + (SELECT count(*) FROM skipped)" in sql
    assert "(SELECT count(*) FROM skipped) AS skipped" in sql


def test_revisit_looks_skipped_rows_up_by_key_in_chunks_without_waiting() -> None:
    sql = norm(build(SCOPED, COMPOSITE, Scope(tenant=TENANT)).revisit())
    pending = sql.split("pending AS")[1].split("locked AS")[0]
    assert "s.resolved_at IS NULL" in pending and "ORDER BY s.key LIMIT :limit" in pending
    assert "s.key > coalesce(CAST(:after AS jsonb), '[]'::jsonb)" in pending
    locked = sql.split("locked AS")[1].split("changed AS")[0]
    assert '(t."a", t."b") = (CAST(p.key ->> 0 AS int), CAST(p.key ->> 1 AS text))' in locked
    assert "FOR NO KEY UPDATE OF t SKIP LOCKED" in locked
    assert 't."tenant_id" = CAST(:tenant AS uuid)' in locked
    assert "SET resolved_at = now()" in sql and "retried_since = coalesce(s.retried_since, now())" in sql
    assert "p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)" in sql


def test_without_invalid_reason_nothing_is_rejected() -> None:
    sql = norm(build(UNSCOPED, UUID_KEY).batch(with_cursor=True))
    assert "INSERT INTO backfill.row_errors" not in sql
    assert "rejected AS (SELECT 1 WHERE false)" in sql


def test_progress_update_is_fenced_on_the_expected_cursor() -> None:
    sql = norm(build(UNSCOPED, UUID_KEY).batch(with_cursor=True))
    progress = sql.split("progress AS")[1]
    assert "p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)" in progress
    assert "p.run_id = CAST(:run_id AS uuid) AND p.part = :part" in progress
    record = norm(build(UNSCOPED, UUID_KEY).record_row_error())
    assert "p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)" in record


def test_invalid_summary_only_with_a_reason() -> None:
    assert build(UNSCOPED, UUID_KEY).invalid_summary() is None
    summary = norm(build(WITH_REASON, UUID_KEY).invalid_summary() or "")
    assert "GROUP BY reason" in summary and "(t.x IS NULL)" in summary


def test_quoted_qualified_table() -> None:
    other = Backfill(name="n", table="things", schema="app", description="d", needs="true", sets={"x": "1"})
    assert '"app"."things" t' in build(other, UUID_KEY).batch(with_cursor=False)


@pytest.mark.parametrize(("prefix", "values", "expected"), [
    ("c", ["1", "a"], {"c0": "1", "c1": "a"}),
    ("u", None, {}),
    ("h", [], {}),
])
def test_key_params(prefix: str, values: list[str] | None, expected: dict[str, str]) -> None:
    assert key_params(prefix, values) == expected


COPY = Backfill(name="things_copy", table="things", description="d", key=("id",), tenant_column="tenant_id",
                into=CopyInto(table="things_v2", columns={"id": "s.id", "label": "upper(s.name)"}))


def test_a_copy_batch_inserts_the_missing_rows_of_its_range_without_locking_them() -> None:
    sql = norm(build(COPY, UUID_KEY, Scope(tenant=TENANT)).batch(with_cursor=True))
    changed = sql.split("changed AS (")[1].split("rejected AS")[0]
    assert changed.startswith('INSERT INTO "public"."things_v2" ("id", "label") SELECT s.id, upper(s.name) '
                              'FROM (SELECT t.* FROM "public"."things" t, bounds b WHERE ')
    assert 't."id" > CAST(:c0 AS uuid) AND t."id" <= CAST(:h0 AS uuid)' in changed
    assert 't."tenant_id" = CAST(:tenant AS uuid)' in changed
    assert ('NOT EXISTS (SELECT 1 FROM "public"."things_v2" target WHERE target."id" = t."id" OFFSET 0)'
            in changed)
    assert changed.endswith(') s ON CONFLICT ("id") DO NOTHING RETURNING 1), ')
    assert "FOR NO KEY UPDATE" not in sql and "locked AS" not in sql
    assert "rejected AS (SELECT 1 WHERE false)" in sql and "skipped AS (SELECT 1 WHERE false)" in sql
    assert "p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)" in sql.split("progress AS")[1]


def test_a_copy_revisits_skipped_keys_with_the_same_insert() -> None:
    sql = norm(build(COPY, UUID_KEY).revisit())
    changed = sql.split("changed AS (")[1].split("rejected AS")[0]
    assert changed.startswith('INSERT INTO "public"."things_v2" ("id", "label") SELECT s.id, upper(s.name) '
                              'FROM (SELECT t.* FROM "public"."things" t, locked l WHERE t."id" = l."id" AND ')
    assert 'ON CONFLICT ("id") DO NOTHING RETURNING 1' in changed
