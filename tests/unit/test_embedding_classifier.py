"""The embedding classifier and score_combine: heads really trained on planted vectors.

Planted data: Gaussian vectors where one random direction separates the
positives from the negatives (a margin along it), and a target that is a
linear function of the vectors plus a little noise. The heads must find
them; a training set with one class or too few rows is refused; training
gives the same weights at one and two torch threads. Through the fit and
score stages, scorers that read other scorers' outputs (the embedding, the
scores) run after them, and a run through ``curate`` trains on the
``embedding`` scorer's vectors and combines the head with fastText.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.helpers.lm import IngestedRun, auc, ingest_small_corpus, read_scores
from tests.helpers.proxy_data import fit_context
from thresher.config import RunConfig
from thresher.errors import ConfigError, ScorerError
from thresher.flows.curate import curate
from thresher.io import schema as S
from thresher.scorers import make_scorer
from thresher.scorers.embedding_classifier import EmbeddingClassifierScorer
from thresher.stages.fit import fit_bound
from thresher.stages.score import BoundScorer, ScoreShard, dependency_order, score_batches
from thresher.stages.score import score_schema as make_score_schema

WIDTH = 16


def planted(n: int, seed: int, width: int = WIDTH) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """``n`` vectors (column ``vec``) with a planted class and target; the truth alongside.

    Positives lie on the positive side of a random unit direction, negatives
    on the other, at least 0.5 away from the boundary. ``edu`` is
    ``x . w + noise`` (``noise`` has 2% of its variance), null for every
    fifth row (unlabelled).
    """
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(100).standard_normal(width)
    direction /= np.linalg.norm(direction)
    weights = np.random.default_rng(101).standard_normal(width)
    x = rng.standard_normal((n, width))
    positive = rng.random(n) < 0.4
    along = x @ direction
    x += np.outer(np.where(positive, 0.5 + np.abs(along), -0.5 - np.abs(along)) - along, direction)
    value = x @ weights
    target = value + rng.standard_normal(n) * 0.14 * value.std()
    labelled = np.arange(n) % 5 != 0
    table = pa.table(
        {
            "vec": pa.array(x.tolist(), pa.list_(pa.float32())),
            "quality": pa.array(np.where(positive, "good", "bad")),
            "edu": pa.array(np.where(labelled, target, np.nan), mask=~labelled),
            S.SHARD: pa.array(np.zeros(n, dtype=np.int32)),
            S.ROW: pa.array(np.arange(n, dtype=np.int64)),
        }
    )
    return table, {"positive": positive, "value": value, "labelled": labelled}


def _fitted(table: pa.Table, directory: Path, **params: Any) -> EmbeddingClassifierScorer:
    scorer = make_scorer("embedding_classifier", {"embeddings": "vec", **params})
    assert isinstance(scorer, EmbeddingClassifierScorer)
    scorer.fit(fit_context(table, directory))
    scorer.setup()
    return scorer


def _scores(scorer: EmbeddingClassifierScorer, table: pa.Table) -> np.ndarray:
    batch = table.select(["vec"]).combine_chunks().to_batches()[0]
    return np.asarray(scorer.score(batch).to_numpy(zero_copy_only=False))


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_learns_a_planted_separating_direction(head: str, tmp_path: Path) -> None:
    train, _ = planted(1000, seed=0)
    fresh, truth = planted(500, seed=1)
    scorer = _fitted(
        train, tmp_path, positive_labels=["good"], label_column="quality", head=head, hidden=16
    )
    (record,) = scorer.summary_
    assert record["task"] == "classification"
    assert record["n_rows"] == 1000 and record["n_positive"] + record["n_negative"] == 1000
    assert record["n_heldout"] == pytest.approx(200, abs=1)
    assert record["n_train"] + record["n_heldout"] == 1000
    assert record["heldout"]["accuracy"] >= 0.98
    assert record["heldout"]["auc"] >= 0.999
    saved = json.loads((tmp_path / "classifiers.json").read_text())
    assert saved["classifiers"][0]["heldout"] == record["heldout"]

    scores = _scores(scorer, fresh)  # rows it never saw
    assert np.all((scores >= 0) & (scores <= 1))
    assert auc(scores[truth["positive"]], scores[~truth["positive"]]) >= 0.999
    assert np.mean((scores >= 0.5) == truth["positive"]) >= 0.98


def test_regression_recovers_a_planted_linear_target(tmp_path: Path) -> None:
    train, train_truth = planted(1000, seed=0)
    fresh, truth = planted(500, seed=1)
    scorer = _fitted(train, tmp_path, target_column="edu")
    (record,) = scorer.summary_
    assert record["task"] == "regression"
    assert record["n_rows"] == int(train_truth["labelled"].sum()) == 800  # null targets left out
    assert record["heldout"]["pearson"] > 0.95
    assert record["heldout"]["spearman"] > 0.95
    predicted = _scores(scorer, fresh)
    assert np.corrcoef(predicted, truth["value"])[0, 1] > 0.95
    # a value on the target's scale, not a probability
    assert np.abs(predicted - truth["value"]).mean() < 0.3 * truth["value"].std()


def test_refuses_one_class_and_too_few_rows(tmp_path: Path) -> None:
    table, _ = planted(300, seed=0)
    with pytest.raises(ConfigError, match="got 0 positive and 300 negative"):
        _fitted(table, tmp_path / "a", positive_labels=["excellent"], label_column="quality")
    with pytest.raises(ConfigError, match="at least 10 labelled rows with a vector, got 4"):
        _fitted(table.slice(0, 6), tmp_path / "b", target_column="edu")  # rows 0, 5 unlabelled
    with pytest.raises(ConfigError, match="label_column 'grade' is not a column"):
        _fitted(table, tmp_path / "c", positive_labels=["good"], label_column="grade")
    with pytest.raises(ConfigError, match="embeddings column 'vec' is neither written"):
        _fitted(table.drop_columns(["vec"]), tmp_path / "d", target_column="edu")


def test_several_heads_combine_by_mean_or_max_and_write_members(tmp_path: Path) -> None:
    table, _ = planted(400, seed=0)
    params = {
        "positive_labels": ["good"],
        "label_column": "quality",
        "classifiers": [{"seed": 1}, {"seed": 2, "head": "mlp", "hidden": 8}],
        "write_members": True,
    }
    by_mean = _fitted(table, tmp_path / "mean", **params)
    by_max = _fitted(table, tmp_path / "max", combine="max", **params)
    batch = table.select(["vec"]).combine_chunks().to_batches()[0]
    mean_out, max_out = by_mean.score(batch), by_max.score(batch)
    members = np.stack([mean_out.field(1).to_numpy(), mean_out.field(2).to_numpy()])
    assert not np.array_equal(members[0], members[1])  # two heads, really different
    np.testing.assert_array_equal(mean_out.field(0).to_numpy(), members.mean(axis=0))
    np.testing.assert_array_equal(max_out.field(0).to_numpy(), members.max(axis=0))
    assert [f.name for f in by_mean.output_fields("q")] == ["q", "q_classifier_0", "q_classifier_1"]


def test_a_row_without_a_usable_vector_scores_nan(tmp_path: Path) -> None:
    table, _ = planted(200, seed=0)
    scorer = _fitted(table, tmp_path, positive_labels=["good"], label_column="quality")
    vectors = pa.array([[0.5] * WIDTH, None, [float("nan")] * WIDTH], pa.list_(pa.float32()))
    out = scorer.score(pa.RecordBatch.from_arrays([vectors], names=["vec"])).to_numpy()
    assert np.isfinite(out[0]) and np.isnan(out[1]) and np.isnan(out[2])
    short = pa.array([[0.5] * (WIDTH - 1)], pa.list_(pa.float32()))
    with pytest.raises(ScorerError, match=r"length 15 \(row 0\), expected 16"):
        scorer.score(pa.RecordBatch.from_arrays([short], names=["vec"]))


@pytest.fixture
def torch_threads() -> Iterator[Callable[[int], None]]:
    """Set torch's thread count for a test (restored after)."""
    import torch

    before = torch.get_num_threads()

    def set_threads(n: int) -> None:
        torch.set_num_threads(n)
        assert torch.get_num_threads() == n

    yield set_threads
    torch.set_num_threads(before)


def test_same_heads_and_scores_at_one_and_two_torch_threads(
    tmp_path: Path, torch_threads: Callable[[int], None]
) -> None:
    """Regression on 44,800 training rows in whole-set steps: big enough that torch splits
    its reductions between two threads (under about 32,768 values it does not)."""
    import torch

    table, _ = planted(70_000, seed=3, width=4)
    settings: list[dict[str, Any]] = [
        {"target_column": "edu", "batch_size": 50_000, "epochs": 5, "n_documents": 70_000},
        {
            "positive_labels": ["good"],
            "label_column": "quality",
            "head": "mlp",
            "hidden": 8,
            "n_documents": 2000,
        },
    ]
    for k, params in enumerate(settings):
        results = []
        for threads in (1, 2):
            torch_threads(threads)
            scorer = _fitted(table, tmp_path / f"{k}-{threads}", **params)
            assert torch.get_num_threads() == threads  # restored after training
            results.append((scorer.heads_[0].arrays, _scores(scorer, table)))
        (one, one_scores), (two, two_scores) = results
        assert one.keys() == two.keys()
        for name in one:
            np.testing.assert_array_equal(one[name], two[name], err_msg=name)
        np.testing.assert_array_equal(one_scores, two_scores)


# -- score_combine -------------------------------------------------------------------------


def test_score_combine_known_answers() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "a": pa.array([0.2, 0.9, 0.5, None, 0.0], pa.float64()),
            "b": pa.array([0.6, 0.1, float("nan"), 0.3, 1.0], pa.float64()),
            "n": pa.array([1, 2, 3, 4, 5], pa.int64()),
        }
    )
    mean = make_scorer("score_combine", {"columns": ["a", "b"]}).score(batch).to_pylist()
    assert mean[0] == pytest.approx(0.4) and mean[1] == pytest.approx(0.5)
    assert np.isnan(mean[2]) and np.isnan(mean[3]) and mean[4] == 0.5
    top = make_scorer("score_combine", {"columns": ["a", "b", "n"], "how": "max"})
    assert top.input_columns == ("a", "b", "n")
    maxima = top.score(batch).to_pylist()
    assert maxima[:2] == [1.0, 2.0] and np.isnan(maxima[2]) and np.isnan(maxima[3])
    assert maxima[4] == 5.0
    words = pa.RecordBatch.from_pydict({"a": ["x"], "b": [1.0]})
    with pytest.raises(ScorerError, match="'a' is not numeric"):
        make_scorer("score_combine", {"columns": ["a", "b"]}).score(words)
    with pytest.raises(ValueError, match="twice"):
        make_scorer("score_combine", {"columns": ["a", "a"]})


# -- scorers reading other scorers' outputs, through the fit and score stages -----------


def _positions(batch: pa.RecordBatch) -> pa.RecordBatch:
    n = batch.num_rows
    columns = {
        S.ID: pa.array([f"d{i}" for i in range(n)]),
        S.SHARD: pa.array(np.zeros(n, dtype=np.int32)),
        S.ROW: pa.array(np.arange(n, dtype=np.int64)),
    }
    return pa.RecordBatch.from_pydict({**columns, **batch.to_pydict()})


def test_score_stage_runs_a_scorer_after_the_outputs_it_reads() -> None:
    # listed first, it reads the columns of the two scorers listed after it
    combine = BoundScorer(
        "combined", make_scorer("score_combine", {"columns": ["words", "alpha_fraction"]})
    )
    words = BoundScorer("words", make_scorer("word_count"))
    alpha = BoundScorer("alpha_fraction", make_scorer("alpha_fraction"))
    bound = [combine, words, alpha]
    assert [b.column for b in dependency_order(bound)] == ["words", "alpha_fraction", "combined"]
    texts = pa.RecordBatch.from_pydict({S.TEXT: ["one two three four", "ab 12"]})
    schema = make_score_schema(bound, None)
    (out,) = score_batches([_positions(texts)], bound, schema)
    assert out.schema.names[-3:] == ["combined", "words", "alpha_fraction"]  # config order
    got = out.to_pydict()
    assert got["words"] == [4.0, 2.0]
    assert got["combined"] == pytest.approx(
        [(4.0 + got["alpha_fraction"][0]) / 2, (2.0 + got["alpha_fraction"][1]) / 2]
    )

    first = BoundScorer("first", make_scorer("score_combine", {"columns": ["second"]}))
    second = BoundScorer("second", make_scorer("score_combine", {"columns": ["first"]}))
    with pytest.raises(ConfigError, match=r"columns \['first', 'second'\] read each other"):
        dependency_order([words, first, second])


@pytest.fixture(scope="module")
def ingested(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> IngestedRun:
    return ingest_small_corpus(small_corpus, tmp_path_factory.mktemp("embclf-run"))


def test_files_are_embedded_by_the_scorer_that_writes_the_column(
    ingested: IngestedRun, small_corpus: Path
) -> None:
    """Clean reference documents against random corpus rows, on hashed n-gram embeddings."""
    clean = str(small_corpus / "_reference_clean.txt")
    embedding = BoundScorer("embedding", make_scorer("embedding", {"dim": 256}))
    classifier = make_scorer("embedding_classifier", {"positive_files": [clean], "epochs": 40})
    bound = [BoundScorer("quality", classifier), embedding]  # the fit stage orders them
    fit_bound(ingested.run, bound, ingested.shard_rows, seed=0)
    (record,) = classifier.summary_
    # reference text against random corpus text (mostly clean too): a weak held-out AUC
    assert record["source"] == "files" and 0.5 < record["heldout"]["auc"] < 1
    models = ingested.run.models.as_path()
    assert json.loads((models / "quality" / "classifiers.json").read_text())["embeddings"] == (
        "embedding"
    )

    task = ScoreShard(bound, ingested.run, batch_size=100)  # what every engine runs per shard
    for index in sorted(ingested.shard_rows):
        task(index)
    scores = read_scores(ingested.run)
    table = ingested.table()
    kinds = dict(zip(table.column("id").to_pylist(), table.column("kind").to_pylist(), strict=True))
    kind = np.array([kinds[i] for i in scores.column("id").to_pylist()])
    quality = scores.column("quality").to_numpy()
    clean_rows = quality[kind == "clean"]
    assert auc(clean_rows, quality[np.isin(kind, ["spam", "gibberish"])]) > 0.9

    vectors_only = make_scorer(
        "embedding_classifier", {"embeddings": "features", "positive_files": [clean]}
    )
    with pytest.raises(ConfigError, match="positive_files need the documents embedded"):
        fit_bound(ingested.run, [BoundScorer("q2", vectors_only)], ingested.shard_rows, seed=0)


# -- a run through curate ------------------------------------------------------------------


def _run_config(make_config: Callable[..., RunConfig], run_dir: Path, engine: str) -> RunConfig:
    """The head learns the `science` topic on hashed n-gram embeddings, with a fastText twin."""
    return make_config(
        run_dir=str(run_dir),
        scorers=[
            {  # listed first: it reads the two classifiers' columns
                "name": "score_combine",
                "column": "quality",
                "params": {"columns": ["science_head", "fasttext_quality"], "how": "mean"},
            },
            {
                "name": "embedding_classifier",
                "column": "science_head",
                "params": {"positive_labels": ["science"], "epochs": 10},
            },
            {
                "name": "fasttext_quality",
                "params": {"positive_labels": ["science"], "epoch": 5, "dim": 16, "bucket": 20_000},
            },
            {"name": "embedding", "params": {"dim": 128}},
        ],
        filters=[],
        selector={"name": "topk", "params": {"score": "quality"}, "budget": 0.25},
        engine={"kind": engine, "workers": 2},
    )


def _kept(run_dir: Path) -> list[str]:
    return sorted(
        ds.dataset(run_dir / "data", format="parquet").to_table().column("id").to_pylist()
    )


@pytest.mark.usefixtures("prefect_server")
def test_a_run_trains_on_the_embedding_scorer_and_combines_with_fasttext(
    make_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    run_dir = tmp_path / "local"
    manifest = curate(_run_config(make_config, run_dir, "local"))
    assert manifest["counts"]["reconciles"]
    record = json.loads((run_dir / "models" / "science_head" / "classifiers.json").read_text())
    (head,) = record["classifiers"]
    assert record["embeddings"] == "embedding" and head["source"] == "label_column"
    assert head["width"] == 128 and head["heldout"]["auc"] > 0.9

    scores = ds.dataset(run_dir / "scores", format="parquet").to_table()
    quality = scores.column("quality").to_numpy()
    members = np.vstack([scores.column(c).to_numpy() for c in ("science_head", "fasttext_quality")])
    np.testing.assert_allclose(quality, members.mean(axis=0), rtol=0, atol=1e-15)
    science = np.array(scores.column(S.LABEL).to_pylist()) == "science"
    assert (
        auc(
            scores.column("science_head").to_numpy()[science],
            scores.column("science_head").to_numpy()[~science],
        )
        > 0.95
    )
    kept = set(_kept(run_dir))
    ids = np.array(scores.column(S.ID).to_pylist())
    assert len(kept & set(ids[science])) > 0.9 * min(len(kept), int(science.sum()))


@pytest.mark.spark
def test_spark_executors_score_like_the_local_workers(
    small_corpus: Path, tmp_path: Path, spark_engine: Any
) -> None:
    """The same fitted scorers (listed before the columns they read) score every shard on Spark."""
    runs = {name: ingest_small_corpus(small_corpus, tmp_path / name) for name in ("local", "spark")}
    bound = [
        BoundScorer(
            "quality",
            make_scorer("score_combine", {"columns": ["science_head", "fasttext_quality"]}),
        ),
        BoundScorer(
            "science_head",
            make_scorer("embedding_classifier", {"positive_labels": ["science"], "epochs": 5}),
        ),
        BoundScorer(
            "fasttext_quality",
            make_scorer(
                "fasttext_quality",
                {"positive_labels": ["science"], "epoch": 5, "dim": 16, "bucket": 20_000},
            ),
        ),
        BoundScorer("embedding", make_scorer("embedding", {"dim": 64})),
    ]
    local = runs["local"]
    fit_bound(local.run, bound, local.shard_rows, seed=0)
    for index in sorted(local.shard_rows):
        ScoreShard(bound, local.run, batch_size=100)(index)
    on_spark = runs["spark"]
    spark_engine.map_shards(ScoreShard(bound, on_spark.run, 100), sorted(on_spark.shard_rows))
    here, there = read_scores(local.run), read_scores(on_spark.run)
    assert here.column(S.ID).equals(there.column(S.ID)) and here.num_rows > 500
    for column in ("science_head", "fasttext_quality", "quality"):
        np.testing.assert_array_equal(
            here.column(column).to_numpy(), there.column(column).to_numpy()
        )
    science = np.array(here.column(S.LABEL).to_pylist()) == "science"
    head = here.column("science_head").to_numpy()
    assert auc(head[science], head[~science]) > 0.95


@pytest.mark.usefixtures("prefect_server")
def test_a_run_regresses_an_annotation_on_an_input_vector_column(
    make_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    """FineWeb-Edu's recipe on planted data: rows without a vector are dropped, never lost."""
    import pyarrow.parquet as pq

    from thresher import reasons as R
    from thresher.runs import load_run

    table, truth = planted(1000, seed=5)
    no_vector = np.arange(1000) % 97 == 3
    vectors = pa.array(
        [
            None if missing else v
            for v, missing in zip(table.column("vec").to_pylist(), no_vector, strict=True)
        ],
        pa.list_(pa.float32()),
    )
    corpus = pa.table(
        {
            "id": [f"r{i}" for i in range(1000)],
            "text": [f"document {i}" for i in range(1000)],
            "vec": vectors,
            "edu": table.column("edu"),
        }
    )
    (tmp_path / "corpus").mkdir()
    pq.write_table(corpus.slice(0, 600), tmp_path / "corpus" / "shard-0.parquet")
    pq.write_table(corpus.slice(600), tmp_path / "corpus" / "shard-1.parquet")
    config = make_config(
        input={"paths": [str(tmp_path / "corpus" / "shard-*")]},
        schema={"id": "id", "text": "text"},
        scorers=[
            {
                "name": "embedding_classifier",
                "column": "edu_score",
                "params": {"embeddings": "vec", "target_column": "edu"},
            }
        ],
        filters=[],
        selector={"name": "topk", "params": {"score": "edu_score"}, "budget": 300},
    )
    manifest = curate(config)
    counts = manifest["counts"]
    assert counts["reconciles"] and counts["input"] == 1000 and counts["kept"] == 300
    record = json.loads(
        (tmp_path / "run" / "models" / "edu_score" / "classifiers.json").read_text()
    )
    (head,) = record["classifiers"]
    assert head["task"] == "regression" and head["heldout"]["pearson"] > 0.95
    assert head["n_without_vector"] == int((no_vector & truth["labelled"]).sum()) > 0

    run = load_run(tmp_path / "run")
    dropped = run.dropped.to_pydict()
    invalid = {
        i for i, why in zip(dropped["id"], dropped["reason"], strict=True) if why == R.INVALID_SCORE
    }
    assert invalid == {f"r{i}" for i in np.flatnonzero(no_vector)}
    kept = [int(i[1:]) for i in _kept(tmp_path / "run")]
    best = np.argsort(-np.where(no_vector, -np.inf, truth["value"]))[:300]
    assert len(set(kept) & set(best.tolist())) > 0.85 * 300  # the highest planted values
