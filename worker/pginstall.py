"""A PostgreSQL installation the unprivileged server user can run.

PostgreSQL refuses to run as root, so as root the embedded server runs as an unprivileged
user. That user must be able to reach the binaries, libraries and shared files; when the
installation lies in a directory only its owner may enter (a home directory, a private
temporary directory), a copy of it is prepared under `CACHE_ROOT`: owned by root, readable
by everyone, named by a content stamp so that it is reused while the source is unchanged,
and published by an atomic rename so that concurrent preparers never see half a copy.
PostgreSQL finds `lib` and `share` relative to its executables, so a copy that keeps the
installation's layout runs like the original.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_ROOT", "UNUSED_FOR", "EmbeddedServerError", "Identity", "Installation", "allows",
           "first_unreachable", "prepare", "runnable_bin_dir", "stale", "stamp"]

CACHE_ROOT = Path("/var/tmp/backfill-pginstall")
UNUSED_FOR = 7 * 86400  # seconds after its last use a copy is removed (a half-written one: a day)
_READ, _EXEC = 0o4, 0o1


class EmbeddedServerError(RuntimeError):
    """The embedded PostgreSQL cannot be prepared or started."""


@dataclass(frozen=True)
class Identity:
    """Who the server runs as: uid and every gid it holds."""

    uid: int
    gids: frozenset[int]

    @classmethod
    def of(cls, user: str) -> Identity:
        """The identity of system user `user` (its primary group only, as the server runs)."""
        entry = pwd.getpwnam(user)
        return cls(entry.pw_uid, frozenset({entry.pw_gid}))


@dataclass(frozen=True)
class Installation:
    """The parts of a PostgreSQL installation (paths relative to `root`) that the server needs.

    `bin` is the part holding the executables; the copy keeps every part's place under the
    root, so relative library paths (`$ORIGIN/...`) and PostgreSQL's own relative lookup of
    `lib` and `share` keep working."""

    root: Path
    bin: str
    parts: tuple[str, ...]
    version: str = ""

    @classmethod
    def of_bin_dir(cls, bin_dir: Path, version: str = "") -> Installation:
        """`bin_dir` with its sibling `lib` and `share`, plus the wheel's vendored
        `<package>.libs` when the binaries come from a Python package (`.../<pkg>/<x>/bin`)."""
        home = bin_dir.parent
        parts = [p for p in ("bin", "lib", "share") if (home / p).is_dir()]
        package = home.parent
        vendored = package.parent / f"{package.name}.libs"
        if vendored.is_dir():
            root = package.parent
            prefix = home.relative_to(root).as_posix()
            return cls(root, f"{prefix}/bin", (*(f"{prefix}/{p}" for p in parts), vendored.name), version)
        return cls(home, "bin", tuple(parts), version)

    def files(self) -> Iterator[Path]:
        """Every directory and file of every part, each part's top first."""
        for part in self.parts:
            yield from _walk(self.root / part)


def _walk(top: Path) -> Iterator[Path]:
    yield top
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames) + sorted(filenames):
            yield Path(dirpath) / name


def allows(st: os.stat_result, who: Identity, bits: int) -> bool:
    """Whether permission `bits` (read 4, execute 1) are granted to `who` by this mode."""
    if st.st_uid == who.uid:
        shift = 6
    elif st.st_gid in who.gids:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def _needed(st: os.stat_result, in_bin: bool) -> int:
    if stat.S_ISDIR(st.st_mode):
        return _READ | _EXEC
    return _READ | _EXEC if in_bin else _READ


def first_unreachable(install: Installation, who: Identity) -> Path | None:
    """The first path of the installation `who` cannot use (an ancestor it cannot enter, a
    directory it cannot list, a file it cannot read or a binary it cannot run), or None."""
    between = {install.root / rel for part in install.parts for rel in Path(part).parents}  # `.` is the root
    for directory in [*reversed(install.root.resolve().parents), *sorted(between)]:
        if not allows(directory.stat(), who, _EXEC):
            return directory
    bin_top = install.root / install.bin
    for path in install.files():
        st = path.stat()
        if not allows(st, who, _needed(st, path.parent == bin_top)):
            return path
    return None


def stamp(install: Installation) -> str:
    """A content stamp: the version, and every file's relative path, size and mtime."""
    digest = hashlib.sha256(install.version.encode())
    for path in install.files():
        st = path.stat()
        digest.update(f"{path.relative_to(install.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _safe_cache_root(cache_root: Path) -> Path:
    """Create `cache_root` (0755, ours) or check that the existing one is ours and closed to writers."""
    cache_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = cache_root.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise EmbeddedServerError(f"the embedded PostgreSQL cannot be prepared in {cache_root}: it is not a "
                                  f"directory owned by this user and closed to other writers; remove it, or "
                                  f"set DATABASE_URL to a PostgreSQL server of your own")
    return cache_root


def _open_modes(paths: Iterable[Path]) -> None:
    """Directories 0755; files 0755 when executable, else 0644."""
    for path in paths:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        executable = stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111
        path.chmod(0o755 if executable else 0o644)


def stale(name: str, mtime: float, now: float) -> bool:
    """Whether a cache entry is to be removed: a copy unused for `UNUSED_FOR`, a partial one after a day."""
    return now - mtime > (86400 if name.startswith(".partial-") else UNUSED_FOR)


def _prune(root: Path, keep: Path) -> None:
    """Mark `keep` as used now; remove the stale entries beside it."""
    os.utime(keep)
    now = time.time()
    for entry in root.iterdir():
        try:
            mtime = entry.lstat().st_mtime
        except FileNotFoundError:  # another preparer's partial copy, gone since it was listed
            continue
        if entry != keep and stale(entry.name, mtime, now):
            shutil.rmtree(entry, ignore_errors=True)


def prepare(install: Installation, cache_root: Path = CACHE_ROOT) -> Path:
    """A readable copy of `install` under `cache_root` (reused while its stamp holds): the
    copy's bin directory. Written beside the target, then renamed into place."""
    root = _safe_cache_root(cache_root)
    target = root / stamp(install)
    if target.is_dir():
        _prune(root, target)
        return target / install.bin
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    try:
        for part in install.parts:
            (partial / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(install.root / part, partial / part, symlinks=True)
        _open_modes(_walk(partial))
        partial.rename(target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _prune(root, target)
    return target / install.bin


def runnable_bin_dir(bin_dir: Path, user: str, version: str = "", cache_root: Path = CACHE_ROOT) -> Path:
    """`bin_dir` itself when `user` can run the installation in place, else a prepared copy's."""
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedServerError(f"no PostgreSQL server binaries in {bin_dir}; point BACKFILL_PG_BIN at a "
                                  f"PostgreSQL bin directory, or set DATABASE_URL to a server of your own")
    install = Installation.of_bin_dir(bin_dir, version)
    if first_unreachable(install, Identity.of(user)) is None:
        return bin_dir
    try:
        return prepare(install, cache_root)
    except OSError as exc:
        raise EmbeddedServerError(f"the embedded PostgreSQL in {bin_dir} is not reachable by the user {user!r} it "
                                  f"runs as, and copying it under {cache_root} failed ({exc.strerror or exc}); "
                                  f"set DATABASE_URL to a PostgreSQL server of your own") from exc
