"""TracIn-CP influence: the formula against autograd, projection, targets, planted noise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers.batches import vector_table as _vector_table
from tests.helpers.proxy_data import (
    SMALL_PROXY,
    auc,
    batch_of,
    fit_context,
    noisy_topics,
    shared_context,
)
from thresher.errors import ConfigError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.models._safe import load_safetensors
from thresher.models.proxy import ProxyModel
from thresher.scorers import make_scorer


def _gradients(directory: Path, epoch: int, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example flattened last-layer gradient [dW, db] at (seed 0, epoch), by autograd."""
    weights = load_safetensors(directory / "seed-0" / f"epoch-{epoch:03d}.safetensors")
    out = []
    for row, label in zip(torch.tensor(x, dtype=torch.float64), labels, strict=True):
        w = torch.tensor(weights["out.weight"], dtype=torch.float64, requires_grad=True)
        b = torch.tensor(weights["out.bias"], dtype=torch.float64, requires_grad=True)
        loss = torch.nn.functional.cross_entropy((w @ row + b)[None], torch.tensor([int(label)]))
        gw, gb = torch.autograd.grad(loss, [w, b])
        out.append(torch.cat([gw.reshape(-1), gb]).numpy())
    return np.stack(out)


def test_tracin_sums_learning_rate_times_gradient_products(tmp_path: Path) -> None:
    table = _vector_table(n=120)
    proxy = {"features": {"source": "features"}, "hidden": 0, "epochs": 3, "n_seeds": 1, "lr": 0.05}
    targets = table.slice(0, 10)
    target_file = tmp_path / "targets.parquet"
    pq.write_table(targets.select([S.FEATURES, S.LABEL]), target_file)
    scorer = make_scorer(
        "influence", {"proxy": proxy, "projection_dim": None, "target_file": str(target_file)}
    )
    scorer.fit(fit_context(table, tmp_path / "models" / "influence"))
    result = scorer.score(batch_of(table, scorer.input_columns))
    self_influence, target_influence = (result.field(i).to_numpy() for i in range(2))

    directory = Path(scorer.proxy_path_)
    model = ProxyModel.load(directory)
    x = model.features(table).numpy()
    labels = model.label_indices(table.column(S.LABEL))
    expected_self = np.zeros(table.num_rows)
    expected_target = np.zeros(table.num_rows)
    for epoch in (1, 2, 3):
        g = _gradients(directory, epoch, x, labels)
        expected_self += 0.05 * (g * g).sum(axis=1)
        expected_target += 0.05 * (g @ g[:10].T).mean(axis=1)
    np.testing.assert_allclose(self_influence, expected_self, rtol=1e-6)
    np.testing.assert_allclose(target_influence, expected_target, rtol=1e-5, atol=1e-9)


@pytest.fixture(scope="module")
def topics(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    return noisy_topics()


def _score(params: dict[str, Any], table: pa.Table, context: FitContext) -> np.ndarray:
    """Every output of an influence scorer with ``params`` as columns of an ``(n, k)`` array."""
    scorer = make_scorer("influence", {"proxy": SMALL_PROXY, **params})
    scorer.fit(context)
    result = scorer.score(batch_of(table, scorer.input_columns))
    if isinstance(result, pa.StructArray):
        return np.stack([result.field(i).to_numpy() for i in range(result.type.num_fields)], 1)
    return result.to_numpy()[:, None]


def test_self_influence_flags_flipped_labels_with_or_without_projection(
    topics: pa.Table, tmp_path_factory: pytest.TempPathFactory
) -> None:
    flipped = topics.column("flipped").to_numpy()
    context = shared_context(tmp_path_factory, topics, "influence")
    exact = _score({"projection_dim": None}, topics, context)[:, 0]
    projected = _score({"projection_dim": 8}, topics, context)[:, 0]
    assert auc(exact, flipped) > 0.9
    assert auc(projected, flipped) > 0.9
    # a 33-wide [h, 1] projected to 8 dimensions: close to the exact values, not equal
    assert np.corrcoef(exact, projected)[0, 1] > 0.8
    assert not np.allclose(exact, projected)


def test_target_by_ids_id_file_or_records_agree_and_favour_the_target_topic(
    topics: pa.Table, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    flipped = topics.column("flipped").to_numpy()
    labels = np.asarray(topics.column(S.LABEL).to_pylist())
    target_rows = np.flatnonzero((labels == "sports") & ~flipped)[:20]
    target_ids = [topics.column(S.ID)[int(i)].as_py() for i in target_rows]
    (tmp_path / "ids.txt").write_text("\n".join(target_ids) + "\n\n")
    records = topics.take(pa.array(target_rows)).select([S.TEXT, S.LABEL])
    records = records.rename_columns(["body", "topic"])
    with (tmp_path / "targets.jsonl").open("w") as handle:
        for record in records.to_pylist():
            handle.write(json.dumps(record) + "\n")

    models = tmp_path_factory.getbasetemp() / "noisy-topics-run" / "models"
    by_ids = _score({"target_ids": target_ids}, topics, fit_context(topics, models / "ids"))
    by_file = _score(
        {"target_file": str(tmp_path / "ids.txt")}, topics, fit_context(topics, models / "file")
    )
    by_records = _score(
        {
            "target_file": str(tmp_path / "targets.jsonl"),
            "target_columns": {"text": "body", "label": "topic"},
        },
        topics,
        fit_context(topics, models / "records"),
    )
    np.testing.assert_array_equal(by_ids, by_file)
    np.testing.assert_allclose(by_ids, by_records, rtol=1e-6)
    helpful = (labels == "sports") & ~flipped
    assert auc(by_ids[:, 1], helpful) > 0.9


def test_bad_targets_are_refused(
    topics: pa.Table, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = tmp_path_factory.getbasetemp() / "noisy-topics-run" / "models"
    with pytest.raises(ValueError, match="not both"):  # refused when the config loads
        make_scorer("influence", {"target_ids": ["a"], "target_file": "ids.txt"})
    scorer = make_scorer("influence", {"proxy": SMALL_PROXY, "target_ids": ["doc-999999"]})
    with pytest.raises(ConfigError, match="not in the ingested corpus"):
        scorer.fit(fit_context(topics, models / "bad-a"))
    scorer = make_scorer("influence", {"proxy": SMALL_PROXY, "target_file": str(tmp_path / "no")})
    with pytest.raises(ConfigError, match="does not exist"):
        scorer.fit(fit_context(topics, models / "bad-b"))
    records = tmp_path / "t.parquet"
    pq.write_table(pa.table({S.TEXT: ["a match"], S.LABEL: ["knitting"]}), records)
    scorer = make_scorer("influence", {"proxy": SMALL_PROXY, "target_file": str(records)})
    with pytest.raises(ConfigError, match="knitting"):
        scorer.fit(fit_context(topics, models / "bad-c"))
