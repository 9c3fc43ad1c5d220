"""A token budget through `curate`: the same kept ids on both engines, never over the total.

The sample corpus is scored with ``token_count`` (a tiny tokenizer fitted
in the run) and ``word_count``; the selector keeps the highest word counts
per class until the next document would exceed the token total. The
manifest, the dataset card and the report show the kept tokens next to the
kept documents, and the requested total.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from rich.console import Console

from thresher.config import RunConfig
from thresher.flows.curate import curate
from thresher.reporting.console import render_inspect

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.spark]
TOTAL = 60_000
CLASSES = 5  # topics of the sample corpus


def _config(make_config: Callable[..., RunConfig], run: Path, engine: str) -> RunConfig:
    return make_config(
        run_dir=str(run),
        scorers=[
            {"name": "word_count"},
            {"name": "token_count", "params": {"lm": {"vocab_size": 400, "n_documents": 200}}},
        ],
        filters=[],
        selector={
            "name": "topk",
            "params": {"score": "word_count", "by_label": True},
            "budget": {"tokens": TOTAL},
        },
        engine={"kind": engine, "workers": 2},
    )


def test_a_token_budget_keeps_the_same_rows_on_both_engines_and_reports_its_tokens(
    make_config: Callable[..., RunConfig], tmp_path: Path, spark: Any
) -> None:
    kept: dict[str, list[str]] = {}
    for engine in ("local", "spark"):
        root = tmp_path / engine
        manifest = curate(_config(make_config, root, engine))
        assert manifest["counts"]["reconciles"]
        data = ds.dataset(root / "data", format="parquet").to_table()
        kept[engine] = sorted(data.column("id").to_pylist())
        scores = ds.dataset(root / "scores", format="parquet").to_table()
        tokens = dict(
            zip(
                scores.column("id").to_pylist(),
                scores.column("token_count").to_pylist(),
                strict=True,
            )
        )
        kept_tokens = sum(tokens[i] for i in kept[engine])
        # never over; each class stops short of its share by less than one document
        assert TOTAL - CLASSES * max(tokens.values()) < kept_tokens <= TOTAL
        assert manifest["counts"]["tokens"] == {
            "column": "token_count",
            "kept": kept_tokens,
            "ingested": sum(tokens.values()),
            "requested": TOTAL,
        }
        assert manifest["selection_steps"][-1]["budget"] == {"sum": "token_count", "total": TOTAL}
        card = (root / "README.md").read_text(encoding="utf-8")
        assert f"| kept `token_count` (sum) | {kept_tokens:,} |" in card
        assert f"| requested `token_count` (budget) | {TOTAL:,} |" in card
        assert f"token_count <= {TOTAL:,}" in card
        report = (root / "report.html").read_text(encoding="utf-8")
        assert "kept token_count (sum)" in report and "requested token_count" in report
        recorded = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        assert recorded["counts"]["tokens"]["kept"] == kept_tokens
        console = Console(record=True, width=200)
        render_inspect(str(root), console)  # `thresher inspect`
        assert f"kept {kept_tokens:,} token_count of {TOTAL:,} requested" in console.export_text()
    assert kept["local"] == kept["spark"]
