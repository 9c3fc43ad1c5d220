"""The embedding scorer: hashed n-grams, the proxy's hidden layer, the reference LM."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.helpers.batches import vector_table
from tests.helpers.proxy_data import (
    SMALL_PROXY,
    auc,
    batch_of,
    fit_context,
    noisy_topics,
    shared_context,
)
from thresher.io import schema as S
from thresher.models.features import hashed_ngrams
from thresher.models.proxy import ProxyModel
from thresher.scorers import make_scorer

# A reference LM small enough to train in a few seconds.
TINY_LM = {
    "vocab_size": 300,
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "context_length": 64,
    "n_documents": 100,
    "steps": 10,
    "batch_size": 4,
}


def _matrix(result: pa.Array) -> np.ndarray:
    """The vectors as an (n, width) array; every row must have the same width."""
    assert result.type == pa.list_(pa.float32()) and result.null_count == 0
    lengths = pc.list_value_length(result).to_numpy()
    assert len(set(lengths.tolist())) <= 1
    return result.flatten().to_numpy().reshape(len(result), -1)


def test_hashed_embedding_needs_no_model_and_is_batch_independent() -> None:
    texts = ["The chef baked bread.", "", "Markets rallied today.", "The chef baked bread."]
    scorer = make_scorer("embedding", {"dim": 16})
    assert scorer.output_field("embedding").type == pa.list_(pa.float32())
    assert scorer.width() == 16
    scorer.setup()
    batch = pa.RecordBatch.from_pydict({"text": texts})
    vectors = _matrix(scorer.score(batch))
    assert vectors.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 2, 3]], axis=1), 1.0, rtol=1e-6)
    assert not vectors[1].any()
    np.testing.assert_array_equal(vectors[0], vectors[3])
    np.testing.assert_array_equal(vectors, hashed_ngrams(texts, 16).dense())
    alone = _matrix(scorer.score(batch.slice(2, 1)))
    np.testing.assert_array_equal(alone[0], vectors[2])
    clone = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(_matrix(clone.score(batch)), vectors)


def test_proxy_embedding_is_the_normalised_hidden_layer(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    table = noisy_topics()
    scorer = make_scorer("embedding", {"source": "proxy", "proxy": SMALL_PROXY})
    assert scorer.width() == SMALL_PROXY["hidden"]
    scorer.fit(shared_context(tmp_path_factory, table, "embedding"))
    vectors = _matrix(scorer.score(batch_of(table, scorer.input_columns)))
    model = ProxyModel.load(Path(scorer.model_path_), epochs=[SMALL_PROXY["epochs"]])
    hidden, _ = model.forward(model.features(table))
    expected = hidden[:, 0, :].numpy()
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    # a supervised embedding: documents of one topic are closer to each other
    topic = np.asarray(table.column("true_label").to_pylist())
    same = (topic[:, None] == topic[None, :])[np.triu_indices(len(topic), 1)]
    similarity = (vectors @ vectors.T)[np.triu_indices(len(topic), 1)]
    assert auc(similarity, same) > 0.9


def test_embedding_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match=r"proxy\.hidden"):
        make_scorer("embedding", {"source": "proxy", "proxy": {"hidden": 0}})
    with pytest.raises(ValueError, match="source"):
        make_scorer("embedding", {"source": "pixels"})
    with pytest.raises(ValueError, match="model_path"):
        make_scorer("embedding", {"source": "lm", "model_path": "/no/such/lm"})
    with pytest.raises(ValueError, match=r"embedding\.lm"):
        make_scorer("embedding", {"source": "lm", "lm": {"layers": 2}})


@pytest.fixture(scope="module")
def lm_context(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return shared_context(tmp_path_factory, noisy_topics(), "embedding-lm")


def test_lm_embedding_is_the_reference_lm_mean_state(lm_context) -> None:  # type: ignore[no-untyped-def]
    from thresher.models.lm import ReferenceLM

    table = noisy_topics().slice(0, 40)
    scorer = make_scorer("embedding", {"source": "lm", "lm": TINY_LM})
    assert scorer.width() == TINY_LM["d_model"]
    scorer.fit(lm_context)
    vectors = _matrix(scorer.score(batch_of(table, scorer.input_columns)))
    raw = ReferenceLM.load(scorer.model_path_, device="cpu").embed(table.column(S.TEXT).to_pylist())
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)

    from_path = make_scorer("embedding", {"source": "lm", "model_path": scorer.model_path_})
    assert from_path.width() == TINY_LM["d_model"]
    from_path.fit(lm_context)
    np.testing.assert_array_equal(_matrix(from_path.score(batch_of(table, ("text",)))), vectors)


def test_proxy_on_lm_features_scores_every_row(lm_context) -> None:  # type: ignore[no-untyped-def]
    table = noisy_topics()
    proxy = {**SMALL_PROXY, "max_rows": 150, "features": {"source": "lm", "lm": TINY_LM}}
    scorer = make_scorer("el2n", {"proxy": proxy, "epoch": 4})
    scorer.fit(lm_context)
    values = scorer.score(batch_of(table.slice(0, 50), scorer.input_columns)).to_numpy()
    assert values.shape == (50,) and np.isfinite(values).all()
    model = ProxyModel.load(Path(scorer.proxy_path_), epochs=[4])
    assert model.metadata["input_dim"] == TINY_LM["d_model"]


GRADIENT_PROXY = {
    "features": {"source": "features"},
    "hidden": 8,
    "epochs": 3,
    "n_seeds": 2,
    "lr": 0.05,
    "weight_decay": 0.0,
}


def _autograd_gradients(directory: Path, table: pa.Table, epoch: int) -> np.ndarray:
    """Seed 0's flattened last-layer gradient ``[dW, db]`` per row, by autograd through the proxy."""
    import torch

    from thresher.models._safe import load_safetensors

    weights = {
        name: torch.tensor(value, dtype=torch.float64)
        for name, value in load_safetensors(
            directory / "seed-0" / f"epoch-{epoch:03d}.safetensors"
        ).items()
    }
    model = ProxyModel.load(directory, epochs=[epoch])
    x = model.features(table)
    labels = model.label_indices(table.column(S.LABEL))
    out = []
    for row, label in zip(x, labels, strict=True):
        w = weights["out.weight"].clone().requires_grad_(True)
        b = weights["out.bias"].clone().requires_grad_(True)
        h = torch.relu(weights["hidden.weight"] @ row + weights["hidden.bias"])
        loss = torch.nn.functional.cross_entropy((w @ h + b)[None], torch.tensor([int(label)]))
        out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [w, b])]).numpy())
    return np.stack(out)


@pytest.fixture(scope="module")
def gradient_rows(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Labelled feature rows (4 classes) and a fit context on them; rows 3 and 8 then lose their label."""
    table = vector_table(n=160)
    context = fit_context(table, tmp_path_factory.mktemp("gradient") / "models" / "embedding")
    labels = table.column(S.LABEL).to_pylist()
    labels[3], labels[8] = None, "never-seen"  # no class of the proxy
    table = table.set_column(table.schema.get_field_index(S.LABEL), S.LABEL, pa.array(labels))
    return table, context


def _gradient_scorer(context, dim: int, normalize: bool):  # type: ignore[no-untyped-def]
    scorer = make_scorer(
        "embedding",
        {"source": "gradient", "proxy": GRADIENT_PROXY, "dim": dim, "normalize": normalize},
    )
    assert scorer.width() == dim  # known before the proxy is trained
    scorer.fit(context)
    return scorer


def test_gradient_embedding_is_the_last_layer_gradient(gradient_rows) -> None:  # type: ignore[no-untyped-def]
    table, context = gradient_rows
    scorer = _gradient_scorer(context, dim=64, normalize=False)
    assert scorer.input_columns == (S.FEATURES, S.LABEL)
    vectors = scorer.score(batch_of(table, scorer.input_columns))
    matrix = vectors.flatten().to_numpy().reshape(table.num_rows, 64)
    unknown = np.isin(np.arange(table.num_rows), [3, 8])
    assert np.isnan(matrix[unknown]).all() and np.isfinite(matrix[~unknown]).all()
    expected = _autograd_gradients(Path(scorer.model_path_), table.filter(pa.array(~unknown)), 3)
    width = 4 * (GRADIENT_PROXY["hidden"] + 1)  # classes x (hidden + bias): fits in 64, exact
    np.testing.assert_allclose(matrix[~unknown, :width], expected, rtol=1e-5, atol=1e-7)
    assert not matrix[~unknown, width:].any()  # zeros up to the fixed width
    unit = _matrix(
        _gradient_scorer(context, 64, True)
        .score(batch_of(table, scorer.input_columns))
        .filter(pa.array(~unknown))
    )
    np.testing.assert_allclose(
        unit[:, :width], expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6
    )


@pytest.mark.parametrize("dim", [16, 4])  # the Kronecker product projected; [h, 1] first too
def test_projected_gradient_embedding_is_a_fixed_random_projection(gradient_rows, dim: int) -> None:  # type: ignore[no-untyped-def]
    table, context = gradient_rows
    known = table.filter(pa.array(~np.isin(np.arange(table.num_rows), [3, 8])))
    scorer = _gradient_scorer(context, dim=dim, normalize=False)
    batch = batch_of(known, scorer.input_columns)
    projected = _matrix(scorer.score(batch))
    exact = _autograd_gradients(Path(scorer.model_path_), known, 3)
    # one linear map of the exact gradients, the same for every row
    fitted, *_ = np.linalg.lstsq(exact, projected.astype(np.float64), rcond=None)
    np.testing.assert_allclose(exact @ fitted, projected, atol=1e-5)
    if dim == 16:  # lengths preserved on average (a Gaussian projection)
        ratio = (projected.astype(np.float64) ** 2).sum(1) / (exact**2).sum(1)
        assert 0.5 < ratio.mean() < 2.0
    # seeded: a copy of the scorer sent to a worker projects alike
    clone = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(_matrix(clone.score(batch)), projected)
