"""Unit tests for backfill definitions and the registry (SPEC §4), no database."""

from __future__ import annotations

import sys
import types

import pytest

from backfills.definition import Backfill, CopyInto, DefinitionError
from backfills.registry import Registry, UnknownBackfill

SPEC_TABLES = {
    "ai_assistant_threads_copy": "copilot_threads",
    "aois_status": "aois",
    "aois_area_ha_numeric": "aois",
    "jobs_tenant_id": "jobs",
    "jobs_error_message": "jobs",
}
SPEC_WRITES = {
    "ai_assistant_threads_copy": set(),
    "aois_status": {"status"},
    "aois_area_ha_numeric": {"area_ha_new"},
    "jobs_tenant_id": {"tenant_id"},
    "jobs_error_message": {"error_message"},
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


def test_registry_discovers_exactly_the_five_spec_backfills(registry: Registry) -> None:
    assert sorted(registry.backfills) == sorted(SPEC_TABLES)
    assert sorted(d.name for d in registry) == sorted(SPEC_TABLES)


@pytest.mark.parametrize("name", sorted(SPEC_TABLES))
def test_each_backfill_targets_the_spec_table_and_column(registry: Registry, name: str) -> None:
    definition = registry.get(name)
    assert definition.name == name
    assert definition.table == SPEC_TABLES[name]
    assert definition.schema == "public"
    assert set(definition.sets) == SPEC_WRITES[name]
    assert definition.description.strip()


def test_only_backfills_with_row_errors_have_a_validity_check(registry: Registry) -> None:
    # SPEC §4: aois_status and jobs_error_message have no row that cannot be done.
    assert registry.get("aois_status").invalid_reason is None
    assert registry.get("jobs_error_message").invalid_reason is None
    assert registry.get("aois_area_ha_numeric").invalid_reason
    assert registry.get("jobs_tenant_id").invalid_reason


def test_the_thread_copy_inserts_every_column_of_the_old_table_into_the_new_one(registry: Registry) -> None:
    definition = registry.get("ai_assistant_threads_copy")
    assert definition.kind == "copy" and definition.into is not None
    assert definition.into.table == "ai_assistant_threads"
    assert definition.key == ("id",)
    assert dict(definition.into.columns) == {c: f"s.{c}" for c in
                                             ("id", "tenant_id", "aoi_id", "title", "status", "created_at", "updated_at")}
    assert definition.needs == ('NOT EXISTS (SELECT 1 FROM "public"."ai_assistant_threads" target '
                                'WHERE target."id" = t."id" OFFSET 0)')
    assert registry.get("aois_status").kind == "update"


def _copy(**changes: object) -> Backfill:
    base: dict[str, object] = {"name": "c", "table": "src", "description": "d", "key": ("id",),
                               "into": CopyInto(table="dst", columns={"id": "s.id", "v": "s.v"})}
    base.update(changes)
    return Backfill(**base)  # type: ignore[arg-type]


def test_a_copy_derives_its_rows_to_do_over_every_key_column() -> None:
    d = _copy(key=("a", "b"), into=CopyInto(table="dst", schema="app", columns={"a": "s.a", "b": "s.b"}))
    assert d.needs == ('NOT EXISTS (SELECT 1 FROM "app"."dst" target WHERE target."a" = t."a" '
                       'AND target."b" = t."b" OFFSET 0)')
    assert d.sets == {}


@pytest.mark.parametrize("changes", [
    {"key": ()},
    {"into": CopyInto(table="dst", columns={"v": "s.v"})},
    {"into": CopyInto(table="dst", columns={})},
    {"into": CopyInto(table="Dst", columns={"id": "s.id"})},
    {"into": CopyInto(table="dst", columns={"id": "s.id", "a b": "1"})},
    {"sets": {"v": "1"}},
    {"needs": "t.v IS NULL"},
    {"invalid_reason": "'no'"},
], ids=repr)
def test_malformed_copies_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(DefinitionError):
        _copy(**changes)


def test_jobs_tenant_id_is_not_tenant_scopable(registry: Registry) -> None:
    assert registry.get("jobs_tenant_id").tenant_scopable is False
    assert registry.get("jobs_tenant_id").tenant_column is None


@pytest.mark.parametrize("name", ["aois_status", "aois_area_ha_numeric"])
def test_aoi_backfills_are_tenant_scopable(registry: Registry, name: str) -> None:
    assert registry.get(name).tenant_scopable
    assert registry.get(name).tenant_column == "tenant_id"


def test_extra_modules_add_a_fifth_backfill() -> None:
    registry = Registry.discover(["tests.extra_definitions"])
    assert "aois_name_trim" in registry.backfills
    assert set(SPEC_TABLES) < set(registry.backfills)


def test_unknown_backfill_suggests_the_closest_name(registry: Registry) -> None:
    with pytest.raises(UnknownBackfill) as info:
        registry.get("aois_stat")
    message = str(info.value)
    assert "unknown backfill 'aois_stat'" in message
    assert "did you mean 'aois_status'?" in message
    for name in SPEC_TABLES:
        assert name in message  # the known names are listed
    assert isinstance(info.value, KeyError)
    assert not message.startswith('"')  # not KeyError's repr-quoted message


def test_unknown_backfill_without_a_close_match(registry: Registry) -> None:
    with pytest.raises(UnknownBackfill) as info:
        registry.get("zzzzzz")
    assert "did you mean" not in str(info.value)


def _backfill(**changes: object) -> Backfill:
    base: dict[str, object] = {"name": "ok_name", "table": "aois", "description": "d", "needs": "t.x IS NULL",
                               "sets": {"x": "1"}}
    base.update(changes)
    return Backfill(**base)  # type: ignore[arg-type]


def test_a_valid_definition_is_accepted() -> None:
    d = _backfill(key=("a", "b"), tenant_column="tenant_id", schema="app")
    assert d.qualified_table == '"app"."aois"'
    assert d.tenant_scopable


@pytest.mark.parametrize("changes", [
    {"name": "Bad-Name"},
    {"name": ""},
    {"name": "1abc"},
    {"table": "aois; DROP TABLE jobs"},
    {"table": 'aois"'},
    {"table": "Aois"},
    {"schema": "public.x"},
    {"sets": {"Area": "1"}},
    {"sets": {"a b": "1"}},
    {"key": ("id", "created at")},
    {"key": ('id"',)},
    {"tenant_column": "tenant-id"},
    {"tenant_column": ""},
], ids=lambda c: repr(c))
def test_bad_identifiers_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(DefinitionError):
        _backfill(**changes)


@pytest.mark.parametrize("changes", [{"sets": {}}, {"needs": ""}, {"needs": "   \n"}], ids=repr)
def test_empty_sets_or_needs_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(DefinitionError):
        _backfill(**changes)


def test_registry_rejects_two_definitions_with_one_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two distinct definition objects under one name, as two modules would make them.
    module = types.ModuleType("tests_dup_defs_tmp")
    module.BACKFILL = _backfill(name="aois_name_trim")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests_dup_defs_tmp", module)
    with pytest.raises(DefinitionError, match="aois_name_trim"):
        Registry.discover(["tests.extra_definitions", "tests_dup_defs_tmp"])


def test_registry_rejects_a_module_whose_backfill_is_not_a_backfill(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("tests_bad_defs_tmp")
    module.BACKFILL = {"name": "x"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests_bad_defs_tmp", module)
    with pytest.raises(DefinitionError, match="not a Backfill"):
        Registry.discover(["tests_bad_defs_tmp"])
