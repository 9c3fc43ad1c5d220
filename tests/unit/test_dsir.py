"""DSIR: hashed n-gram features, the log importance weight, Gumbel top-k resampling."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.batches import text_batch
from thresher.examples.sample_corpus import clean_document
from thresher.fitting import FitContext
from thresher.io.documents import read_documents
from thresher.models.hashed_ngrams import bucket_counts, bucket_sums, smoothed_log_probabilities
from thresher.scorers import make_scorer
from thresher.selectors import make_selector
from thresher.selectors.dsir import gumbel_noise

_MASK = (1 << 64) - 1


def _python_buckets(text: str, n_buckets: int, ngrams: int) -> list[int]:
    """The buckets of a text's n-grams, computed the slow, obvious way (the oracle)."""

    def fnv(data: bytes) -> int:
        state = 0xCBF29CE484222325
        for byte in data:
            state = ((state ^ byte) * 0x100000001B3) & _MASK
        return state

    def finish(value: int) -> int:
        value = (value + 0x9E3779B97F4A7C15) & _MASK
        value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
        return value ^ (value >> 31)

    words = re.findall(r"\w+|[^\w\s]+", text.lower())  # NLTK's WordPunctTokenizer
    return [
        finish(fnv(" ".join(words[i : i + k]).encode())) % n_buckets
        for k in range(1, ngrams + 1)
        for i in range(len(words) - k + 1)
    ]


TEXTS = [
    "Hello, World!! foo_bar 12ab -- x.y",
    "Ünïcödé — straße, 日本語のテキスト 🎉🎉 ok",
    "",
    "   ",
    "a",
    "The the THE cat\n\tsat.",
]


@pytest.mark.parametrize("ngrams", [1, 2, 3])
def test_features_match_the_obvious_computation(ngrams: int) -> None:
    expected = np.zeros(97, dtype=np.int64)
    for text in TEXTS:
        np.add.at(expected, _python_buckets(text, 97, ngrams), 1)
    np.testing.assert_array_equal(bucket_counts(pa.array(TEXTS), 97, ngrams), expected)
    values = np.random.default_rng(ngrams).normal(size=97)
    sums, lengths = bucket_sums(pa.array([*TEXTS, None]), values, ngrams)
    for i, text in enumerate(TEXTS):
        buckets = _python_buckets(text, 97, ngrams)
        assert lengths[i] == len(buckets)
        assert sums[i] == pytest.approx(values[buckets].sum(), abs=1e-12)
    assert sums[-1] == 0.0 and lengths[-1] == 0


def test_add_one_smoothing() -> None:
    log_p = smoothed_log_probabilities(np.array([3, 0, 1]))
    np.testing.assert_allclose(np.exp(log_p), [4 / 7, 1 / 7, 2 / 7])


def _topic_documents(topic: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [clean_document(rng, topic) for _ in range(n)]


def _context(tmp_path: Path, corpus: pa.Table) -> FitContext:
    def sample(n: int, columns: list[str], seed: int) -> pa.Table:
        return corpus.slice(0, n)

    directory = tmp_path / "models" / "dsir"
    directory.mkdir(parents=True)
    return FitContext(artifact_dir=directory, sample=sample, n_rows=corpus.num_rows, seed=0)


def _kl(target: np.ndarray, other: np.ndarray) -> float:
    """KL(target || other) of two add-one smoothed bucket distributions."""
    p, q = np.exp(smoothed_log_probabilities(target)), np.exp(smoothed_log_probabilities(other))
    return float(np.sum(p * (np.log(p) - np.log(q))))


def test_the_targets_topic_dominates_and_the_kl_to_the_target_drops(tmp_path: Path) -> None:
    # a corpus of 300 finance and 100 cooking documents; the target is other cooking documents
    finance, cooking = _topic_documents("finance", 300, 1), _topic_documents("cooking", 100, 2)
    order = np.random.default_rng(0).permutation(400)
    texts = [(finance + cooking)[i] for i in order]
    topics = [("finance" if i < 300 else "cooking") for i in order]
    corpus = pa.table({"id": [f"d{i}" for i in range(400)], "text": texts})
    target = tmp_path / "target.jsonl"
    target.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in _topic_documents("cooking", 200, 3))
    )

    scorer = make_scorer("dsir", {"target_files": [str(target)]})
    scorer.fit(_context(tmp_path, corpus))
    scorer.setup()
    log_weight = scorer.score(text_batch(texts).select(["text"])).to_numpy()
    # the log weight is the sum over the document's n-grams of log p_target - log p_raw
    log_ratio = np.load(scorer.model_file_)
    assert log_weight[0] == pytest.approx(log_ratio[_python_buckets(texts[0], 10_000, 2)].sum())

    scores = pa.table({"id": corpus.column("id"), "dsir": log_weight})
    chosen = make_selector("dsir").select(scores, budget=80, random_state=0).indices
    baseline = make_selector("random").select(scores, budget=80, random_state=0).indices
    assert len(chosen) == 80
    assert np.mean([topics[i] == "cooking" for i in chosen]) >= 0.95  # random: about 0.25
    # the paper's check: the selection's n-gram distribution is much closer to the target's
    target_counts = bucket_counts(pa.array(read_documents([str(target)], "dsir")))
    kl_random = _kl(target_counts, bucket_counts(pa.array([texts[i] for i in baseline])))
    kl_dsir = _kl(target_counts, bucket_counts(pa.array([texts[i] for i in chosen])))
    assert kl_random - kl_dsir > 0.5 * kl_random


def test_gumbel_top_k_samples_in_proportion_to_the_weights() -> None:
    weights = np.array([1.0, 2.0, 7.0])
    scores = pa.table({"id": ["a", "b", "c"], "dsir": np.log(weights)})
    selector = make_selector("dsir")
    picks = np.zeros(3)
    n_draws = 3000
    for seed in range(n_draws):
        picks[selector.select(scores, budget=1, random_state=seed).indices[0]] += 1
    np.testing.assert_allclose(picks / n_draws, weights / weights.sum(), atol=0.03)


def test_the_draw_depends_on_ids_and_seed_not_row_order() -> None:
    rng = np.random.default_rng(5)
    scores = pa.table({"id": [f"r{i}" for i in range(200)], "dsir": rng.normal(size=200)})
    kept = make_selector("dsir").select(scores, budget=37, random_state=9).indices
    shuffled = scores.take(pa.array(rng.permutation(200)))
    again = make_selector("dsir").select(shuffled, budget=37, random_state=9).indices
    ids = scores.column("id").to_numpy(zero_copy_only=False)
    shuffled_ids = shuffled.column("id").to_numpy(zero_copy_only=False)
    assert set(ids[kept]) == set(shuffled_ids[again])
    other_seed = make_selector("dsir").select(scores, budget=37, random_state=10).indices
    assert set(other_seed.tolist()) != set(kept.tolist())
    noise = gumbel_noise(pa.array([f"id-{i}" for i in range(20_000)]), 3)
    assert np.all(np.isfinite(noise)) and abs(noise.mean() - np.euler_gamma) < 0.03  # Gumbel mean
    assert noise.std() == pytest.approx(np.pi / np.sqrt(6), rel=0.03)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="target_files"):
        make_scorer("dsir", {"target_files": []})
    with pytest.raises(ValueError, match="smoothing"):
        make_scorer("dsir", {"target_files": ["t.jsonl"], "smoothing": 0})
    with pytest.raises(ValueError, match="ngrams"):
        make_scorer("dsir", {"target_files": ["t.jsonl"], "ngrams": 6})
