"""Mimic score: the formula against autograd, the reference head's training, planted flips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.helpers.proxy_data import auc, batch_of, fit_context
from thresher.errors import ConfigError
from thresher.io import schema as S
from thresher.models._safe import load_safetensors
from thresher.models.classifier import batch_rows
from thresher.models.proxy import ProxyModel
from thresher.models.reference_heads import BATCH_SALT, REFERENCE_FILE, REFERENCE_META
from thresher.registry import RegistryError
from thresher.scorers import make_scorer
from thresher.scorers.mimic import MimicScorer

# A linear proxy on well separated blobs: trained in well under a second.
PROXY = {
    "features": {"source": "features"},
    "hidden": 0,
    "epochs": 3,
    "n_seeds": 2,
    "batch_size": 32,
    "lr": 0.1,
    "weight_decay": 1e-3,
}


def _blobs(n: int = 300, n_classes: int = 3, flip: float = 0.15, seed: int = 0) -> pa.Table:
    """Gaussian blobs, a ``flip`` fraction of labels moved to another class (column ``flipped``)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n)
    x = rng.standard_normal((n_classes, 6))[truth] * 3.0 + rng.standard_normal((n, 6))
    flipped = rng.random(n) < flip
    given = np.where(flipped, (truth + rng.integers(1, n_classes, n)) % n_classes, truth)
    return pa.table(
        {
            S.ID: [f"r{i}" for i in range(n)],
            S.FEATURES: pa.array(x.tolist(), pa.list_(pa.float32())),
            S.LABEL: [f"c{g}" for g in given],
            S.SHARD: pa.array(np.zeros(n, dtype=np.int32)),
            S.ROW: pa.array(np.arange(n, dtype=np.int64)),
            "flipped": flipped,
        }
    )


@pytest.fixture(scope="module")
def blobs() -> pa.Table:
    return _blobs()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run's models directory for the module: equal settings share a proxy and reference."""
    return tmp_path_factory.mktemp("mimic-run") / "models"


def _clean_ids(table: pa.Table, n: int = 40) -> list[str]:
    """The first ``n`` ids whose label is right: the reference's target."""
    flipped = table.column("flipped").to_numpy(zero_copy_only=False)
    ids = table.column(S.ID).to_pylist()
    return [i for i, f in zip(ids, flipped, strict=True) if not f][:n]


def _fitted(params: dict[str, Any], table: pa.Table, directory: Path) -> MimicScorer:
    scorer = make_scorer("mimic", {"proxy": PROXY, "device": "cpu", **params})
    assert isinstance(scorer, MimicScorer)
    scorer.fit(fit_context(table, directory))
    return scorer


def _scores(scorer: MimicScorer, table: pa.Table) -> np.ndarray:
    return scorer.score(batch_of(table, scorer.input_columns)).to_numpy(zero_copy_only=False)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_flipped_labels_score_below_clean_ones_and_unknown_labels_are_nan(
    blobs: pa.Table, models: Path
) -> None:
    clean = _clean_ids(blobs)
    flipped = blobs.column("flipped").to_numpy(zero_copy_only=False)
    fitted = {
        normalize: _fitted({"target_ids": clean, "normalize": normalize}, blobs, models / normalize)
        for normalize in ("projection", "cosine", "none")
    }
    for normalize, scorer in fitted.items():
        assert auc(_scores(scorer, blobs), ~flipped) > 0.9, normalize
    # one reference for the three (same proxy and target), another for another target
    assert len({s.reference_path_ for s in fitted.values()}) == 1
    other = _fitted({"target_ids": clean[:20]}, blobs, models / "other")
    assert other.reference_path_ != fitted["none"].reference_path_
    # the reference fits the target better than the checkpoints it started from
    meta = json.loads((Path(other.reference_path_) / REFERENCE_META).read_text())
    assert meta["target_loss"]["reference"] < meta["target_loss"]["proxy"]

    odd = blobs.slice(0, 3).set_column(
        blobs.schema.get_field_index(S.LABEL), S.LABEL, pa.array(["c9", None, "c1"])
    )
    values = _scores(fitted["projection"], odd)
    assert np.isnan(values[:2]).all() and np.isfinite(values[2])


def _autograd_mimic(
    proxy_dir: Path, reference_dir: Path, x: np.ndarray, labels: np.ndarray, normalize: str
) -> np.ndarray:
    """Mean over checkpoints of <-grad L, W_ref - W> (normalised), gradients by autograd."""
    model = ProxyModel.load(proxy_dir)
    reference = load_safetensors(reference_dir / REFERENCE_FILE)
    total = np.zeros(len(labels))
    for k, point in enumerate(model.checkpoints):
        name = f"seed-{point.seed}/epoch-{point.epoch:03d}.safetensors"
        weights = {
            n: torch.tensor(a, dtype=torch.float64)
            for n, a in load_safetensors(proxy_dir / name).items()
        }
        delta = torch.cat(
            [
                (torch.from_numpy(reference["out.weight"][k]) - weights["out.weight"]).reshape(-1),
                torch.from_numpy(reference["out.bias"][k]) - weights["out.bias"],
            ]
        )
        for row, (features, label) in enumerate(zip(x, labels, strict=True)):
            h = torch.tensor(features, dtype=torch.float64)
            if "hidden.weight" in weights:
                h = torch.relu(weights["hidden.weight"] @ h + weights["hidden.bias"])
            w = weights["out.weight"].clone().requires_grad_()
            b = weights["out.bias"].clone().requires_grad_()
            loss = torch.nn.functional.cross_entropy((w @ h + b)[None], torch.tensor([label]))
            grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [w, b])])
            value = float(-grad @ delta)
            if normalize in ("projection", "cosine"):
                value /= float(delta.norm())
            if normalize == "cosine":
                value /= float(grad.norm())
            total[row] += value
    return total / len(model.checkpoints)


@pytest.mark.parametrize("hidden", [0, 8])
def test_score_is_the_autograd_inner_product_with_the_reference_direction(
    blobs: pa.Table, models: Path, hidden: int
) -> None:
    rows = blobs.slice(0, 6)
    for normalize in ("none", "projection", "cosine"):
        scorer = _fitted(
            {
                "proxy": {**PROXY, "hidden": hidden},
                "target_ids": _clean_ids(blobs),
                "normalize": normalize,
            },
            blobs,
            models / normalize,
        )
        model = ProxyModel.load(scorer.proxy_path_)
        x = model.features(rows).numpy()
        labels = model.label_indices(rows.column(S.LABEL))
        expected = _autograd_mimic(
            Path(scorer.proxy_path_), Path(scorer.reference_path_), x, labels, normalize
        )
        got = _scores(scorer, rows)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())


def test_reference_head_is_the_checkpoint_trained_on_the_target_by_torch_sgd(
    blobs: pa.Table, models: Path
) -> None:
    """The first checkpoint's head, trained by torch's SGD on the target, equals the saved one."""
    clean = _clean_ids(blobs)
    steps = 50
    scorer = _fitted({"target_ids": clean, "reference_steps": steps}, blobs, models / "sgd")
    proxy_dir = Path(scorer.proxy_path_)
    start = load_safetensors(proxy_dir / "seed-0" / "epoch-001.safetensors")
    target = blobs.filter(pa.compute.is_in(blobs.column(S.ID), pa.array(clean)))
    model = ProxyModel.load(proxy_dir)
    x = model.features(target).to(torch.float64)
    y = torch.from_numpy(model.label_indices(target.column(S.LABEL)))
    head = torch.nn.Linear(x.shape[1], model.n_classes).double()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(start["out.weight"]))
        head.bias.copy_(torch.from_numpy(start["out.bias"]))
    optimiser = torch.optim.SGD(
        head.parameters(), lr=PROXY["lr"], momentum=0.9, weight_decay=PROXY["weight_decay"]
    )
    # 40 rows in batches of 32: one batch per epoch, so 3 epochs are 3 steps, fewer than 50
    rng = np.random.default_rng(np.random.SeedSequence([0, BATCH_SALT]))
    for batch in batch_rows(len(clean), PROXY["batch_size"], steps, rng):
        index = torch.from_numpy(batch)
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(head(x[index]), y[index]).backward()
        optimiser.step()
    saved = load_safetensors(Path(scorer.reference_path_) / REFERENCE_FILE)
    np.testing.assert_allclose(saved["out.weight"][0], head.weight.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(saved["out.bias"][0], head.bias.detach().numpy(), atol=1e-12)
    assert json.loads((Path(scorer.reference_path_) / REFERENCE_META).read_text())["steps"] == 50


def test_scores_do_not_depend_on_batch_size_or_threads(blobs: pa.Table, tmp_path: Path) -> None:
    clean = _clean_ids(blobs)
    results = []
    for threads in (1, 2):
        with _torch_threads(threads):
            scorer = _fitted(
                {"target_ids": clean}, blobs, tmp_path / f"t{threads}" / "models" / "m"
            )
            whole = _scores(scorer, blobs)
            parts = [
                scorer.score(batch).to_numpy(zero_copy_only=False)
                for batch in blobs.select(list(scorer.input_columns)).to_batches(max_chunksize=7)
            ]
        np.testing.assert_array_equal(whole, np.concatenate(parts))
        results.append(whole)
    np.testing.assert_array_equal(results[0], results[1])


def test_a_missing_or_bad_target_is_a_config_error(blobs: pa.Table, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="mimic needs a target set"):  # at config load
        make_scorer("mimic", {"proxy": PROXY})
    with pytest.raises(ConfigError, match="mimic needs a target set"):  # built in Python
        MimicScorer(proxy=PROXY).fit(fit_context(blobs, tmp_path / "a"))
    with pytest.raises(RegistryError, match="not both"):
        make_scorer("mimic", {"target_ids": ["r1"], "target_file": "ids.txt"})
    with pytest.raises(RegistryError, match=r"epoch: 9 is not in 1\.\.3"):
        make_scorer("mimic", {"proxy": PROXY, "target_ids": ["r1"], "epoch": 9})
    scorer = make_scorer("mimic", {"proxy": PROXY, "target_ids": ["r1", "nope"]})
    with pytest.raises(ConfigError, match="not in the ingested corpus"):
        scorer.fit(fit_context(blobs, tmp_path / "models" / "b"))
    records = tmp_path / "target.jsonl"
    records.write_text(json.dumps({"features": [0.0] * 6, "label": "c7"}) + "\n")
    scorer = make_scorer("mimic", {"proxy": PROXY, "target_file": str(records)})
    with pytest.raises(ConfigError, match="c7"):
        scorer.fit(fit_context(blobs, tmp_path / "models" / "c"))
