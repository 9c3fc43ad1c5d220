"""PreSelect labelling for the fastText quality scorer, with tiny LMs trained here.

Three LMs are trained on two-topic text, each on more of topic A than the
one before, and given benchmark scores increasing in the same order: on a
topic-A document the better-scoring models have the lower loss (their order
by loss predicts their order by score), on a topic-B document the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.lm import auc, one_torch_thread
from thresher.config import parse_config
from thresher.errors import ConfigError
from thresher.fitting import FitContext
from thresher.models.lm_training import fit_reference_lm
from thresher.models.preselect import directory_digest, label_documents, predictive_strength
from thresher.scorers.fasttext_quality import FastTextQualityScorer
from thresher.stages.fit import build_scorers

TOPIC_A = "chef sauce simmer garlic onion butter oven bake flour pepper salt kitchen roast"
TOPIC_B = "market stock analyst rally bond yield investor trade price index fund bank"
FILLER = "the a of and to in with was is"
TINY_LM = {
    "vocab_size": 300,
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "context_length": 64,
    "n_documents": 150,
    "validation_fraction": 0.0,
    "steps": 40,
    "batch_size": 8,
    "learning_rate": 0.01,
    "device": "cpu",
}
BASE = {"run_dir": "run", "input": {"paths": ["data/*.parquet"]}}
FAST = {"epoch": 20, "dim": 16, "bucket": 20_000}


def _document(rng: np.random.Generator, topic: str) -> str:
    """40 words: topic words, and common words between them."""
    topical, common = topic.split(), FILLER.split()
    words = [rng.choice(topical) if rng.random() < 0.6 else rng.choice(common) for _ in range(40)]
    return " ".join(map(str, words)) + "."


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def lm_paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three LMs trained on 10%, 50% and 90% topic-A text (a few seconds in all)."""
    root = tmp_path_factory.mktemp("preselect-lms")
    rng = np.random.default_rng(0)
    paths = []
    for k, share in enumerate([0.1, 0.5, 0.9]):
        texts = [_document(rng, TOPIC_A if rng.random() < share else TOPIC_B) for _ in range(150)]
        table = pa.table({"id": [f"lm{k}-{i}" for i in range(150)], "text": texts})
        context = FitContext.of_table(table, root / f"lm-{k}" / "fit")
        paths.append(str(fit_reference_lm(context, **TINY_LM)))
    return paths


@pytest.fixture(scope="module")
def corpus() -> pa.Table:
    rng = np.random.default_rng(1)
    kinds = ["a", "b"] * 60
    return pa.table(
        {
            "id": [f"doc-{i}" for i in range(len(kinds))],
            "text": [_document(rng, TOPIC_A if kind == "a" else TOPIC_B) for kind in kinds],
            "kind": kinds,
        }
    )


def _preselect(paths: list[str], scores: list[float], **extra: Any) -> dict[str, Any]:
    models = [{"path": p, "score": s} for p, s in zip(paths, scores, strict=True)]
    return {"models": models, "sample": 120, "n_positive": 30, "n_negative": 30, **extra}


def _fit(
    paths: list[str], scores: list[float], corpus: pa.Table, where: Path
) -> FastTextQualityScorer:
    scorer = FastTextQualityScorer(preselect=_preselect(paths, scores, device="cpu"), **FAST)
    scorer.fit(FitContext.of_table(corpus, where, seed=4))
    scorer.setup()
    return scorer


def test_strength_is_the_fraction_of_model_pairs_ordered_as_the_benchmark() -> None:
    scores = [0.2, 0.5, 0.9, 0.7]
    losses = np.array(
        [
            [4.0, 3.0, 1.0, 2.0],  # perfect agreement: best score, lowest loss
            [1.0, 2.0, 4.0, 3.0],  # reversed
            [3.0, 1.0, 2.0, 2.5],  # pairs: (0,1) (0,2) (0,3) (1,3) agree of 6
            [2.0, 2.0, 2.0, 2.0],  # equal losses order nothing: discordant
            [1.0, np.nan, 2.0, 3.0],  # a model has no loss: no strength
        ]
    )
    strength = predictive_strength(losses, scores)
    np.testing.assert_allclose(strength[:4], [1.0, 0.0, 4 / 6, 0.0])
    assert np.isnan(strength[4])
    # Pairs of equal score carry no order: only (0,2) and (1,2) count here.
    np.testing.assert_allclose(predictive_strength([[5.0, 1.0, 0.0]], [1.0, 1.0, 2.0]), [1.0])
    np.testing.assert_allclose(predictive_strength([[0.0, 1.0, 5.0]], [1.0, 1.0, 2.0]), [0.0])


def test_labels_take_the_strongest_and_weakest_documents() -> None:
    strength = np.array([0.5, 1.0, np.nan, 0.0, 1.0, 0.25, 0.0])
    labels = label_documents(strength, n_positive=2, n_negative=3, seed=0)
    assert labels == [None, "positive", None, "negative", "positive", "negative", "negative"]
    tied = label_documents(np.array([1.0, 1.0, 1.0, 0.0]), 1, 1, seed=0)
    assert tied == label_documents(np.array([1.0, 1.0, 1.0, 0.0]), 1, 1, seed=0)
    assert tied.count("positive") == 1 and tied[3] == "negative"


def test_documents_whose_losses_predict_the_benchmark_become_positives(
    lm_paths: list[str], corpus: pa.Table, tmp_path: Path
) -> None:
    scorer = _fit(lm_paths, [0.3, 0.5, 0.7], corpus, tmp_path / "fit")
    kinds = dict(
        zip(corpus.column("id").to_pylist(), corpus.column("kind").to_pylist(), strict=True)
    )
    labels_file = Path(scorer.model_paths_[0]).with_name(
        Path(scorer.model_paths_[0]).stem + "-preselect.parquet"
    )
    labelled = pq.read_table(labels_file)
    assert labelled.num_rows == 120
    assert {"bits_per_byte_0", "bits_per_byte_1", "bits_per_byte_2"} <= set(labelled.column_names)
    by_label: dict[Any, set[str]] = {}
    for doc_id, label in zip(
        labelled.column("id").to_pylist(), labelled.column("label").to_pylist(), strict=True
    ):
        by_label.setdefault(label, set()).add(kinds[doc_id])
    assert by_label["positive"] == {"a"} and by_label["negative"] == {"b"}
    strength = labelled.column("agreement").to_numpy()
    is_a = np.array([kinds[i] == "a" for i in labelled.column("id").to_pylist()])
    assert strength[is_a].mean() > 0.8 > 0.2 > strength[~is_a].mean()
    batch = corpus.select(["text"]).to_batches()[0]
    probability = scorer.score(batch).to_numpy(zero_copy_only=False)
    is_a = np.array(corpus.column("kind").to_pylist()) == "a"
    assert auc(probability[is_a], probability[~is_a]) > 0.95
    record = json.loads(Path(scorer.model_paths_[0]).with_suffix(".json").read_text())
    assert [m["path"] for m in record["preselect"]["models"]] == lm_paths
    assert record["preselect"]["labels"] == labels_file.name
    assert record["preselect"]["n_positive"] == record["preselect"]["n_negative"] == 30

    modified = Path(scorer.model_paths_[0]).stat().st_mtime_ns
    again = _fit(lm_paths, [0.3, 0.5, 0.7], corpus, tmp_path / "fit")
    assert again.model_paths_ == scorer.model_paths_  # resume: the same key, not retrained
    assert Path(again.model_paths_[0]).stat().st_mtime_ns == modified
    elsewhere = _fit(lm_paths, [0.3, 0.5, 0.7], corpus, tmp_path / "elsewhere")
    assert Path(elsewhere.model_paths_[0]).read_bytes() == Path(scorer.model_paths_[0]).read_bytes()
    (Path(lm_paths[0]) / "notes.txt").write_text("retrained elsewhere")  # the LM changed
    changed = _fit(lm_paths, [0.3, 0.5, 0.7], corpus, tmp_path / "fit")
    assert changed.model_paths_ != scorer.model_paths_
    (Path(lm_paths[0]) / "notes.txt").unlink()
    # Reversed benchmark scores: the models now predict the benchmark on topic B.
    reversed_scores = _fit(lm_paths, [0.7, 0.5, 0.3], corpus, tmp_path / "fit")
    assert reversed_scores.model_paths_ != scorer.model_paths_
    flipped = reversed_scores.score(batch).to_numpy(zero_copy_only=False)
    assert auc(flipped[~is_a], flipped[is_a]) > 0.95


def _config(tmp_path: Path, params: dict[str, Any]) -> Any:
    scorers = [{"name": "fasttext_quality", "params": params}]
    return parse_config({**BASE, "scorers": scorers}, base_dir=tmp_path)


def test_bad_preselect_settings_are_reported_when_the_config_is_read(tmp_path: Path) -> None:
    paths = ["lms/a", "lms/b", "lms/c"]
    with pytest.raises(ConfigError, match=r"scorers\[0\]\.params: .*at least 3 models, got 2"):
        _config(tmp_path, {"preselect": _preselect(paths[:2], [0.1, 0.2])})
    missing_path = [
        {"path": "lms/a", "score": 0.1},
        {"score": 0.2},
        {"path": "lms/c", "score": 0.3},
    ]
    with pytest.raises(ConfigError, match=r"models\[1\]: needs path"):
        _config(tmp_path, {"preselect": {"models": missing_path}})
    with pytest.raises(ConfigError, match=r"every model has the benchmark score 0\.5"):
        _config(tmp_path, {"preselect": _preselect(paths, [0.5, 0.5, 0.5])})
    with pytest.raises(ConfigError, match="exactly one of"):
        _config(tmp_path, {"preselect": _preselect(paths, [1, 2, 3]), "positive_labels": ["x"]})
    with pytest.raises(ConfigError, match=r"classifiers\[0\]: preselect: n_positive \+ n_negative"):
        _config(
            tmp_path, {"classifiers": [{"preselect": _preselect(paths, [1, 2, 3], n_positive=100)}]}
        )


def test_model_paths_resolve_against_the_config_file_and_must_hold_an_lm(
    tmp_path: Path, corpus: pa.Table
) -> None:
    config = _config(tmp_path, {"preselect": _preselect(["lms/a", "/abs/b", "lms/c"], [1, 2, 3])})
    scorer = build_scorers(config)[0].scorer
    assert [m["path"] for m in scorer.preselect["models"]] == [
        str((tmp_path / "lms/a").resolve()),
        "/abs/b",
        str((tmp_path / "lms/c").resolve()),
    ]
    with pytest.raises(
        ConfigError, match=r"preselect: models\[0\]\.path: .*lms/a.* is not a directory"
    ):
        scorer.fit(FitContext.of_table(corpus, tmp_path / "fit"))


def test_a_model_digest_follows_its_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    before = directory_digest(tmp_path)
    (tmp_path / ".thresher-copy.json").write_text("{}")  # a local copy's own index
    assert directory_digest(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"weighty")
    assert directory_digest(tmp_path) != before
