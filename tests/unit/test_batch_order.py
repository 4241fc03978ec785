"""Unit tests for backfills.order: the order decision, block ranges, batch sizing in
blocks and the closing-pass decision (pure, no database)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfills.blocks import build_blocks, tid
from backfills.definition import Backfill
from backfills.keyset import KeyColumn
from backfills.stripes import HOT_STRIPES, stripe_count
from backfills.order import (CLOSING_PASS_LIMIT, OrderReadings, OrderUnavailable, PassDecision, block_parts,
                             block_ranges, choose_order, closing_decision, next_block_count)

HEAP = OrderReadings(server_version=150004, relkind="r", access_method="heap", correlation=0.01)
DEFN = Backfill(name="things_fix", table="things", description="d", needs="t.x IS NULL", sets={"x": "t.y + 1"},
                tenant_column="tenant_id", invalid_reason="CASE WHEN t.y < 0 THEN 'negative' END")


def _readings(**changes: object) -> OrderReadings:
    return OrderReadings(**{**HEAP.__dict__, **changes})  # type: ignore[arg-type]


def test_auto_picks_physical_for_a_key_unrelated_to_the_heap_order() -> None:
    choice = choose_order("auto", HEAP)
    assert choice.order == "physical" and "correlation 0.01 from pg_stats" in choice.reason
    assert choose_order("auto", _readings(correlation=-0.3, from_sample=True)).reason.endswith("from a sample)")


@pytest.mark.parametrize("correlation", [0.5, 0.93, -0.99, 1.0])
def test_auto_keeps_key_order_when_the_key_follows_the_heap(correlation: float) -> None:
    choice = choose_order("auto", _readings(correlation=correlation))
    assert choice.order == "key" and "follows the heap order" in choice.reason


@pytest.mark.parametrize(("changes", "why"), [
    ({"server_version": 130011}, "PostgreSQL 14 or later"),
    ({"relkind": "p"}, "partitioned table"),
    ({"relkind": "m"}, "plain table"),
    ({"access_method": "columnar"}, "heap access method, not columnar"),
])
def test_physical_where_it_cannot_work_is_an_error_and_auto_says_why_it_chose_key(
        changes: dict[str, object], why: str) -> None:
    with pytest.raises(OrderUnavailable, match=why):
        choose_order("physical", _readings(**changes))
    auto = choose_order("auto", _readings(**changes))
    assert auto.order == "key" and why in auto.reason


def test_unknown_correlation_keeps_key_order_and_explicit_orders_are_kept() -> None:
    assert choose_order("auto", _readings(correlation=None)).order == "key"
    assert choose_order("key", HEAP).order == "key"
    assert choose_order("physical", _readings(correlation=1.0)).order == "physical"
    with pytest.raises(ValueError, match="--order must be one of auto, key, physical"):
        choose_order("random", HEAP)


@given(blocks=st.integers(min_value=0, max_value=10_000_000), parts=st.integers(min_value=1, max_value=64))
def test_block_ranges_cover_every_block_exactly_once(blocks: int, parts: int) -> None:
    ranges = block_ranges(blocks, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] is None
    assert 1 <= len(ranges) <= parts
    for (lo, hi), (next_lo, _) in zip(ranges, ranges[1:]):
        assert hi == next_lo and lo < hi  # contiguous, no gap, no overlap, none empty
    if blocks >= parts:
        assert len(ranges) == parts
        sizes = [hi - lo for lo, hi in ranges[:-1]] + [blocks - ranges[-1][0]]
        assert max(sizes) - min(sizes) <= 1
    bounds = block_parts(blocks, parts)
    assert bounds[0][0] is None and bounds[-1][1] == [str(blocks)]


@given(rows=st.integers(min_value=1, max_value=1_000_000), density=st.floats(min_value=0.01, max_value=300),
       previous=st.none() | st.integers(min_value=1, max_value=100_000))
def test_a_batch_spans_enough_blocks_for_its_rows_and_grows_at_most_twofold(
        rows: int, density: float, previous: int | None) -> None:
    blocks = next_block_count(rows, density, previous)
    assert blocks >= 1
    if previous is not None:
        assert blocks <= 2 * previous
    if previous is None or blocks < 2 * previous:
        assert blocks * density >= rows and (blocks - 1) * density < rows
    assert next_block_count(rows, None, None) == -(-rows // 291)  # no density known: blocks as full as can be


def test_after_empty_batches_the_range_doubles_up_to_a_bound_at_the_tables_density() -> None:
    sizes, previous = [], 35
    for _ in range(8):  # batches over dead versions: none found a row
        previous = next_block_count(10_000, None, previous, table_density=66.0)
        sizes.append(previous)
    assert sizes == [70, 140, 280, 560, 1120, 1216, 1216, 1216]  # 152 blocks a batch at 66 rows a block, 8x
    assert next_block_count(10_000, None, 100, table_density=None) == 200
    assert next_block_count(10_000, None, 300, table_density=None) == 35 * 8  # unknown density: full blocks
    assert next_block_count(10_000, 66.0, 1216, table_density=66.0) == 152  # a dense stretch again: its own size


def test_closing_passes_until_one_finds_nothing_bounded_by_the_limit() -> None:
    assert closing_decision(0, 0) is PassDecision.FINISH
    assert closing_decision(10, 0) is PassDecision.AGAIN
    assert closing_decision(1, CLOSING_PASS_LIMIT - 1) is PassDecision.AGAIN
    assert closing_decision(1, CLOSING_PASS_LIMIT) is PassDecision.GIVE_UP
    assert closing_decision(0, CLOSING_PASS_LIMIT) is PassDecision.FINISH


def test_block_batch_sql_binds_the_block_range_and_keeps_the_action() -> None:
    sql = build_blocks(DEFN, (KeyColumn("id", "uuid"),), tenant="0b9c5a34-1111-4222-8333-444455556666")
    batch = sql.batch()
    assert "t.ctid >= CAST(:lo_tid AS tid) AND t.ctid < CAST(:hi_tid AS tid)" in batch
    assert 't."tenant_id" = CAST(:tenant AS uuid)' in batch and "(t.x IS NULL)" in batch
    assert "INSERT INTO backfill.row_errors" in batch and "cursor = jsonb_build_array(b.hi)" in batch
    assert "p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)" in batch
    chunk = sql.chunk()
    assert "jsonb_build_array(t.\"id\"::text) IN (SELECT jsonb_array_elements(CAST(:chunk AS jsonb)))" in chunk
    assert "cursor = CAST(:expected AS jsonb)" in chunk and "ctid" not in sql.keys().split("ORDER BY")[0].split(
        "WHERE")[0]
    assert tid(42) == "(42,0)"


def test_stripe_statements_take_every_nth_line_pointer_and_only_the_last_moves_the_cursor() -> None:
    sql = build_blocks(DEFN, (KeyColumn("id", "uuid"),))
    stripe_filter = "((t.ctid::text::point)[1])::int % CAST(:stripes AS int) = CAST(:stripe AS int)"
    assert stripe_filter not in sql.batch()
    last, before = sql.batch(striped=True), sql.stripe()
    for statement in (last, before):  # the locked, changed and skipped rows are the stripe's
        assert statement.count(stripe_filter) == 3 and "t.ctid >= CAST(:lo_tid AS tid)" in statement
    assert "cursor = jsonb_build_array(b.hi)" in last and "AS scanned" in last.split("locked AS")[0]
    assert "cursor = CAST(:expected AS jsonb)" in before and "CAST(0 AS bigint) AS scanned" in before


def test_a_range_is_probed_first_and_passed_over_without_locks_when_nothing_in_it_needs_the_backfill() -> None:
    sql = build_blocks(DEFN, (KeyColumn("id", "uuid"),), tenant="0b9c5a34-1111-4222-8333-444455556666")
    probe = sql.probe()
    assert "count(*) FILTER (WHERE t.x IS NULL) AS needing" in probe and "FOR " not in probe
    assert 't."tenant_id" = CAST(:tenant AS uuid)' in probe and "t.ctid >= CAST(:lo_tid AS tid)" in probe
    passed = sql.pass_over()
    assert "things" not in passed and "FOR NO KEY UPDATE" not in passed  # the table is not touched
    assert "cursor = jsonb_build_array(CAST(:hi AS text))" in passed
    assert "p.cursor IS NOT DISTINCT FROM CAST(:expected AS jsonb)" in passed and "AS fenced" in passed
    assert "CAST(:scanned AS bigint) AS scanned" in sql.batch()  # the probe's count, not a second read


@pytest.mark.parametrize(("kind", "sets", "indexed", "stripes"), [
    ("update", {"x"}, {"id", "y"}, HOT_STRIPES),  # nothing it sets is indexed: HOT can work
    ("update", {"x", "y"}, {"id", "y"}, 1),  # an indexed column changes: every update adds index entries
    ("copy", set(), {"id"}, 1),  # rows inserted elsewhere
])
def test_ranges_are_striped_only_where_updates_can_stay_on_their_page(
        kind: str, sets: set[str], indexed: set[str], stripes: int) -> None:
    assert stripe_count(kind, sets, indexed) == stripes
    with pytest.raises(ValueError, match="cannot be scoped to a tenant"):
        build_blocks(Backfill(name="n", table="t", description="d", needs="true", sets={"x": "1"}),
                     (KeyColumn("id", "uuid"),), tenant="0b9c5a34-1111-4222-8333-444455556666")
