"""Which batch failures are worth retrying, and how long to keep trying. Pure.

Transient: the connection dropped or could not be made, the server is shutting down
or starting (57P01/57P02/57P03), we reached a demoted primary (25006), the server ended a
batch left idle in its transaction (25P03: the worker stalled), serialization failures
and deadlocks (40001/40P01). A `lock_timeout` (55P03) is retried after a
back-off with a smaller batch; a `statement_timeout` (57014) halves the batch. Any
other error fails the batch, with its reason kept on the run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

__all__ = ["Failure", "RetryPolicy", "classify"]

_TRANSIENT_STATES = {"57P01", "57P02", "57P03", "25006", "25P03", "40001", "40P01", "08000", "08001",
                     "08003", "08004", "08006", "08007", "08P01"}


class Failure(Enum):
    """What kind of failure a batch hit."""

    TRANSIENT = "transient"
    LOCK_TIMEOUT = "lock_timeout"
    STATEMENT_TIMEOUT = "statement_timeout"
    FATAL = "fatal"


def classify(sqlstate: str | None, connection_lost: bool) -> Failure:
    """Classify a database failure from its SQLSTATE (None when there is none)."""
    if sqlstate == "55P03":
        return Failure.LOCK_TIMEOUT
    if sqlstate == "57014":
        return Failure.STATEMENT_TIMEOUT
    if sqlstate in _TRANSIENT_STATES or (sqlstate is None and connection_lost):
        return Failure.TRANSIENT
    return Failure.FATAL


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with full jitter, for up to `window_seconds` in a row."""

    window_seconds: float = 300.0
    base_seconds: float = 0.2
    max_seconds: float = 10.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        cap = min(self.max_seconds, self.base_seconds * (2 ** max(attempt - 1, 0)))
        return (rng or random).uniform(cap / 2, cap)

    def gives_up(self, failing_for: float) -> bool:
        """Whether a failure that has lasted `failing_for` seconds is past the window."""
        return failing_for >= self.window_seconds
