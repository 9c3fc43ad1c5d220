"""The cleanlab comparison of the label_issues benchmark runs at a tiny size and agrees."""

from __future__ import annotations

import pytest

from benchmarks.label_issues import blobs, run_dataset


def test_flagged_set_matches_cleanlab_at_a_tiny_size() -> None:
    pytest.importorskip("cleanlab")
    x, truth = blobs(300)
    result = run_dataset("blobs", x, truth)
    assert result["cleanlab"]["n"] == 300
    assert result["cleanlab"]["differences"] == []
    assert result["cleanlab"]["thresher"] > 0
    assert result["aurocs"]["label_issues (self-confidence)"] > 0.8
