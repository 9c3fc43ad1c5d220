"""The proxy classifier and its features: hashing, labels, checkpoints, safety."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.proxy_data import SMALL_PROXY, fit_context, noisy_topics, shared_context
from thresher.errors import ConfigError, ScorerError
from thresher.io import schema as S
from thresher.models.features import (
    FeatureConfig,
    FeatureExtractor,
    hashed_ngrams,
)
from thresher.models.proxy import (
    ProxyModel,
    fit_proxy,
    label_key,
    parse_proxy_config,
    proxy_directory,
)

# -- hashed n-grams --------------------------------------------------------------------


def test_hashed_ngrams_are_unit_rows_and_the_same_in_any_batch() -> None:
    texts = ["The cat sat on the mat.", "", None, "the the the", "Mat the on sat cat the."]
    rows = hashed_ngrams(texts, dim=64, ngrams=2)
    dense = rows.dense()
    assert dense.shape == (5, 64) and dense.dtype == np.float32
    norms = np.linalg.norm(dense, axis=1)
    np.testing.assert_allclose(norms[[0, 3, 4]], 1.0, rtol=1e-6)
    assert norms[1] == 0 and norms[2] == 0  # no word: zero row
    # "the the the": unigram "the" 3 times, bigram "the the" twice -> (3, 2) / sqrt(13)
    magnitudes = np.sort(np.abs(dense[3][dense[3] != 0]))
    np.testing.assert_allclose(magnitudes, np.array([2.0, 3.0]) / np.sqrt(13.0), rtol=1e-6)
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(hashed_ngrams([text], 64, 2).dense()[0], dense[i])
    # same words, other order: equal bags of words, different bigrams
    unigrams = hashed_ngrams([texts[0], texts[4]], dim=64, ngrams=1).dense()
    np.testing.assert_array_equal(unigrams[0], unigrams[1])
    assert not np.array_equal(dense[0], dense[4])


def test_hashed_ngrams_signs_cancel_collisions_in_expectation() -> None:
    words = [f"word{i}" for i in range(4000)]
    row = hashed_ngrams([" ".join(words)], dim=16, ngrams=1).dense()[0]
    # 4000 words in 16 buckets: signed sums stay near zero mean, unlike raw counts
    assert abs(row.sum()) < 0.5 * np.abs(row).sum()


def test_sparse_take_matches_dense_rows() -> None:
    rows = hashed_ngrams(["a b c", "d", "", "e f g h"], dim=32)
    picked = rows.take(np.array([3, 0, 2, 3]))
    np.testing.assert_array_equal(picked.dense(), rows.dense()[[3, 0, 2, 3]])


# -- the numeric features source ---------------------------------------------------------


def test_feature_column_is_standardised_with_sample_statistics(tmp_path: Path) -> None:
    vectors = pa.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]], pa.list_(pa.float32()))
    table = pa.table({S.FEATURES: vectors})
    extractor = FeatureExtractor(FeatureConfig(source="features"))
    extractor.fit(table, fit_context(table, tmp_path / "m" / "x"))
    extractor.save(tmp_path / "features")
    loaded = FeatureExtractor.load(tmp_path / "features")
    out = loaded.transform(table)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out[:, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], 0.0)  # constant column: centred, scale 1
    wrong = pa.table({S.FEATURES: pa.array([[1.0, 2.0, 3.0]], pa.list_(pa.float32()))})
    with pytest.raises(ScorerError, match="length 3"):
        loaded.transform(wrong)


# -- configuration and labels --------------------------------------------------------------


def test_proxy_parameters_are_checked_with_their_path() -> None:
    with pytest.raises(ConfigError, match=r"el2n\.proxy\.hidden"):
        parse_proxy_config({"hidden": -1}, "el2n")
    with pytest.raises(ConfigError, match=r"el2n\.proxy\.features\.source"):
        parse_proxy_config({"features": {"source": "pixels"}}, "el2n")
    with pytest.raises(ConfigError, match=r"el2n\.proxy\.epoch"):
        parse_proxy_config({"epoch": 3}, "el2n")  # a typo of `epochs`
    assert parse_proxy_config(None, "x") == parse_proxy_config({}, "x")


def test_labels_are_keyed_as_text() -> None:
    assert label_key(2) == label_key("2") == label_key(2.0) == "2"
    assert label_key(2.5) == "2.5"
    assert label_key(None) is None


# -- training, caching, loading --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    table = noisy_topics()
    context = shared_context(tmp_path_factory, table, "el2n")
    return fit_proxy(context, parse_proxy_config(SMALL_PROXY, "test")), table


def test_checkpoints_metadata_and_training_rows(trained: tuple[Path, pa.Table]) -> None:
    directory, table = trained
    assert directory.parent.name == "_shared" and directory.name.startswith("proxy-")
    metadata = json.loads((directory / "proxy.json").read_text())
    assert metadata["classes"] == sorted(set(table.column(S.LABEL).to_pylist()))
    assert metadata["lr"] == [SMALL_PROXY["lr"]] * SMALL_PROXY["epochs"]
    assert metadata["n_train"] == table.num_rows
    for seed in range(SMALL_PROXY["n_seeds"]):
        saved = sorted(p.name for p in (directory / f"seed-{seed}").iterdir())
        assert saved == [f"epoch-{e:03d}.safetensors" for e in range(1, 5)]
    positions = pa.parquet.read_table(directory / "train_rows.parquet")
    assert positions.column_names == [S.SHARD, S.ROW] and positions.num_rows == table.num_rows
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no staging


def test_the_same_proxy_is_reused_and_seeds_differ(
    trained: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    directory, table = trained
    before = (directory / "seed-0" / "epoch-001.safetensors").stat().st_mtime_ns
    again = fit_context(table, directory.parent.parent / "other_scorer")
    assert fit_proxy(again, parse_proxy_config(SMALL_PROXY, "grand")) == directory
    assert (directory / "seed-0" / "epoch-001.safetensors").stat().st_mtime_ns == before
    other_seed = fit_context(table, directory.parent.parent / "x", seed=1)
    assert proxy_directory(other_seed, parse_proxy_config(SMALL_PROXY, "x")) != directory

    model = ProxyModel.load(directory, epochs=[4])
    assert [(c.seed, c.epoch) for c in model.checkpoints] == [(0, 4), (1, 4)]
    w = model.weights["hidden.weight"]
    assert not bool((w[0] == w[1]).all())  # two initialisations


def test_proxy_learns_the_topics(trained: tuple[Path, pa.Table]) -> None:
    directory, table = trained
    model = ProxyModel.load(directory, epochs=[4])
    _, logits = model.forward(model.features(table))
    predicted = logits.argmax(dim=-1).numpy()  # (n, seeds)
    truth = model.label_indices(table.column("true_label"))
    assert (predicted == truth[:, None]).mean() > 0.9  # learns the true topic despite the noise


def test_unseen_and_null_labels_have_no_class(trained: tuple[Path, pa.Table]) -> None:
    model = ProxyModel.load(trained[0], epochs=[1])
    indices = model.label_indices(pa.array(["sports", "knitting", None]))
    assert indices[0] == model.classes.index("sports")
    assert indices[1:].tolist() == [-1, -1]


class _Payload:
    """Unpickling this would create a file: the proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_a_pickle_checkpoint_is_refused_and_never_run(
    trained: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "proxy"
    shutil.copytree(trained[0], copy)
    marker = tmp_path / "pwned"
    (copy / "seed-1" / "epoch-002.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ScorerError, match="not a valid safetensors file"):
        ProxyModel.load(copy, epochs=[2])
    assert not marker.exists()


def test_fit_needs_labels_and_two_classes(tmp_path: Path) -> None:
    table = noisy_topics(n_documents=80).drop_columns([S.LABEL])
    config = parse_proxy_config({"epochs": 1, "n_seeds": 1}, "el2n")
    with pytest.raises(ConfigError, match=r"schema\.label"):
        fit_proxy(fit_context(table, tmp_path / "a" / "m"), config)
    one_class = noisy_topics(n_documents=80)
    one_class = one_class.set_column(
        one_class.schema.get_field_index(S.LABEL),
        S.LABEL,
        pa.array(["x"] * one_class.num_rows),
    )
    with pytest.raises(ScorerError, match="at least 2 label classes"):
        fit_proxy(fit_context(one_class, tmp_path / "b" / "m"), config)


def test_learning_rate_and_weight_decay_are_chosen_on_held_out_rows(tmp_path: Path) -> None:
    from tests.helpers.proxy_data import fit_context

    table = noisy_topics()
    settings = {
        **SMALL_PROXY,
        "lr": None,
        "weight_decay": None,
        "n_seeds": 1,
        "lr_grid": [0.001, 0.15],
        "weight_decay_grid": [0.0, 0.05],
    }
    directory = fit_proxy(
        fit_context(table, tmp_path / "models" / "el2n"), parse_proxy_config(settings, "test")
    )
    metadata = json.loads((directory / "proxy.json").read_text())
    tried = [(t["lr"], t["weight_decay"]) for t in metadata["search"]]
    assert tried == [(0.001, 0.0), (0.15, 0.0), (0.15, 0.05)]  # learning rate first, then decay
    accuracy = {(t["lr"], t["weight_decay"]): t["accuracy"] for t in metadata["search"]}
    assert accuracy[(0.15, 0.0)] > accuracy[(0.001, 0.0)] + 0.3  # a too small rate barely learns
    assert (metadata["learning_rate"], metadata["weight_decay"]) == (0.15, 0.0)
    assert metadata["lr"] == [0.15] * SMALL_PROXY["epochs"]  # what TracIn weighs checkpoints by
    assert metadata["holdout_accuracy"] == accuracy[(0.15, 0.0)] > 0.5  # labels 15% flipped
    assert metadata["train_accuracy"] > 0.7
    assert metadata["n_train"] == table.num_rows  # the held-out rows are trained on in the end
