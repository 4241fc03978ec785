"""Which installation parts the server user can use, where a copy keeps them, and its stamp."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from worker.pginstall import UNUSED_FOR, Identity, Installation, allows, first_unreachable, stale, stamp

WHO = Identity(uid=1000, gids=frozenset({100}))


def _st(mode: int, uid: int = 0, gid: int = 0) -> os.stat_result:
    return os.stat_result((stat.S_IFDIR | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


def test_other_bits_apply_to_a_stranger() -> None:
    assert allows(_st(0o755), WHO, 0o5)
    assert not allows(_st(0o750), WHO, 0o1)
    assert not allows(_st(0o700), WHO, 0o4)


def test_owner_and_group_bits_take_precedence_over_other() -> None:
    assert allows(_st(0o700, uid=1000), WHO, 0o5)
    assert not allows(_st(0o077, uid=1000), WHO, 0o4)  # the owner class decides alone
    assert allows(_st(0o050, gid=100), WHO, 0o5)
    assert not allows(_st(0o705, gid=100), WHO, 0o1)


def _tree(root: Path, *files: str) -> None:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


def test_a_wheel_keeps_its_vendored_libraries_in_place(tmp_path: Path) -> None:
    _tree(tmp_path, "pkg/pginstall/bin/postgres", "pkg/pginstall/lib/x.so", "pkg/pginstall/share/x.sql",
          "pkg/pginstall/include/x.h", "pkg.libs/libpq.so")
    install = Installation.of_bin_dir(tmp_path / "pkg" / "pginstall" / "bin", "1.0")
    assert install.root == tmp_path
    assert install.bin == "pkg/pginstall/bin"
    assert install.parts == ("pkg/pginstall/bin", "pkg/pginstall/lib", "pkg/pginstall/share", "pkg.libs")


def test_a_plain_installation_is_its_bin_lib_and_share(tmp_path: Path) -> None:
    _tree(tmp_path, "pg/bin/postgres", "pg/lib/x.so", "pg/share/x.sql")
    install = Installation.of_bin_dir(tmp_path / "pg" / "bin")
    assert (install.root, install.bin, install.parts) == (tmp_path / "pg", "bin", ("bin", "lib", "share"))


def test_the_stamp_follows_version_and_files(tmp_path: Path) -> None:
    _tree(tmp_path, "pg/bin/postgres", "pg/lib/x.so")
    install = Installation.of_bin_dir(tmp_path / "pg" / "bin", "1.0")
    before = stamp(install)
    assert stamp(install) == before
    assert stamp(Installation.of_bin_dir(tmp_path / "pg" / "bin", "1.1")) != before
    (tmp_path / "pg" / "lib" / "y.so").write_text("new")
    assert stamp(install) != before


def test_copies_unused_for_a_week_and_partial_ones_after_a_day_are_stale() -> None:
    now = 1_000_000_000.0
    assert not stale("b7021062eafb408a7d2a", now - UNUSED_FOR + 60, now)
    assert stale("b7021062eafb408a7d2a", now - UNUSED_FOR - 60, now)
    assert not stale(".partial-x1", now - 3600, now)
    assert stale(".partial-x1", now - 2 * 86400, now)


def test_a_closed_directory_between_the_root_and_a_part_is_found() -> None:
    top = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp and every ancestor are open to all
    try:
        top.chmod(0o755)
        _tree(top, "pkg/pginstall/bin/postgres", "pkg.libs/libpq.so")
        install = Installation.of_bin_dir(top / "pkg" / "pginstall" / "bin")
        (top / "pkg" / "pginstall" / "bin" / "postgres").chmod(0o644)
        stranger = Identity(uid=os.geteuid() + 12345, gids=frozenset({os.getegid() + 12345}))
        assert first_unreachable(install, stranger) == top / "pkg" / "pginstall" / "bin" / "postgres"  # not runnable
        (top / "pkg" / "pginstall" / "bin" / "postgres").chmod(0o755)
        assert first_unreachable(install, stranger) is None
        (top / "pkg").chmod(0o700)
        assert first_unreachable(install, stranger) == top / "pkg"
    finally:
        shutil.rmtree(top)
