"""Reading the slices that wait in the real Redis broker."""

from __future__ import annotations

import redis as redis_lib

from core.settings import Settings
from worker.broker import waiting_slices
from worker.runtime import TASK_NAME, Runtime


def test_queued_slices_are_seen_with_their_run_and_part(settings: Settings, redis_client: redis_lib.Redis) -> None:
    runtime = Runtime.from_settings(settings)
    assert waiting_slices(redis_client, settings, TASK_NAME) == set()
    runtime.dispatch("11111111-1111-1111-1111-111111111111", 0)
    runtime.dispatch("11111111-1111-1111-1111-111111111111", 2, "a-lease-token")
    runtime.app.send_task("some.other_task", args=["22222222-2222-2222-2222-222222222222", 1], queue=settings.queue)
    assert waiting_slices(redis_client, settings, TASK_NAME) == {
        ("11111111-1111-1111-1111-111111111111", 0), ("11111111-1111-1111-1111-111111111111", 2)}
    other = Settings(**{**settings.__dict__, "namespace": settings.namespace + "x", "queue": settings.queue + "x"})
    assert waiting_slices(redis_client, other, TASK_NAME) == set()
