"""Every registered scorer meets the scorer contract.

A new scorer must add a factory below (the first test fails until it does):
it returns a ready scorer, fitting it on the small sample corpus if needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.batches import text_batch
from tests.helpers.params import bad_value, invalid_values
from thresher._params import constructor_params
from thresher.fitting import FitContext
from thresher.scorers import SCORERS, Scorer, make_scorer

Factory = Callable[[Callable[[], FitContext]], Scorer]

# A tiny proxy classifier shared by the proxy-based scorers (trained once: same settings).
TINY_PROXY = {
    "features": {"dim": 256},
    "hidden": 8,
    "epochs": 2,
    "n_seeds": 2,
    "max_rows": 300,
    "batch_size": 32,
}

# A tiny reference LM (seconds to train) for the LM-based scorers.
TINY_LM = {
    "vocab_size": 512,
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "context_length": 64,
    "n_documents": 200,
    "steps": 10,
    "batch_size": 4,
}

MEMORIZATION = {"lm": TINY_LM, "prefix": 2, "continuation": 2, "offsets": [0, 3]}


def _fitted(scorer: Scorer, ctx: Callable[[], FitContext]) -> Scorer:
    scorer.fit(ctx())
    return scorer


def _dsir(ctx: Callable[[], FitContext]) -> Scorer:
    """A DSIR scorer whose target is a few cooking sentences."""
    context = ctx()
    target = context.artifact_dir / "target.txt"
    target.write_text(
        "The chef simmered the sauce.\nSlice the onions and roast the garlic.\n", encoding="utf-8"
    )
    scorer = make_scorer("dsir", {"target_files": [str(target)], "n_buckets": 1000})
    scorer.fit(context)
    return scorer


def _mimic(ctx: Callable[[], FitContext]) -> Scorer:
    """A mimic scorer whose reference trains on clean sample-corpus documents (labelled records)."""
    import json

    from thresher.examples.sample_corpus import generate_records

    context = ctx()
    target = context.artifact_dir / "target.jsonl"
    records = [r for r in generate_records(40, seed=11) if r["kind"] == "clean"]
    target.write_text(
        "".join(json.dumps({"text": r["text"], "label": r["topic"]}) + "\n" for r in records)
    )
    scorer = make_scorer("mimic", {"proxy": TINY_PROXY, "target_file": str(target)})
    scorer.fit(context)
    return scorer


def _embedding_classifier(ctx: Callable[[], FitContext]) -> Scorer:
    """Two heads on the `embedding` column, which the fit computes with the embedding scorer."""
    from dataclasses import replace

    from thresher.stages.fit import derived_columns
    from thresher.stages.score import BoundScorer

    embedding = BoundScorer("embedding", make_scorer("embedding", {"dim": 32}))
    scorer = make_scorer(
        "embedding_classifier",
        {
            "positive_labels": ["science", "travel"],
            "n_documents": 300,
            "epochs": 2,
            "classifiers": [{"seed": 1}, {"seed": 2, "head": "mlp", "hidden": 8}],
            "write_members": True,
        },
    )
    scorer.fit(replace(ctx(), derived=derived_columns([embedding])))
    return scorer


SCORER_FACTORIES: dict[str, Factory] = {
    "word_count": lambda ctx: make_scorer("word_count"),
    "alpha_fraction": lambda ctx: make_scorer("alpha_fraction"),
    "mean_word_length": lambda ctx: make_scorer("mean_word_length"),
    "repeated_line_fraction": lambda ctx: make_scorer("repeated_line_fraction"),
    "minhash": lambda ctx: make_scorer("minhash", {"num_perm": 64, "ngram": 3}),
    "el2n": lambda ctx: _fitted(make_scorer("el2n", {"proxy": TINY_PROXY}), ctx),
    "grand": lambda ctx: _fitted(make_scorer("grand", {"proxy": TINY_PROXY}), ctx),
    "influence": lambda ctx: _fitted(
        make_scorer("influence", {"proxy": TINY_PROXY, "projection_dim": 4}), ctx
    ),
    "mimic": _mimic,
    "vog": lambda ctx: _fitted(make_scorer("vog", {"proxy": TINY_PROXY, "n_normalize": 100}), ctx),
    "label_issues": lambda ctx: _fitted(
        make_scorer("label_issues", {"proxy": TINY_PROXY, "n_folds": 2}), ctx
    ),
    "embedding": lambda ctx: _fitted(make_scorer("embedding", {"dim": 32}), ctx),
    # The conformance batches carry no row positions: no `_in_lm_train` output here.
    "perplexity": lambda ctx: _fitted(
        make_scorer("perplexity", {"lm": TINY_LM, "token_el2n": True, "flag_lm_train": False}),
        ctx,
    ),
    # Short prompts: the conformance documents are a few tokens long ("word" is NaN anyway).
    "memorization": lambda ctx: _fitted(make_scorer("memorization", MEMORIZATION), ctx),
    "fasttext_quality": lambda ctx: _fitted(
        make_scorer(
            "fasttext_quality",
            {
                "positive_labels": ["science", "travel"],
                "n_documents": 300,
                "epoch": 2,
                "dim": 16,
                "bucket": 10_000,
                "classifiers": [{"seed": 1}, {"seed": 2}],
                "write_members": True,
            },
        ),
        ctx,
    ),
    "token_count": lambda ctx: _fitted(make_scorer("token_count", {"lm": TINY_LM}), ctx),
    "language": lambda ctx: make_scorer("language"),
    "dsir": _dsir,
    "embedding_classifier": _embedding_classifier,
    "score_combine": lambda ctx: make_scorer(
        "score_combine", {"columns": ["score_a", "score_b"], "how": "max"}
    ),
    "gopher_quality": lambda ctx: make_scorer("gopher_quality"),
    "gopher_repetition": lambda ctx: make_scorer("gopher_repetition"),
    "c4_quality": lambda ctx: make_scorer("c4_quality"),
    "fineweb_quality": lambda ctx: make_scorer("fineweb_quality"),
}

DOCUMENTS = [
    "The chef simmered the fragrant sauce for an hour.\nThen the guests arrived.",
    "Analysts said the quarterly earnings were volatile this year.",
    "x7# qq!! zz@ 0193 ~~~",
    "BUY NOW\nBUY NOW\nBUY NOW\nclick here",
    "word",
    "Travellers explored the quiet harbour and the ancient cathedral before the ferry left.",
]
LABELS = ["cooking", "finance", "science", "finance", "sports", "travel"]


@pytest.fixture(scope="module")
def fit_context(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path
) -> Callable[[], FitContext]:
    from thresher.config import SchemaConfig
    from thresher.io.ingest import ingest_shard
    from thresher.io.shards import numbered_shards

    shards = numbered_shards(sorted(small_corpus.glob("shard-*")), small_corpus)
    table = pa.concat_tables(
        [ingest_shard(s, SchemaConfig(label="topic")).table for s in shards],
        promote_options="permissive",
    )

    def sample(n: int, columns: list[str], seed: int) -> pa.Table:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(table.num_rows, size=min(n, table.num_rows), replace=False))
        return table.take(pa.array(rows))

    def make() -> FitContext:
        directory = tmp_path_factory.mktemp("artifacts")
        return FitContext(artifact_dir=directory, sample=sample, n_rows=table.num_rows, seed=0)

    return make


def test_every_registered_scorer_has_a_conformance_factory() -> None:
    assert set(SCORER_FACTORIES) == set(SCORERS)


@pytest.fixture(scope="module", params=sorted(SCORERS))
def scorer(request: pytest.FixtureRequest, fit_context: Callable[[], FitContext]) -> Scorer:
    instance = SCORER_FACTORIES[request.param](fit_context)
    instance.setup()
    return instance


def _batch() -> pa.RecordBatch:
    """The documents, and columns other scorers write (embedding_classifier, score_combine read them)."""
    batch = text_batch(DOCUMENTS, LABELS)
    written = {
        "embedding": make_scorer("embedding", {"dim": 32}).score(batch),
        "score_a": pa.array([0.1, 0.9, 0.0, 0.4, 1.0, 0.7], pa.float64()),
        "score_b": pa.array([0.3, 0.2, 0.5, 0.8, 0.6, 0.7], pa.float64()),
    }
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *written.values()], names=[*batch.schema.names, *written]
    )


def _score(scorer: Scorer, batch: pa.RecordBatch) -> pa.Array:
    view = pa.RecordBatch.from_arrays(
        [batch.column(batch.schema.get_field_index(c)) for c in scorer.input_columns],
        names=list(scorer.input_columns),
    )
    return scorer.score(view)


def _same(first: list[object], second: list[object]) -> bool:
    """Equal values, a NaN (a document with nothing to score) equal to a NaN; -0.0 is not 0.0."""
    return repr(first) == repr(second)


def test_same_length_and_declared_type(scorer: Scorer) -> None:
    result = _score(scorer, _batch())
    assert len(result) == len(DOCUMENTS)
    fields = scorer.output_fields("x")
    if len(fields) == 1:
        assert result.type == fields[0].type
    else:  # several outputs: a struct whose children match the fields by position
        assert isinstance(result, pa.StructArray)
        assert [child.type for child in result.type] == [field.type for field in fields]


def test_empty_and_single_row_batches(scorer: Scorer) -> None:
    batch = _batch()
    assert len(_score(scorer, batch.slice(0, 0))) == 0
    one = _score(scorer, batch.slice(1, 1))
    assert len(one) == 1
    assert one.to_pylist() == _score(scorer, batch).slice(1, 1).to_pylist()


def test_deterministic_and_pure(scorer: Scorer) -> None:
    batch = _batch()
    before = batch.to_pydict()
    first = _score(scorer, batch).to_pylist()
    second = _score(scorer, batch).to_pylist()
    assert _same(first, second)
    assert batch.to_pydict() == before


def test_setup_is_idempotent_and_scorer_pickles(scorer: Scorer) -> None:
    import pickle

    scorer.setup()
    clone = pickle.loads(pickle.dumps(scorer))
    clone.setup()
    assert _same(_score(clone, _batch()).to_pylist(), _score(scorer, _batch()).to_pylist())


def test_params_round_trip(scorer: Scorer) -> None:
    rebuilt = type(scorer)(**scorer.get_params())
    assert rebuilt.get_params() == scorer.get_params()


#: The parameters each factory gives (valid values), for the parameter checks below.
SCORER_PARAMS: dict[str, dict[str, object]] = {
    "minhash": {"num_perm": 64, "ngram": 3},
    "el2n": {"proxy": TINY_PROXY},
    "grand": {"proxy": TINY_PROXY},
    "influence": {"proxy": TINY_PROXY, "projection_dim": 4},
    "mimic": {"proxy": TINY_PROXY, "target_file": "target.jsonl"},
    "vog": {"proxy": TINY_PROXY, "n_normalize": 100},
    "label_issues": {"proxy": TINY_PROXY, "n_folds": 2},
    "embedding": {"dim": 32},
    "perplexity": {"lm": TINY_LM, "token_el2n": True, "flag_lm_train": False},
    "memorization": MEMORIZATION,
    "fasttext_quality": {"positive_labels": ["science", "travel"], "n_documents": 300},
    "token_count": {"lm": TINY_LM},
    "dsir": {"target_files": ["target.jsonl"], "n_buckets": 1000},
    "embedding_classifier": {"positive_labels": ["science"]},
    "score_combine": {"columns": ["word_count", "alpha_fraction"]},
}


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_a_bad_value_of_each_parameter_is_refused_when_the_config_is_loaded(
    name: str, make_config: Callable[..., object]
) -> None:
    from thresher.errors import ConfigError

    given = SCORER_PARAMS.get(name, {})
    valid = make_scorer(name, given).get_params()
    declared = SCORERS[name].parameter_constraints()
    make_config(scorers=[{"name": name, "params": given}], filters=[])
    for param, value in valid.items():
        assert param in declared, f"{name}.{param} declares no constraints"
        generated = invalid_values(declared[param])
        assert generated, f"{name}.{param}: its declaration refuses nothing"
        for bad in [bad_value(value), *generated]:
            with pytest.raises(ConfigError) as refused:
                make_config(scorers=[{"name": name, "params": {**given, param: bad}}], filters=[])
            message = str(refused.value)
            assert "scorers[0].params" in message and param in message, (param, bad, message)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_constructor_parameter_declares_its_constraints(name: str) -> None:
    """A parameter without a declaration would go unchecked; a stale one names no parameter."""
    cls = SCORERS[name]
    assert set(constructor_params(cls)) == set(cls.parameter_constraints())
