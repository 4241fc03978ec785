"""The Celery application of `backfill worker`, built from one `Settings` (no work at import time)."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize
import os
from dataclasses import dataclass, field

import sqlalchemy as sa
from celery import Celery, Task

from backfills.engine import SliceOutcome, SliceRunner
from core.errors import first_line
from core.settings import Settings
from worker.runtime import TASK_NAME, WORKER, Runtime, celery_app

__all__ = ["TASK_NAME", "WorkerRuntime", "create_app"]

log = logging.getLogger("backfill.worker")


@dataclass
class WorkerRuntime:
    """Per-process resources: a `Runtime` and its slice runner, built lazily after fork."""

    settings: Settings
    app: Celery
    shutdown: multiprocessing.synchronize.Event = field(default_factory=multiprocessing.Event)
    _pid: int | None = None
    _runtime: Runtime | None = None
    _runner: SliceRunner | None = None

    def runtime(self) -> Runtime:
        """This process's runtime (a fresh one in a forked child)."""
        if self._pid != os.getpid() or self._runtime is None:
            self._runtime = Runtime.from_settings(self.settings, WORKER, app=self.app)
            self._runner = self._runtime.slice_runner(self.shutdown)
            self._pid = os.getpid()
        return self._runtime

    def runner(self) -> SliceRunner:
        """This process's slice runner."""
        self.runtime()
        assert self._runner is not None
        return self._runner


def create_app(settings: Settings) -> tuple[Celery, WorkerRuntime]:
    """A Celery app whose broker keys live under the settings' namespace, and its runtime."""
    app = celery_app(settings)
    runtime = WorkerRuntime(settings, app)
    _register_tasks(app, runtime)
    return app, runtime


def _register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    def run_part(task: Task, run_id: str, part: int, lease_token: str | None = None) -> str:
        try:
            outcome, token = runtime.runner().run_slice_continuing(run_id, part, lease_token)
        except sa.exc.OperationalError as exc:
            log.warning("run %s part %s: database unavailable (%s); retrying", run_id, part, first_line(exc))
            raise task.retry(countdown=2) from None
        log.info("run %s part %s: slice %s", run_id, part, outcome.value)
        if outcome is SliceOutcome.CONTINUE:
            runtime.runtime().dispatch(run_id, part, token)
        return outcome.value

    app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=150)(run_part)
