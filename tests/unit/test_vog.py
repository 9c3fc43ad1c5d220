"""VoG pinned on a hand-checkable proxy, then on a trained one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.proxy_data import SMALL_PROXY, batch_of, noisy_topics, shared_context
from tests.helpers.proxy_data import fit_context as make_context
from thresher.io import schema as S
from thresher.models.features import FeatureConfig, FeatureExtractor
from thresher.models.proxy import PROXY_FORMAT, ProxyConfig, proxy_directory
from thresher.scorers import make_scorer

HAND_PROXY = {"features": {"source": "features"}, "hidden": 2, "epochs": 3, "n_seeds": 1}


def _write_hand_proxy(directory: Path) -> None:
    """W1 = I, b1 = 0, W2 at epoch t = [[t, 0], [0, 2t]], b2 = 0; features used as given."""
    from safetensors.numpy import save_file

    extractor = FeatureExtractor(FeatureConfig(source="features"))
    extractor.mean_, extractor.scale_ = np.zeros(2), np.ones(2)
    extractor.save(directory / "features")
    for t in (1, 2, 3):
        weights = {
            "hidden.weight": np.eye(2, dtype=np.float32),
            "hidden.bias": np.zeros(2, dtype=np.float32),
            "out.weight": np.array([[t, 0.0], [0.0, 2.0 * t]], dtype=np.float32),
            "out.bias": np.zeros(2, dtype=np.float32),
        }
        (directory / "seed-0").mkdir(parents=True, exist_ok=True)
        save_file(weights, str(directory / "seed-0" / f"epoch-{t:03d}.safetensors"))
    metadata = {
        "format": PROXY_FORMAT,
        "config": ProxyConfig.model_validate(HAND_PROXY).model_dump(mode="json"),
        "seed": 0,
        "classes": ["a", "b"],
        "input_dim": 2,
        "hidden": 2,
        "epochs": 3,
        "n_seeds": 1,
        "lr": [0.1, 0.1, 0.1],
    }
    (directory / "proxy.json").write_text(json.dumps(metadata))


def test_vog_on_a_hand_checkable_proxy(tmp_path: Path) -> None:
    # x = (1, 1): both hidden units active; the gradient of logit_a is (t, 0), of logit_b (0, 2t).
    # x = (1, -1): unit 2 off: logit_a -> (t, 0); logit_b -> (0, 0).  x = (-1, 1), a: (0, 0).
    x = [[1.0, 1.0], [1.0, 1.0], [1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]
    labels = ["a", "b", "a", "b", "a"]
    table = pa.table(
        {
            S.FEATURES: pa.array(x, pa.list_(pa.float32())),
            S.LABEL: labels,
            S.SHARD: pa.array([0] * 5, pa.int32()),
            S.ROW: pa.array(range(5), pa.int64()),
        }
    )
    context = make_context(table, tmp_path / "models" / "vog")
    _write_hand_proxy(proxy_directory(context, ProxyConfig.model_validate(HAND_PROXY)))

    # std over epochs of (1, 2, 3) is sqrt(2/3); of (2, 4, 6) 2 sqrt(2/3); mean over 2 dims
    s = np.sqrt(2.0 / 3.0)
    raw_expected = np.array([s / 2, s, s / 2, 0.0, 0.0])
    raw = make_scorer("vog", {"proxy": HAND_PROXY, "normalize": False})
    raw.fit(context)
    np.testing.assert_allclose(
        raw.score(batch_of(table, raw.input_columns)).to_numpy(), raw_expected, rtol=1e-6
    )

    # normalised within class: a = [s/2, s/2, 0] -> mean s/3, std s*sqrt(2)/6; b = [s, 0] -> +-1
    normalised = make_scorer("vog", {"proxy": HAND_PROXY, "n_normalize": 100})
    normalised.fit(context)
    values = normalised.score(batch_of(table, normalised.input_columns)).to_numpy()
    root2 = np.sqrt(2.0)
    np.testing.assert_allclose(values, [1 / root2, 1.0, 1 / root2, -1.0, -root2], rtol=1e-6)


def test_vog_is_standardised_within_each_class(tmp_path_factory: pytest.TempPathFactory) -> None:
    table = noisy_topics()
    scorer = make_scorer("vog", {"proxy": SMALL_PROXY, "n_normalize": table.num_rows})
    scorer.fit(shared_context(tmp_path_factory, table, "vog"))
    values = scorer.score(batch_of(table, scorer.input_columns)).to_numpy()
    labels = np.asarray(table.column(S.LABEL).to_pylist())
    for label in set(labels):
        members = values[labels == label]
        assert abs(members.mean()) < 1e-5 and abs(members.std() - 1.0) < 1e-5
    assert np.isnan(
        scorer.score(
            pa.RecordBatch.from_pydict({"text": ["a match"], "label": ["knitting"]})
        ).to_numpy(zero_copy_only=False)
    ).all()


def test_vog_needs_a_hidden_layer_and_two_checkpoints() -> None:
    with pytest.raises(ValueError, match="hidden layer"):
        make_scorer("vog", {"proxy": {"hidden": 0}})
    with pytest.raises(ValueError, match="2 checkpoints"):
        make_scorer("vog", {"proxy": {"epochs": 1}})
