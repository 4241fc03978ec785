"""Real `backfill worker` processes for acceptance tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]

# Short timings so that recovery paths (lease expiry, reconciler) run in seconds.
FAST_TIMINGS = {
    "BACKFILL_LEASE_SECONDS": "3",
    "BACKFILL_SLICE_SECONDS": "5",
    "BACKFILL_RECONCILE_SECONDS": "1",
    "BACKFILL_STALE_SECONDS": "3",
    "BACKFILL_RETRY_WINDOW_SECONDS": "60",
}


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment of a worker or CLI process pointed at the test's servers and namespace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "CELERY_"))}
    env.update({
        "DATABASE_URL": settings.require_database(),
        "REDIS_URL": settings.require_redis(),
        "BACKFILL_NAMESPACE": settings.namespace,
        "BACKFILL_QUEUE": settings.queue,
        "BACKFILL_DEFINITIONS": "tests.extra_definitions",
        "PYTHONPATH": str(REPO),
        **FAST_TIMINGS,
        **extra,
    })
    return env


@dataclass
class WorkerProcess:
    """One `backfill worker` in its own process group, logging to a file."""

    settings: Settings
    log_path: Path
    concurrency: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the worker and wait until Celery says it is ready."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--concurrency", str(self.concurrency), *self.args],
            env=worker_env(self.settings, **self.extra_env), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_for_log("ready.", timeout=60)
        return self

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        """Block until `text` appears in the worker's log (or fail with the log's tail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in worker log after {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        """The worker's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill_group(self) -> None:
        """SIGKILL the worker and all its children at once (a machine dying)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM the main process and wait for it to exit; returns its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
                raise AssertionError(f"worker did not exit within {timeout}s of SIGTERM")
        return int(self.process.returncode)

    def stop(self) -> None:
        """Stop it at once (fixture teardown: the test is over, and the tests of a graceful
        stop call `terminate` themselves; a warm shutdown would cost seconds per test)."""
        self.kill_group()


def run_cli(settings: Settings, *args: str, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run `backfill ARGS` in a subprocess; returns the completed process (text)."""
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], env=worker_env(settings, **extra_env),
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
