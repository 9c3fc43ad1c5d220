"""`dynamic_el2n` in an eval: beside random at every rate, its rows read like a selector's.

A tiny labelled set (feature vectors, no scorer: dynamic pruning scores
with the model it trains) goes through the eval flow once; the results,
the summary and the curve hold dynamic pruning's rows at each rate with as
many rows kept per period as random keeps. The configuration refuses it
for the language-model task and checks its parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.errors import ConfigError
from thresher.evaluation.config import parse_eval_config
from thresher.evaluation.jobs import budget_rows

RATES = [0.5, 0.8]
SEEDS = 2
DYNAMIC = {"name": "dynamic_el2n", "params": {"every": 1}}


def _blobs(directory: Path) -> None:
    """Three Gaussian classes as `vec` vectors: 600 training rows and 150 test rows."""
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 750)
    x = rng.normal(scale=1.2, size=(3, 12))[targets] + rng.normal(size=(750, 12))
    table = pa.table(
        {
            "uid": [f"r{i:04d}" for i in range(750)],
            "vec": pa.array(x.astype(np.float32).tolist(), pa.list_(pa.float32())),
            "y": targets,
        }
    )
    (directory / "train").mkdir(parents=True)
    (directory / "test").mkdir()
    pq.write_table(table.slice(0, 600), directory / "train" / "part-0.parquet")
    pq.write_table(table.slice(600), directory / "test" / "test.parquet")


def _config(root: Path, **eval_overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "test": {"paths": [str(root / "data" / "test" / "*.parquet")]},
        "validation": 0.0,
        "rates": RATES,
        "seeds": SEEDS,
        "selectors": [DYNAMIC],
        "full": False,
        "model": {"hidden": 0, "steps": 60, "batch_size": 32, "lr": 0.1, "weight_decay": 0.0},
    }
    section.update(eval_overrides)
    return {
        "run_dir": str(root / "out"),
        "seed": 3,
        "input": {"paths": [str(root / "data" / "train" / "*.parquet")]},
        "schema": {"id": "uid", "text": None, "features": "vec", "label": "y"},
        "engine": {"kind": "local", "workers": 1},
        "eval": section,
    }


def test_dynamic_pruning_sits_beside_random_at_every_rate(
    tmp_path: Path, prefect_server: None
) -> None:
    import thresher

    _blobs(tmp_path / "data")
    evaluation = thresher.evaluate(_config(tmp_path), quiet=True)
    results = evaluation.results
    n_pool = evaluation.record["splits"]["rows"]["train"]
    assert n_pool == 600
    for rate in RATES:
        at = results[results["prune_rate"] == rate]
        assert sorted(at["selector"]) == ["dynamic_el2n"] * SEEDS + ["random"] * SEEDS
        assert set(at["n_kept"]) == {budget_rows(rate, n_pool)}
        assert set(at["fraction_kept"]) == {budget_rows(rate, n_pool) / n_pool}
    dynamic = results[results["selector"] == "dynamic_el2n"].set_index(["prune_rate", "seed"])
    # 600 // 32 = 18 steps on the pool, then epochs of the subset: 300 // 32 = 9 steps
    # (5 rescorings) at rate 0.5, 120 // 32 = 3 steps (14 rescorings) at 0.8
    assert dynamic["rescorings"].to_dict() == {
        (0.5, 0): 5,
        (0.5, 1): 5,
        (0.8, 0): 14,
        (0.8, 1): 14,
    }
    assert dynamic["ever_trained"].between(0.9, 1.0).all()
    assert (dynamic["ever_kept"] >= dynamic["fraction_kept"]).all()
    assert dynamic["accuracy"].between(0.6, 1.0).all()
    assert set(results.loc[results["selector"] == "random", "rescorings"].isna()) == {True}

    summary = evaluation.summary
    rows = summary[summary["selector"] == "dynamic_el2n"]
    assert rows["prune_rate"].tolist() == RATES and (rows["n_seeds"] == SEEDS).all()
    assert rows["diff_vs_random"].notna().all()
    assert "dynamic_el2n" in evaluation.curve.read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"selectors": [{**DYNAMIC, "params": {"every": 0}}]},
            r"eval.selectors\[0\] \(dynamic_el2n.*every: Input should be greater than 0",
        ),
        (
            {"selectors": [{**DYNAMIC, "partitions": {"clusters": 2}}]},
            "dynamic_el2n prunes the whole pool",
        ),
        (
            {"task": "language_model", "validation": 0.1},
            "language_model task does not support it",
        ),
    ],
)
def test_the_configuration_checks_dynamic_pruning(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    data = _config(tmp_path)
    data["eval"].update(change)
    if change.get("task"):
        data["schema"]["text"] = "text"
    with pytest.raises(ConfigError, match=message):
        parse_eval_config(data, base_dir=tmp_path)
    searched = _config(tmp_path, validation=0.1)
    searched["eval"]["selectors"] = [{**DYNAMIC, "search": {"every": [1, 2]}}]
    config = parse_eval_config(searched, base_dir=tmp_path)
    assert [s.display for s in config.selectors] == ["random", "dynamic_el2n"]
