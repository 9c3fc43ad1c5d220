"""Property tests are derandomised unless a developer asks otherwise, so a CI failure reproduces."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

DRAWN: list[list[int]] = []


@pytest.mark.skipif(
    os.environ.get("HYPOTHESIS_PROFILE", "ci") != "ci", reason="another profile was asked for"
)
def test_the_ci_profile_draws_the_same_examples_every_time() -> None:
    assert settings.default.derandomize and settings.default.database is None

    @settings(max_examples=5)
    @given(st.lists(st.integers(), min_size=1))
    def draw(values: list[int]) -> None:
        DRAWN.append(values)

    draw()
    first = list(DRAWN)
    DRAWN.clear()
    draw()
    assert first == DRAWN
