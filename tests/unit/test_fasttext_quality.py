"""The fastText quality scorer: real classifiers trained on the small sample corpus."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.lm import IngestedRun, auc, ingest_small_corpus, read_scores
from thresher.errors import ConfigError, InputError
from thresher.models.fasttext import FastTextModelError, normalise
from thresher.scorers.fasttext_quality import FastTextQualityScorer
from thresher.stages.score import BoundScorer, ScoreShard

FAST = {"epoch": 5, "dim": 16, "bucket": 20_000}


@pytest.fixture(scope="module")
def ingested(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> IngestedRun:
    return ingest_small_corpus(small_corpus, tmp_path_factory.mktemp("fasttext-run"))


@pytest.fixture(scope="module")
def corpus(ingested: IngestedRun) -> pa.Table:
    return ingested.table()


@pytest.fixture(scope="module")
def reference_scorer(ingested: IngestedRun, small_corpus: Path) -> FastTextQualityScorer:
    """DCLM recipe: the reference clean text against random corpus documents, 3 seeds."""
    scorer = FastTextQualityScorer(
        positive_files=[str(small_corpus / "_reference_clean.txt")],
        classifiers=[{"seed": 1}, {"seed": 2}, {"seed": 3}],
        write_members=True,
        **FAST,
    )
    scorer.fit(ingested.context("quality"))
    scorer.setup()
    return scorer


def _score(scorer: FastTextQualityScorer, table: pa.Table) -> dict[str, np.ndarray]:
    batch = table.select(["text"]).combine_chunks().to_batches()[0]
    result = scorer.score(batch)
    fields = scorer.output_fields("q")
    if len(fields) == 1:
        return {"q": result.to_numpy(zero_copy_only=False)}
    return {f.name: result.field(i).to_numpy(zero_copy_only=False) for i, f in enumerate(fields)}


def test_separates_planted_spam_and_gibberish_from_clean_documents(
    reference_scorer: FastTextQualityScorer, corpus: pa.Table
) -> None:
    scores = _score(reference_scorer, corpus)["q"]
    kinds = np.array(corpus.column("kind").to_pylist())
    bad = np.isin(kinds, ["spam", "gibberish"])
    assert bad.sum() >= 20 and (kinds == "clean").sum() >= 300
    assert auc(scores[kinds == "clean"], scores[bad]) > 0.95
    assert np.all((scores >= 0) & (scores <= 1))


def test_ensemble_combines_members_by_mean_or_max(
    reference_scorer: FastTextQualityScorer, ingested: IngestedRun, corpus: pa.Table
) -> None:
    scores = _score(reference_scorer, corpus)
    members = np.vstack([scores[f"q_classifier_{k}"] for k in range(3)])
    assert np.array_equal(scores["q"], members.mean(axis=0))
    assert not np.array_equal(members[0], members[1])  # seeds give different classifiers
    as_max = FastTextQualityScorer(**{**reference_scorer.get_params(), "combine": "max"})
    as_max.fit(ingested.context("quality"))  # same specs: the saved models are reused
    as_max.setup()
    assert as_max.model_paths_ == reference_scorer.model_paths_
    np.testing.assert_array_equal(_score(as_max, corpus)["q"], members.max(axis=0))
    single = FastTextQualityScorer(
        **{**reference_scorer.get_params(), "classifiers": [{"seed": 2}]}
    )
    single.write_members = False
    single.fit(ingested.context("quality-single"))
    single.setup()
    np.testing.assert_array_equal(_score(single, corpus)["q"], members[1])


def test_training_is_deterministic_and_reused_on_resume(
    reference_scorer: FastTextQualityScorer, ingested: IngestedRun, corpus: pa.Table
) -> None:
    path = Path(reference_scorer.model_paths_[0])
    modified = path.stat().st_mtime_ns
    again = FastTextQualityScorer(**reference_scorer.get_params())
    again.fit(ingested.context("quality"))
    assert path.stat().st_mtime_ns == modified  # resume: not retrained
    fresh = FastTextQualityScorer(
        **{**reference_scorer.get_params(), "classifiers": [{"seed": 1}], "write_members": False}
    )
    fresh.fit(ingested.context("quality-fresh"))  # another directory: trained again
    fresh.setup()
    assert Path(fresh.model_paths_[0]).read_bytes() == path.read_bytes()
    expected = _score(reference_scorer, corpus)["q_classifier_0"]
    assert np.array_equal(_score(fresh, corpus)["q"], expected)


def test_labelled_column_trains_positives_against_the_rest(
    ingested: IngestedRun, corpus: pa.Table
) -> None:
    scorer = FastTextQualityScorer(
        positive_labels=["science"], n_documents=400, epoch=25, dim=16, bucket=20_000
    )
    scorer.fit(ingested.context("science"))
    scorer.setup()
    scores = _score(scorer, corpus)["q"]
    clean = np.array(corpus.column("kind").to_pylist()) == "clean"
    science = np.array(corpus.column("label").to_pylist()) == "science"
    assert auc(scores[clean & science], scores[clean & ~science]) > 0.95


def test_positive_and_negative_files(ingested: IngestedRun, tmp_path: Path) -> None:
    positive = tmp_path / "good.jsonl"
    positive.write_text(
        "\n".join(f'{{"text": "the chef baked a golden crust number {i}"}}' for i in range(40))
    )
    negative = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"text": [f"BUY NOW cheap pills offer {i}!!!" for i in range(40)]}), negative
    )
    scorer = FastTextQualityScorer(
        positive_files=[str(positive)], negative_files=[str(negative)], epoch=20, dim=8, bucket=1000
    )
    scorer.fit(ingested.context("files"))
    scorer.setup()
    scores = _score(scorer, pa.table({"text": ["The chef baked bread.", "BUY NOW!!! Cheap offer"]}))
    assert scores["q"][0] > 0.5 > scores["q"][1]


@pytest.mark.slow
def test_example_files_and_a_model_on_object_storage(
    reference_scorer: FastTextQualityScorer,
    ingested: IngestedRun,
    corpus: pa.Table,
    small_corpus: Path,
    s3: Any,
    s3_bucket: str,
) -> None:
    bucket = s3_bucket
    client = s3.client()
    client.upload_file(str(small_corpus / "_reference_clean.txt"), bucket, "examples/clean.txt")
    remote = FastTextQualityScorer(
        positive_files=[f"s3://{bucket}/examples/clean.txt"], classifiers=[{"seed": 1}], **FAST
    )
    remote.fit(ingested.context("remote-examples"))
    remote.setup()
    expected = _score(reference_scorer, corpus)["q_classifier_0"]
    np.testing.assert_array_equal(_score(remote, corpus)["q"], expected)  # same documents
    client.upload_file(reference_scorer.model_paths_[0], bucket, "models/quality.bin")
    uri = f"s3://{bucket}/models/quality.bin"
    loaded = FastTextQualityScorer(model_path=uri, positive_label="__label__positive")
    loaded.fit(ingested.context("remote-model"))
    assert loaded.model_paths_ == [uri]  # each worker copies it; no path of this machine
    loaded.setup()
    np.testing.assert_array_equal(_score(loaded, corpus)["q"], expected)
    missing = FastTextQualityScorer(positive_files=[f"s3://{bucket}/examples/none.txt"], **FAST)
    with pytest.raises(ConfigError, match=f"example file not found: s3://{bucket}/examples/none"):
        missing.fit(ingested.context("remote-missing"))


def test_a_pickle_given_as_a_model_is_refused(ingested: IngestedRun, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    fake = tmp_path / "model.bin"
    fake.write_bytes(pickle.dumps(Exploit()))
    scorer = FastTextQualityScorer(model_path=str(fake), positive_label="__label__hq")
    with pytest.raises(FastTextModelError, match="not a fastText model"):
        scorer.fit(ingested.context("pickled"))
    assert not marker.exists()


def test_a_saved_classifier_loads_from_model_path(
    reference_scorer: FastTextQualityScorer, ingested: IngestedRun, corpus: pa.Table
) -> None:
    path = reference_scorer.model_paths_[0]
    loaded = FastTextQualityScorer(model_path=path, positive_label="__label__positive")
    loaded.fit(ingested.context("loaded"))
    loaded.setup()
    expected = _score(reference_scorer, corpus)["q_classifier_0"]
    np.testing.assert_array_equal(_score(loaded, corpus)["q"], expected)
    wrong = FastTextQualityScorer(model_path=path, positive_label="__label__hq")
    with pytest.raises(FastTextModelError, match="'__label__hq' is not a label"):
        wrong.fit(ingested.context("wrong-label"))


def test_bad_parameters_are_reported_when_the_config_is_read(make_config: Any) -> None:
    def scorer(params: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"name": "fasttext_quality", "params": params}]

    with pytest.raises(ConfigError, match="exactly one of"):
        make_config(scorers=scorer({"positive_files": ["a"], "positive_labels": ["x"]}))
    with pytest.raises(ConfigError, match="exactly one of"):
        make_config(scorers=scorer({}))
    with pytest.raises(ConfigError, match=r"classifiers\[1\]: unknown key"):
        make_config(scorers=scorer({"positive_labels": ["x"], "classifiers": [{}, {"sead": 1}]}))
    with pytest.raises(ConfigError, match="combine"):
        make_config(scorers=scorer({"positive_labels": ["x"], "combine": "median"}))


def test_missing_inputs_have_clear_errors(ingested: IngestedRun, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="example file not found"):
        FastTextQualityScorer(positive_files=[str(tmp_path / "none.txt")]).fit(
            ingested.context("missing")
        )
    with pytest.raises(ConfigError, match="label_column 'quality'"):
        FastTextQualityScorer(positive_labels=["good"], label_column="quality").fit(
            ingested.context("no-column")
        )
    with pytest.raises(InputError, match="0 positive"):
        FastTextQualityScorer(positive_labels=["no-such-topic"], n_documents=50).fit(
            ingested.context("no-positives")
        )


def test_normalisation_is_one_line_of_words() -> None:
    assert normalise("BUY NOW!!!\n\nClick  here.", max_words=5) == "buy now ! ! !"
    assert normalise("Tab\tand\nnewline", lowercase=False) == "Tab and newline"


@pytest.mark.spark
def test_spark_engine_scores_equal_the_local_engine(
    spark: Any,
    reference_scorer: FastTextQualityScorer,
    ingested: IngestedRun,
    small_corpus: Path,
    tmp_path: Path,
) -> None:
    from thresher.config import SparkConfig
    from thresher.engines.spark import SparkEngine

    run = ingest_small_corpus(small_corpus, tmp_path / "spark-run")
    engine = SparkEngine(SparkConfig(), batch_size=100)
    bound = [BoundScorer("quality", reference_scorer)]
    engine.map_shards(ScoreShard(bound, run.run, 100), sorted(run.shard_rows))
    engine.close()
    on_spark = read_scores(run.run)
    local = ingested.score_locally("quality", reference_scorer).sort_by(
        [("thresher_shard", "ascending"), ("thresher_row", "ascending")]
    )
    assert on_spark.column("id").to_pylist() == local.column("id").to_pylist()
    for k in ("quality", "quality_classifier_0", "quality_classifier_2"):
        np.testing.assert_allclose(
            on_spark.column(k).to_numpy(), local.column(k).to_numpy(), rtol=1e-6
        )
