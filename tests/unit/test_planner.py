"""Unit tests for migrations.planner: pure functions over files and `schema_migrations` rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from migrations.files import MigrationError, MigrationFile
from migrations.planner import Applied, check_drift, pending, status_rows, to_revert


def mk(version: str, name: str, *, down: str | None = "SELECT 'down';", requires: tuple[str, ...] = (),
       transactional: bool = True) -> MigrationFile:
    return MigrationFile(version, name, f"SELECT '{version}';\n", down, transactional, True, requires)


FILES = [
    mk("001", "base"),
    mk("002", "expand"),
    mk("003", "contract", requires=("fill_it",)),
    mk("101", "tool_runs"),
    mk("102", "tool_more"),
]
BY_VERSION = {f.version: f for f in FILES}


def applied(*versions: str, when: datetime | None = None) -> list[Applied]:
    return [Applied(v, BY_VERSION[v].name, BY_VERSION[v].checksum, when, 5) for v in versions]


def versions(steps: list[MigrationFile]) -> list[str]:
    return [s.version for s in steps]


# -- pending ------------------------------------------------------------------------------


def test_pending_on_empty_applies_tool_track_first_then_app_in_order() -> None:
    assert versions(pending(FILES, [])) == ["101", "102", "001", "002", "003"]


def test_pending_skips_applied_versions_of_both_tracks() -> None:
    assert versions(pending(FILES, applied("001", "101"))) == ["102", "002", "003"]


def test_pending_is_empty_when_everything_is_applied() -> None:
    assert pending(FILES, applied("001", "002", "003", "101", "102")) == []


def test_pending_app_versions_above_a_gap_still_pending() -> None:
    # 002 applied out of order (e.g. a hotfix): 001 and 003 are still pending, in order
    assert versions(pending(FILES, applied("002", "101", "102"))) == ["001", "003"]


@pytest.mark.parametrize("target", ["002", "2", "02"])
def test_pending_to_target_stops_app_track_there_but_brings_tool_track_up(target: str) -> None:
    assert versions(pending(FILES, [], target)) == ["101", "102", "001", "002"]


def test_pending_to_target_already_passed_applies_only_tool_track() -> None:
    assert versions(pending(FILES, applied("001", "002"), "001")) == ["101", "102"]


@pytest.mark.parametrize("target", ["999", "004", "abc", "", "0x1"])
def test_pending_unknown_target_is_refused_with_the_known_versions(target: str) -> None:
    with pytest.raises(MigrationError) as err:
        pending(FILES, [], target)
    message = str(err.value)
    assert "unknown migration version" in message
    assert repr(target) in message
    assert "001, 002, 003, 101, 102" in message


# -- drift --------------------------------------------------------------------------------


def test_drift_on_changed_checksum_names_the_file_and_says_changed() -> None:
    rows = applied("001", "101")
    rows[0] = Applied("001", "base", "0" * 64)
    with pytest.raises(MigrationError) as err:
        pending(FILES, rows)
    message = str(err.value)
    assert "001_base.sql" in message
    assert "changed" in message
    assert "000000000000" in message  # the applied checksum prefix
    assert BY_VERSION["001"].checksum[:12] in message  # the one on disk


def test_drift_on_missing_file_names_the_migration() -> None:
    rows = applied("001") + [Applied("004", "gone", "ab" * 32)]
    with pytest.raises(MigrationError) as err:
        check_drift(FILES, rows)
    assert "004_gone" in str(err.value)
    assert "missing" in str(err.value)


def test_drift_blocks_down_too() -> None:
    rows = [Applied("001", "base", "f" * 64), *applied("002")]
    with pytest.raises(MigrationError, match="001_base.sql was changed"):
        to_revert(FILES, rows, "002")


def test_no_drift_when_checksums_match() -> None:
    check_drift(FILES, applied("001", "002", "101"))  # does not raise


def test_checksum_is_of_the_up_sql_only() -> None:
    a = MigrationFile("001", "x", "SELECT 1;", "DROP x;", True, True, ())
    b = MigrationFile("001", "x", "SELECT 1;", "DROP y;", False, False, ("z",))
    c = MigrationFile("001", "x", "SELECT 1; ", "DROP x;", True, True, ())
    assert a.checksum == b.checksum
    assert a.checksum != c.checksum
    assert len(a.checksum) == 64


# -- to_revert ----------------------------------------------------------------------------


def test_to_revert_newest_first_down_to_and_including_version() -> None:
    assert versions(to_revert(FILES, applied("001", "002", "003", "101", "102"), "002")) == ["003", "002"]


def test_to_revert_app_version_never_touches_tool_track() -> None:
    steps = to_revert(FILES, applied("001", "002", "003", "101", "102"), "001")
    assert versions(steps) == ["003", "002", "001"]


def test_to_revert_tool_version_never_touches_app_track() -> None:
    assert versions(to_revert(FILES, applied("001", "002", "003", "101", "102"), "101")) == ["102", "101"]


def test_to_revert_skips_versions_that_are_not_applied() -> None:
    assert versions(to_revert(FILES, applied("001", "002", "101"), "001")) == ["002", "001"]
    assert to_revert(FILES, applied("001", "101"), "003") == []


def test_to_revert_accepts_unpadded_version() -> None:
    assert versions(to_revert(FILES, applied("001", "002", "003"), "3")) == ["003"]


def test_to_revert_refuses_when_a_step_has_no_down_file() -> None:
    files = [mk("001", "base"), mk("002", "no_way_back", down=None), mk("003", "later")]
    rows = [Applied(f.version, f.name, f.checksum) for f in files]
    with pytest.raises(MigrationError) as err:
        to_revert(files, rows, "001")
    assert "no down file" in str(err.value)
    assert "002_no_way_back.sql" in str(err.value)
    # above the file without a down file, reverting is fine
    assert versions(to_revert(files, rows, "003")) == ["003"]


def test_to_revert_unknown_version_is_refused() -> None:
    with pytest.raises(MigrationError, match="unknown migration version '050'"):
        to_revert(FILES, applied("001"), "050")


# -- status_rows --------------------------------------------------------------------------


def test_status_rows_one_per_file_with_exact_keys() -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    rows = status_rows(FILES, applied("001", "101", when=when))
    assert [r["version"] for r in rows] == ["001", "002", "003", "101", "102"]
    for row in rows:
        assert set(row) == {"version", "name", "applied", "applied_at", "requires_backfill"}
    assert rows[0] == {"version": "001", "name": "base", "applied": True,
                       "applied_at": "2024-05-01T12:30:00+00:00", "requires_backfill": []}
    assert rows[2] == {"version": "003", "name": "contract", "applied": False, "applied_at": None,
                       "requires_backfill": ["fill_it"]}
    assert rows[3]["applied"] is True and rows[4]["applied"] is False
    assert all(isinstance(r["requires_backfill"], list) for r in rows)


def test_status_rows_applied_without_timestamp() -> None:
    rows = status_rows(FILES[:1], applied("001"))
    assert rows[0]["applied"] is True
    assert rows[0]["applied_at"] is None


def test_pending_to_a_tool_version_applies_only_the_tool_track_up_to_it() -> None:
    files = [mk("001", "a"), mk("002", "b"), mk("101", "t1"), mk("102", "t2")]
    assert versions(pending(files, [], "101")) == ["101"]
    assert versions(pending(files, applied("101"), "102")) == ["102"]
