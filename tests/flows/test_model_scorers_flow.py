"""End to end: model-based scorers through `curate`, on feature vectors and on text.

1. A features-only corpus (scikit-learn's digits as pixel vectors, 10% of the
   labels flipped, a few broken vectors) on the local engine: broken rows
   are quarantined, EL2N finds the flipped labels, keeping the low-EL2N band
   drops them, and the pruned dataset keeps the user's column names.
2. The sample corpus with perplexity, fastText quality, EL2N (+ AUM),
   GraNd, influence, VoG and LM embeddings on both engines: the same scores
   and the same kept ids, each model trained once per run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.helpers.proxy_data import auc
from thresher import reasons as R
from thresher.config import RunConfig
from thresher.flows.curate import curate
from thresher.io import schema as S

pytestmark = pytest.mark.usefixtures("prefect_server")

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
TINY_TEXT_PROXY = {"features": {"dim": 512}, "hidden": 16, "epochs": 4, "n_seeds": 2}


def _digits_corpus(directory: Path) -> set[str]:
    """Digits as `pixels` vectors in two Parquet shards and a JSONL shard; returns flipped ids."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    labels = digits.target.copy()
    flipped = rng.random(labels.size) < 0.1
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    ids = [f"img-{i:04d}" for i in range(labels.size)]
    table = pa.table(
        {
            "image_id": ids,
            "pixels": pa.array(digits.data.tolist(), pa.list_(pa.float64())),
            "digit": labels,
        }
    )
    directory.mkdir(parents=True)
    bad = pa.table(
        {
            "image_id": ["bad-nan", "bad-short", "bad-null"],
            "pixels": [[float("nan")] * 64, [1.0] * 10, None],
            "digit": [1, 2, 3],
        },
        schema=table.schema,
    )
    pq.write_table(pa.concat_tables([table.slice(0, 900), bad]), directory / "shard-0.parquet")
    pq.write_table(table.slice(900, 800), directory / "shard-1.parquet")
    lines = [
        json.dumps({"image_id": ids[i], "pixels": digits.data[i].tolist(), "digit": int(labels[i])})
        for i in range(1700, labels.size)
    ]
    lines.append('{"image_id": "bad-text", "pixels": "0 1 2", "digit": 4}')
    (directory / "shard-2.jsonl").write_text("\n".join(lines) + "\n")
    return {i for i, f in zip(ids, flipped, strict=True) if f}


def test_features_only_corpus_through_curate(
    make_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    flipped = _digits_corpus(tmp_path / "digits")
    proxy = {"features": {"source": "features"}, "hidden": 32, "epochs": 6, "n_seeds": 2}
    config = make_config(
        input={"paths": [str(tmp_path / "digits" / "shard-*")]},
        schema={"id": "image_id", "text": None, "features": "pixels", "label": "digit"},
        scorers=[
            {"name": "el2n", "params": {"proxy": proxy, "epoch": 2, "aum": True}},
            {"name": "embedding", "params": {"source": "proxy", "proxy": proxy}},
        ],
        filters=[],
        selector={
            "name": "quantile_band",
            "params": {"score": "el2n", "band": "low"},
            "budget": 0.85,
        },
    )
    manifest = curate(config)
    run = tmp_path / "run"

    counts = manifest["counts"]
    assert counts["reconciles"] and counts["input"] == 1797 + 4
    quarantine = pq.read_table(run / "quarantine")
    assert sorted(quarantine.column("id").to_pylist()) == [
        "bad-nan",
        "bad-null",
        "bad-short",
        "bad-text",
    ]
    assert set(quarantine.column("reason").to_pylist()) == {R.INVALID_FEATURES}

    scores = ds.dataset(run / "scores", format="parquet").to_table()
    is_flipped = np.isin(scores.column(S.ID).to_numpy(zero_copy_only=False), list(flipped))
    assert auc(scores.column("el2n").to_numpy(), is_flipped) > 0.9
    assert auc(-scores.column("el2n_aum").to_numpy(), is_flipped) > 0.9
    assert set(pc.list_value_length(scores.column("embedding")).to_pylist()) == {32}

    data = ds.dataset(run / "data", format="parquet").to_table()
    assert set(data.column_names) == {"image_id", "pixels", "digit"}
    assert data.schema.field("pixels").type == pa.list_(pa.float32())
    kept = set(data.column("image_id").to_pylist())
    assert len(kept) == round(0.85 * 1797)
    # the dropped 15% (highest EL2N) hold most of the flipped labels
    assert len(flipped - kept) > 0.7 * len(flipped)


def _text_config(
    make_config: Callable[..., RunConfig], small_corpus: Path, run_dir: Path, engine: str
) -> RunConfig:
    return make_config(
        run_dir=str(run_dir),
        scorers=[
            {"name": "perplexity", "params": {"lm": TINY_LM, "token_el2n": True}},
            {
                "name": "fasttext_quality",
                "params": {
                    "positive_files": [str(small_corpus / "_reference_clean.txt")],
                    "epoch": 5,
                    "dim": 16,
                },
            },
            {"name": "el2n", "params": {"proxy": TINY_TEXT_PROXY, "aum": True}},
            {"name": "grand", "params": {"proxy": TINY_TEXT_PROXY}},
            {"name": "influence", "params": {"proxy": TINY_TEXT_PROXY, "projection_dim": 8}},
            {"name": "vog", "params": {"proxy": TINY_TEXT_PROXY}},
            {"name": "embedding", "params": {"source": "lm", "lm": TINY_LM}},
        ],
        filters=[
            {"name": "threshold", "params": {"score": "fasttext_quality", "min": 0.5}},
            {
                "name": "quantile_band",
                "params": {"score": "perplexity", "band": "medium"},
                "budget": 0.9,
            },
        ],
        selector={"name": "ccs", "params": {"score": "el2n", "beta": 0.1}, "budget": 0.5},
        engine={"kind": engine, "workers": 2},
    )


def _scores(run: Path) -> pa.Table:
    table = ds.dataset(run / "scores", format="parquet").to_table()
    return table.sort_by(S.ID)


@pytest.mark.spark
def test_model_scorers_on_both_engines(
    make_config: Callable[..., RunConfig], small_corpus: Path, tmp_path: Path, spark: Any
) -> None:
    runs = {engine: tmp_path / engine for engine in ("local", "spark")}
    for engine, run in runs.items():
        manifest = curate(_text_config(make_config, small_corpus, run, engine))
        assert manifest["counts"]["reconciles"]

    kept = {
        engine: sorted(
            ds.dataset(run / "data", format="parquet").to_table().column("id").to_pylist()
        )
        for engine, run in runs.items()
    }
    assert kept["local"] == kept["spark"] and len(kept["local"]) > 100

    local, on_spark = _scores(runs["local"]), _scores(runs["spark"])
    assert local.column(S.ID).equals(on_spark.column(S.ID))
    numeric = [f.name for f in local.schema if pa.types.is_floating(f.type)]
    assert {
        "perplexity",
        "perplexity_token_el2n",
        "fasttext_quality",
        "el2n",
        "el2n_aum",
        "grand",
        "influence",
        "vog",
    } <= set(numeric)
    for name in numeric:
        expected, got = local.column(name).to_numpy(), on_spark.column(name).to_numpy()
        if name.startswith(("el2n", "grand", "influence", "vog")):
            # proxy scores: same checkpoints, float64 then rounded to float32: bitwise equal
            np.testing.assert_array_equal(expected, got, err_msg=name)
        else:
            # LM and fastText scores: float32 models, threads differ between engines
            np.testing.assert_allclose(expected, got, rtol=1e-4, err_msg=name)
    for table in (local, on_spark):
        width = table.schema.field("embedding").type
        vectors = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
        assert vectors.shape == (local.num_rows, TINY_LM["d_model"]), width
    np.testing.assert_allclose(
        np.asarray(local.column("embedding").to_pylist()),
        np.asarray(on_spark.column("embedding").to_pylist()),
        rtol=1e-5,
        atol=1e-6,
    )

    # one LM (perplexity + embedding) and one proxy (el2n + influence) per run
    shared = sorted(p.name.split("-")[0] for p in (runs["local"] / "models" / "_shared").iterdir())
    assert shared == ["lm", "proxy"]

    # spam and gibberish do not survive the fastText filter
    truth = pq.read_table(small_corpus / "_truth.parquet")
    junk = truth.filter(pc.is_in(truth.column("kind"), pa.array(["spam", "gibberish"])))
    assert not set(junk.column("id").to_pylist()) & set(kept["local"])
