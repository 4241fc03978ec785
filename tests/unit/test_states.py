"""Unit tests for backfills.states: the run state machine, checked pair by pair."""

from __future__ import annotations

import itertools

import pytest

from backfills.states import (
    ACTIVE,
    STATES,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    can_transition,
    check_transition,
)

# The contract, written out independently of the module under test.
EXPECTED_EDGES = {
    ("queued", "running"), ("queued", "paused"), ("queued", "cancelled"), ("queued", "failed"),
    ("running", "paused"), ("running", "succeeded"), ("running", "completed_with_errors"),
    ("running", "failed"), ("running", "cancelled"),
    ("paused", "queued"), ("paused", "cancelled"),
}
ALL_PAIRS = list(itertools.product(STATES, STATES))


def test_states_are_the_spec_states_in_order() -> None:
    assert STATES == ("queued", "running", "paused", "succeeded", "completed_with_errors",
                      "failed", "cancelled")


def test_active_and_terminal_partition_the_states() -> None:
    assert ACTIVE == {"queued", "running", "paused"}
    assert TERMINAL == {"succeeded", "completed_with_errors", "failed", "cancelled"}
    assert ACTIVE | TERMINAL == set(STATES)
    assert not ACTIVE & TERMINAL


def test_every_state_is_a_key_and_nothing_else() -> None:
    assert set(TRANSITIONS) == set(STATES)


def test_transition_table_matches_the_contract() -> None:
    edges = {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets}
    assert edges == EXPECTED_EDGES


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_have_no_exits(state: str) -> None:
    assert TRANSITIONS[state] == frozenset()
    assert not any(can_transition(state, other) for other in STATES)


@pytest.mark.parametrize("state", sorted(ACTIVE))
def test_active_states_can_always_be_cancelled(state: str) -> None:
    assert can_transition(state, "cancelled")


@pytest.mark.parametrize(("current", "new"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair(current: str, new: str) -> None:
    allowed = (current, new) in EXPECTED_EDGES
    assert can_transition(current, new) is allowed
    if allowed:
        check_transition(current, new, "r-1")
        return
    with pytest.raises(InvalidTransition) as info:
        check_transition(current, new, "r-1")
    err = info.value
    assert (err.run_id, err.current, err.new) == ("r-1", current, new)
    assert err.allowed == TRANSITIONS[current]
    assert str(err).startswith(f"run r-1 is {current}; it cannot become {new}")


def test_message_names_the_allowed_targets() -> None:
    with pytest.raises(InvalidTransition, match=r"it can only become cancelled, queued"):
        check_transition("paused", "running", "abc")


def test_message_for_a_finished_run() -> None:
    with pytest.raises(InvalidTransition, match=r"^run abc is failed; it cannot become running \(.*finished"):
        check_transition("failed", "running", "abc")


def test_message_without_a_run_id() -> None:
    with pytest.raises(InvalidTransition, match=r"^the run is succeeded; it cannot become queued"):
        check_transition("succeeded", "queued")


def test_invalid_transition_is_not_a_value_error() -> None:
    assert not issubclass(InvalidTransition, ValueError)


@pytest.mark.parametrize(("current", "new"), [
    ("bogus", "running"), ("running", "bogus"), ("Running", "paused"), ("queued", ""), ("done", "done"),
])
def test_unknown_states_raise_value_error(current: str, new: str) -> None:
    with pytest.raises(ValueError, match="unknown run state"):
        can_transition(current, new)
    with pytest.raises(ValueError, match="unknown run state"):
        check_transition(current, new)
