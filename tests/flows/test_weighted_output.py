"""Importance weights end to end: ``kmeans_sensitivity`` through ``curate`` on both engines.

The pruned dataset of a weighted selector carries an ``importance_weight``
column; a trainer multiplies each example's loss by it, so it must be the
selection's weight of that very row, and the same on every engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from thresher.api import load_run
from thresher.config import RunConfig
from thresher.flows.curate import curate
from thresher.io import schema as S

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.spark]


def _weights(run_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """``id -> importance_weight`` of the pruned dataset and ``id -> weight`` of the kept rows."""
    run = load_run(run_dir)
    data = run.data
    selection = run.selection.filter(run.selection.column("keep"))
    in_data = dict(
        zip(
            data.column("id").to_pylist(), data.column(S.IMPORTANCE_WEIGHT).to_pylist(), strict=True
        )
    )
    selected = dict(
        zip(
            selection.column(S.ID).to_pylist(),
            selection.column("weight").to_pylist(),
            strict=True,
        )
    )
    return in_data, selected


def test_importance_weights_reach_the_dataset_alike_on_both_engines(
    make_config: Callable[..., RunConfig], tmp_path: Path, spark: Any
) -> None:
    def config(name: str, engine: dict[str, Any]) -> RunConfig:
        return make_config(
            run_dir=str(tmp_path / name),
            scorers=[
                {"name": "alpha_fraction"},
                {"name": "embedding", "params": {"dim": 64}},
            ],
            selector={
                "name": "kmeans_sensitivity",
                "params": {"n_clusters": 6},
                "budget": 0.3,
            },
            engine=engine,
        )

    curate(config("local", {"kind": "local", "workers": 2}))
    curate(config("spark", {"kind": "spark"}))

    local_data, local_selected = _weights(tmp_path / "local")
    spark_data, spark_selected = _weights(tmp_path / "spark")
    assert local_data == local_selected  # each row's weight is its own selection weight
    assert spark_data == spark_selected
    assert local_data == spark_data  # and the same on both engines
    weights = list(local_data.values())
    assert len(weights) > 50 and len(set(weights)) > 5  # real, varied weights, not all ones
    assert min(weights) > 0
    data = load_run(tmp_path / "local").data
    assert pc.sum(data.column(S.IMPORTANCE_WEIGHT)).as_py() > data.num_rows  # weights > 1
