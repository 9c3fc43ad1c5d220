"""``join_tables``: the rows of a reference join, in left-row order, whichever path it takes."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.tables import join_tables

keys = st.lists(st.integers(0, 6), max_size=12)


def reference(left: list[int], right: list[int], how: str) -> list[tuple[int, int | None]]:
    """(left row, right row) pairs in left-row, then right-row order."""
    rows: list[tuple[int, int | None]] = []
    for i, key in enumerate(left):
        matches = [j for j, other in enumerate(right) if other == key]
        if how in ("inner", "left"):
            rows += [(i, j) for j in matches]
            if how == "left" and not matches:
                rows.append((i, None))
        elif bool(matches) == (how == "left_semi"):
            rows.append((i, None))
    return rows


@settings(max_examples=80, deadline=None)
@given(keys, keys, st.sampled_from(["inner", "left", "left_semi", "left_anti"]))
def test_join_tables_matches_a_reference_join(left: list[int], right: list[int], how: str) -> None:
    left_table = pa.table(
        {"k": pa.array(left, pa.int64()), "blob": [bytes([i]) * 40 for i in range(len(left))]}
    )
    right_table = pa.table({"k": pa.array(right, pa.int64()), "r": list(range(len(right)))})
    joined = join_tables(left_table, right_table, ["k"], how)
    expected = reference(left, right, how)
    assert joined.column("blob").to_pylist() == [bytes([i]) * 40 for i, _ in expected]
    if how in ("inner", "left"):
        assert joined.column("r").to_pylist() == [j for _, j in expected]


@pytest.mark.parametrize("how", ["left_semi", "inner"])
def test_a_join_keeping_every_left_row_once_returns_the_rows_unchanged(how: str) -> None:
    left = pa.table({"k": [3, 1, 2], "blob": [b"x" * 100, b"y", b"z"]})
    joined = join_tables(left, pa.table({"k": [1, 2, 3]}), ["k"], how)
    assert joined.select(["k", "blob"]).equals(left)
