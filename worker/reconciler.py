"""The reconciler: a thread in the `backfill worker` main process that re-queues run
parts whose task message was lost. One reconciler acts per tick across all workers."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from backfills.control import RunControl, reconcile_lock
from backfills.reconcile import PartReading, stale_parts
from core.errors import first_line
from worker.broker import waiting_slices
from worker.runtime import TASK_NAME, Runtime

__all__ = ["Reconciler"]

log = logging.getLogger("backfill.reconciler")


class Reconciler:
    """Looks at active runs every `reconcile_seconds` and re-queues stale parts."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[tuple[str, int]]:
        """One pass; returns the (run, part) pairs re-queued."""
        client = self.runtime.redis
        if not reconcile_lock(client, self.settings.namespace, self.settings.reconcile_seconds * 0.9):
            return []
        requeued = []
        now = datetime.now(timezone.utc)
        waiting = waiting_slices(client, self.settings, TASK_NAME)
        for run in self.runtime.store.active():
            control = RunControl(client, self.settings.namespace, run.id)
            readings = [PartReading(p.part, p.done, control.lease(p.part, 1).holder_ttl() is not None,
                                    max(p.updated_at, run.updated_at), (run.id, p.part) in waiting)
                        for p in run.parts]
            checkpoints = {part: datetime.fromtimestamp(cp.at, timezone.utc)
                           for part, cp in control.checkpoints().items()}
            for part in stale_parts(run.state, readings, checkpoints, now, self.settings.stale_seconds):
                log.warning("run %s part %s has no live worker; re-queuing it", run.id, part)
                self.runtime.dispatch(run.id, part)
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
