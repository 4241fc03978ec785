"""Unit tests for the pure parts of backfills.control (no Redis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backfills.control import Checkpoint, checkpoint_from_hash, checkpoint_to_hash, escape_glob

_finite = st.floats(allow_nan=False, allow_infinity=False)
checkpoints = st.builds(
    Checkpoint,
    cursor=st.none() | st.lists(st.text(), max_size=3),
    rows_processed=st.integers(min_value=0, max_value=2**62),
    batches=st.integers(min_value=0, max_value=2**40),
    row_errors=st.integers(min_value=0, max_value=2**40),
    at=_finite,
    batch_size=st.integers(min_value=1, max_value=10**7),
    last_batch_seconds=_finite,
    throttled=st.none() | st.text(),
)


@given(checkpoints)
def test_checkpoint_hash_round_trip(checkpoint: Checkpoint) -> None:
    assert checkpoint_from_hash(checkpoint_to_hash(checkpoint)) == checkpoint


@given(checkpoints)
def test_checkpoint_round_trip_through_bytes(checkpoint: Checkpoint) -> None:
    as_bytes = {k.encode(): v.encode() for k, v in checkpoint_to_hash(checkpoint).items()}
    assert checkpoint_from_hash(as_bytes) == checkpoint


def test_none_fields_are_left_out_of_the_hash() -> None:
    fields = checkpoint_to_hash(Checkpoint(None, 1, 1, 0, 1.5, 10, 0.1, None))
    assert "cursor" not in fields and "throttled" not in fields


def _unescape(pattern: str) -> str:
    """Read a pattern as Redis glob does, failing on any unescaped wildcard."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "\\":
            out.append(pattern[i + 1])
            i += 2
            continue
        assert pattern[i] not in "*?[]", f"unescaped wildcard in {pattern!r}"
        out.append(pattern[i])
        i += 1
    return "".join(out)


@given(st.text(alphabet="ab*?[]\\:^-", max_size=12))
def test_escape_glob_matches_itself_literally(text: str) -> None:
    assert _unescape(escape_glob(text)) == text


def test_escape_glob_examples() -> None:
    assert escape_glob("ns:run:r1:") == "ns:run:r1:"
    assert escape_glob("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"
