"""The embedded PostgreSQL starts as root from an installation in a private (0700) directory.

As root the server runs as an unprivileged user, which cannot enter a directory such as
`/root` or a `mktemp -d`; the installation is then copied where that user can reach it.
Each root test copies the real pgserver installation into a fresh 0700 directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.support.workers import REPO
from worker.embedded import EmbeddedPostgres, postgres_bin_dir, scratch_dir, service_user
from worker.pginstall import Identity, Installation, first_unreachable, prepare

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only when we are root")


@pytest.fixture(scope="module")
def server_user() -> str:
    """The unprivileged user the embedded server runs as when we are root (created if missing,
    as starting the server does: these tests do not rely on one having started before)."""
    user = service_user()
    assert user is not None
    return user


@pytest.fixture(scope="module")
def private_install() -> Iterator[Installation]:
    """The pgserver installation copied, layout kept, into a new 0700 directory."""
    source = Installation.of_bin_dir(postgres_bin_dir())
    private = Path(tempfile.mkdtemp(prefix="backfill-private-"))
    assert private.stat().st_mode & 0o777 == 0o700
    for part in source.parts:
        (private / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source.root / part, private / part)
    try:
        yield Installation(private, source.bin, source.parts, "test")
    finally:
        shutil.rmtree(private)


@pytest.fixture
def cache() -> Iterator[Path]:
    parent = scratch_dir("backfill-pgcache-")
    try:
        yield parent / "cache"
    finally:
        shutil.rmtree(parent)


@as_root
def test_the_server_user_cannot_reach_the_private_installation(private_install: Installation, server_user: str) -> None:
    assert first_unreachable(private_install, Identity.of(server_user)) == private_install.root


@as_root
def test_server_starts_from_a_private_installation_and_answers(private_install: Installation, cache: Path,
                                                              server_user: str) -> None:
    server = EmbeddedPostgres(scratch_dir("backfill-test-") / "pg", bin_dir=private_install.root / private_install.bin,
                              install_cache=cache)
    try:
        server.start()
        assert cache in server.runnable_bin_dir().parents
        with psycopg.connect(server.url(), autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int, "
                               "(SELECT count(*) FROM pg_language WHERE lanname = 'plpgsql')").fetchone()
        assert row is not None and row[0] >= 160000 and row[1] == 1
        pid = server.pid()
        assert pid is not None
        assert Path(f"/proc/{pid}").stat().st_uid == pwd.getpwnam(server_user).pw_uid
    finally:
        server.destroy()
    assert server.pid() is None
    assert private_install.root.stat().st_mode & 0o777 == 0o700  # never loosened


@as_root
def test_concurrent_preparers_publish_one_complete_copy(private_install: Installation, cache: Path,
                                                       server_user: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        bins = set(pool.map(lambda _: prepare(private_install, cache), range(4)))
    assert len(bins) == 1
    (bin_dir,) = bins
    assert [p.name for p in cache.iterdir()] == [bin_dir.relative_to(cache).parts[0]]  # no partial copy left
    assert first_unreachable(Installation(cache / bin_dir.relative_to(cache).parts[0], private_install.bin,
                                          private_install.parts), Identity.of(server_user)) is None
    inode = bin_dir.stat().st_ino
    old, fresh = cache / ("0" * 20), cache / ".partial-fresh"
    old.mkdir()
    fresh.mkdir()
    os.utime(old, (0, 0))
    assert prepare(private_install, cache) == bin_dir and bin_dir.stat().st_ino == inode  # reused, not recopied
    assert not old.exists() and fresh.exists()  # a long unused copy is removed, a copy in progress is not


def test_demo_without_usable_binaries_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run([sys.executable, "-m", "worker.cli", "demo", "--rows", "100", "--workdir",
                             str(tmp_path / "demo")], env={**env, "BACKFILL_PG_BIN": str(missing)},
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(missing) in lines[0] and "DATABASE_URL" in lines[0]
