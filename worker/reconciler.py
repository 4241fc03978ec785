"""The reconciler: a thread in the `backfill worker` main process that re-queues run
parts whose task message was lost. One reconciler acts per tick across all workers."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

import redis as redis_lib
from celery import Celery

from backfills.control import RunControl, reconcile_lock
from backfills.reconcile import PartReading, stale_parts
from backfills.runs import RunStore
from core.errors import first_line
from worker.app import TASK_NAME, WorkerRuntime, dispatch
from worker.broker import waiting_slices
from core.db import create_db_engine

__all__ = ["Reconciler"]

log = logging.getLogger("backfill.reconciler")


class Reconciler:
    """Looks at active runs every `reconcile_seconds` and re-queues stale parts."""

    def __init__(self, app: Celery, runtime: WorkerRuntime) -> None:
        self.app = app
        self.runtime = runtime
        self.settings = runtime.settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Its own engine without idle connections: prefork children forked later by the
        # main process must not inherit open database sockets.
        self._engine = create_db_engine(self.settings.require_database(), application_name="backfill-reconciler",
                                        pooled=False)
        self._redis = redis_lib.Redis.from_url(self.settings.require_redis(), socket_timeout=10)

    def tick(self) -> list[tuple[str, int]]:
        """One pass; returns the (run, part) pairs re-queued."""
        client = self._redis
        if not reconcile_lock(client, self.settings.namespace, self.settings.reconcile_seconds * 0.9):
            return []
        requeued = []
        now = datetime.now(timezone.utc)
        waiting = waiting_slices(client, self.settings, TASK_NAME)
        for run in RunStore(self._engine).active():
            control = RunControl(client, self.settings.namespace, run.id)
            readings = [PartReading(p.part, p.done, control.lease(p.part, 1).holder_ttl() is not None,
                                    max(p.updated_at, run.updated_at), (run.id, p.part) in waiting)
                        for p in run.parts]
            checkpoints = {part: datetime.fromtimestamp(cp.at, timezone.utc)
                           for part, cp in control.checkpoints().items()}
            for part in stale_parts(run.state, readings, checkpoints, now, self.settings.stale_seconds):
                log.warning("run %s part %s has no live worker; re-queuing it", run.id, part)
                dispatch(self.app, self.settings, run.id, part)
                requeued.append((run.id, part))
        return requeued

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reconcile_seconds):
            try:
                self.tick()
            except Exception as exc:  # a failed tick must never kill the worker
                log.warning("reconciler tick failed: %s", first_line(exc))

    def start(self) -> None:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._loop, name="backfill-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread."""
        self._stop.set()
