"""Unit tests for backfills.revisit: passes over skipped rows and what follows them."""

from __future__ import annotations

from backfills.batch import RevisitResult
from backfills.revisit import PassTotals, Step, next_step, revisit_pass


def chunk(last: list[str] | None, changed: int = 0, waiting: int = 0, waited: float = 0.0) -> RevisitResult:
    return RevisitResult(last, changed + waiting, changed, 0, changed, waiting, waited, 0.01)


def test_a_pass_walks_every_chunk_and_adds_them_up() -> None:
    chunks = {None: chunk(["b"], changed=2), ("b",): chunk(["d"], changed=1, waiting=1, waited=0.5),
              ("d",): chunk(None)}
    seen: list[object] = []

    def run(after: list[str] | None) -> RevisitResult:
        seen.append(after)
        return chunks[tuple(after) if after else None]

    assert revisit_pass(run) == PassTotals(changed=3, resolved=3, waiting=1, waited_seconds=0.5)
    assert seen == [None, ["b"], ["d"]]


def test_a_lost_lease_ends_the_pass() -> None:
    assert revisit_pass(lambda after: None) is None


def test_next_step() -> None:
    assert next_step(PassTotals(changed=5), 60) is Step.FINISH
    assert next_step(PassTotals(waiting=2, waited_seconds=59.9), 60) is Step.WAIT
    assert next_step(PassTotals(waiting=2, waited_seconds=60), 60) is Step.GIVE_UP
