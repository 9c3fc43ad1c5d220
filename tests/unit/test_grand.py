"""GraNd: the last-layer gradient norm, checked against autograd and the EL2N identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
from thresher.io import schema as S
from thresher.models._safe import load_safetensors
from thresher.models.proxy import ProxyModel
from thresher.scorers import make_scorer


def _autograd_norms(directory: Path, epoch: int, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example || d CE / d (last layer W, b) || for seed 0, by autograd (float64)."""
    weights = load_safetensors(directory / "seed-0" / f"epoch-{epoch:03d}.safetensors")
    w1 = torch.tensor(weights.get("hidden.weight", np.zeros(0)), dtype=torch.float64)
    b1 = torch.tensor(weights.get("hidden.bias", np.zeros(0)), dtype=torch.float64)
    norms = []
    for row, label in zip(torch.tensor(x, dtype=torch.float64), labels, strict=True):
        w = torch.tensor(weights["out.weight"], dtype=torch.float64, requires_grad=True)
        b = torch.tensor(weights["out.bias"], dtype=torch.float64, requires_grad=True)
        h = torch.relu(w1 @ row + b1) if w1.numel() else row
        loss = torch.nn.functional.cross_entropy((w @ h + b)[None], torch.tensor([int(label)]))
        gw, gb = torch.autograd.grad(loss, [w, b])
        norms.append(torch.sqrt((gw**2).sum() + (gb**2).sum()).item())
    return np.asarray(norms)


@pytest.mark.parametrize("hidden", [0, 8], ids=["linear", "mlp"])
def test_grand_is_the_last_layer_gradient_norm(tmp_path: Path, hidden: int) -> None:
    table = _vector_table()
    proxy = {"features": {"source": "features"}, "hidden": hidden, "epochs": 2, "n_seeds": 1}
    context = fit_context(table, tmp_path / "models" / "grand")
    grand = make_scorer("grand", {"proxy": proxy, "epoch": 2})
    el2n = make_scorer("el2n", {"proxy": proxy, "epoch": 2})
    grand.fit(context)
    el2n.fit(context)
    batch = batch_of(table, grand.input_columns)
    values = grand.score(batch).to_numpy()

    model = ProxyModel.load(Path(grand.proxy_path_), epochs=[2])
    x = model.features(table).numpy()
    labels = model.label_indices(table.column(S.LABEL))
    expected = _autograd_norms(Path(grand.proxy_path_), 2, x, labels)
    np.testing.assert_allclose(values, expected, rtol=1e-6)

    if hidden == 0:  # the identity of Paul et al.: GraNd = EL2N * sqrt(1 + ||h||^2), h = x
        identity = el2n.score(batch).to_numpy() * np.sqrt(1.0 + (x**2).sum(axis=1))
        np.testing.assert_allclose(values, identity, rtol=1e-6)
        assert np.ptp((x**2).sum(axis=1)) > 1.0  # norms differ: the identity is not trivial


def test_grand_flags_flipped_labels(tmp_path_factory: pytest.TempPathFactory) -> None:
    table = noisy_topics()
    scorer = make_scorer("grand", {"proxy": SMALL_PROXY, "epoch": 3})
    scorer.fit(shared_context(tmp_path_factory, table, "grand"))
    values = scorer.score(batch_of(table, scorer.input_columns)).to_numpy()
    assert auc(values, table.column("flipped").to_numpy()) > 0.9
