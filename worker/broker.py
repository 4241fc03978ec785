"""What is waiting in the Redis broker: slices queued for a free worker.

The reconciler reads this so that a part whose message is only waiting for a free worker
is not mistaken for one whose message was lost. It reads kombu's Redis layout: the queue
list `{prefix}{queue}` and its priority lists. Reserved (unacked) messages do not count:
those of a killed worker stay there until the visibility timeout, and a live worker
(prefetch 1) only reserves a slice it starts at once, which then holds the part's lease.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

import redis as redis_lib

from core.settings import Settings

__all__ = ["waiting_slices"]

_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def _args(message: dict[str, object], task_name: str) -> tuple[str, int] | None:
    headers = message.get("headers") or {}
    if not isinstance(headers, dict) or headers.get("task") != task_name:
        return None
    try:
        body = json.loads(base64.b64decode(str(message["body"])))
        run_id, part = body[0][0], int(body[0][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return str(run_id), part


def _decode(raw: bytes | str) -> dict[str, object] | None:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def waiting_slices(client: redis_lib.Redis, settings: Settings, task_name: str) -> set[tuple[str, int]]:
    """(run_id, part) of every slice message waiting in the broker's queue."""
    prefix = f"{settings.namespace}:celery:"
    queues = [f"{prefix}{settings.queue}"] + [f"{prefix}{settings.queue}{_PRIORITY_SEPARATOR}{p}"
                                              for p in _PRIORITY_STEPS]
    pipe = client.pipeline(transaction=False)
    for key in queues:
        pipe.lrange(key, 0, -1)
    replies: Iterable[list[bytes]] = pipe.execute()
    found = set()
    for reply in replies:
        for raw in reply:
            message = _decode(raw)
            args = _args(message, task_name) if message else None
            if args:
                found.add(args)
    return found
