"""Run states and the transitions allowed between them (SPEC §3). Pure, no IO.

    queued -> running -> succeeded | completed_with_errors | failed
       |         |
       +-> paused <-+      paused -> queued (resume puts the run back in the queue)
    any active state -> cancelled

Terminal states have no exits: a finished run is never restarted; `retry-errors`
creates a new run instead.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE",
    "RunState",
    "STATES",
    "TERMINAL",
    "TRANSITIONS",
    "InvalidTransition",
    "can_transition",
    "check_transition",
]


class RunState(StrEnum):
    """The state of a run (its value is the name SPEC gives it, stored as such)."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATES: tuple[str, ...] = tuple(state.value for state in RunState)

ACTIVE: frozenset[str] = frozenset({"queued", "running", "paused"})
TERMINAL: frozenset[str] = frozenset({"succeeded", "completed_with_errors", "failed", "cancelled"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "paused", "cancelled", "failed"}),
    "running": frozenset({"paused", "succeeded", "completed_with_errors", "failed", "cancelled"}),
    "paused": frozenset({"queued", "cancelled"}),
    "succeeded": frozenset(),
    "completed_with_errors": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


class InvalidTransition(Exception):
    """A run cannot move from its current state to the requested one (exit 2).

    Attributes: `run_id` (may be empty), `current`, `new`, and `allowed` (the states
    `current` may become).
    """

    def __init__(self, current: str, new: str, run_id: str = "", *, reason: str | None = None) -> None:
        self.run_id = run_id
        self.current = current
        self.new = new
        self.allowed: frozenset[str] = TRANSITIONS.get(current, frozenset())
        super().__init__(reason or self._default_message())

    def _default_message(self) -> str:
        subject = f"run {self.run_id}" if self.run_id else "the run"
        if not self.allowed:
            hint = f"a {self.current} run is finished and cannot change state"
        else:
            hint = "it can only become " + ", ".join(sorted(self.allowed))
        return f"{subject} is {self.current}; it cannot become {self.new} ({hint})"


def _require_known(state: str) -> None:
    if state not in TRANSITIONS:
        raise ValueError(f"unknown run state {state!r}; known states: {', '.join(STATES)}")


def can_transition(current: str, new: str) -> bool:
    """Whether a run in state `current` may become `new`. Unknown states raise `ValueError`."""
    _require_known(current)
    _require_known(new)
    return new in TRANSITIONS[current]


def check_transition(current: str, new: str, run_id: str = "") -> None:
    """Raise `InvalidTransition` unless `current -> new` is allowed (`ValueError` for unknown states)."""
    if not can_transition(current, new):
        raise InvalidTransition(current, new, run_id)
