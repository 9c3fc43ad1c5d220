"""token_count: the reference LM's BPE tokenizer by default, a local tokenizer.json otherwise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.batches import text_batch
from thresher.errors import ConfigError
from thresher.examples.sample_corpus import generate_records
from thresher.fitting import FitContext
from thresher.models.tokenizer import BPETokenizer
from thresher.scorers import make_scorer
from thresher.scorers.token_count import TokenCountScorer

TINY_LM = {
    "vocab_size": 400,
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "context_length": 32,
    "n_documents": 120,
    "steps": 2,
    "batch_size": 2,
}
TEXTS = [
    "The chef simmered the fragrant sauce for an hour.",
    "Ünïcödé straße — 日本語のテキスト 🎉 and numbers 1234567",
    "",
    "   \n\t ",
    "word",
]


@pytest.fixture(scope="module")
def corpus() -> pa.Table:
    records = generate_records(300, seed=5)
    return pa.table({"id": [r["id"] for r in records], "text": [r["text"] for r in records]})


@pytest.fixture
def context(tmp_path: Path, corpus: pa.Table) -> Callable[[str], FitContext]:
    def sample(n: int, columns: list[str], seed: int) -> pa.Table:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(corpus.num_rows, size=min(n, corpus.num_rows), replace=False))
        return corpus.take(pa.array(rows))

    def make(name: str) -> FitContext:
        directory = tmp_path / "models" / name
        directory.mkdir(parents=True)
        return FitContext(artifact_dir=directory, sample=sample, n_rows=corpus.num_rows, seed=1)

    return make


def _counts(scorer: TokenCountScorer, texts: list[str | None]) -> list[int]:
    scorer.setup()
    return scorer.score(text_batch(texts).select(["text"])).to_pylist()


def test_counts_are_the_reference_lm_tokenizer_counts_and_the_tokenizer_is_shared(
    context: Callable[[str], FitContext],
) -> None:
    from thresher.models.lm_training import fit_reference_lm

    alone = make_scorer("token_count", {"lm": TINY_LM})
    alone.fit(context("token_count"))  # trains the tokenizer only: no LM in the run yet
    tokenizer = BPETokenizer.load(alone.tokenizer_file_)
    counts = _counts(alone, TEXTS)
    assert counts == [len(tokenizer.encode(text)) for text in TEXTS]
    assert counts[2] == 0 and counts[3] > 0  # whitespace is tokens too; nothing is nothing
    assert counts[0] < len(TEXTS[0])  # merges learned: fewer tokens than bytes

    # the LM the perplexity scorer trains with the same settings has the same tokenizer
    lm_dir = fit_reference_lm(context("perplexity"), **TINY_LM)
    assert (lm_dir / "tokenizer.json").read_bytes() == Path(alone.tokenizer_file_).read_bytes()
    shared = make_scorer("token_count", {"lm": TINY_LM})
    shared.fit(context("token_count_2"))
    assert Path(shared.tokenizer_file_) == lm_dir / "tokenizer.json"
    assert _counts(shared, TEXTS) == counts
    # other settings, another tokenizer
    other = make_scorer("token_count", {"lm": {**TINY_LM, "vocab_size": 300}})
    other.fit(context("token_count_3"))
    assert _counts(other, TEXTS[:1]) != counts[:1]


def test_count_equals_the_length_of_the_encoding() -> None:
    texts = [r["text"] for r in generate_records(50, seed=2)]
    tokenizer = BPETokenizer.train(texts[:25], vocab_size=600)
    for text in [*texts, *TEXTS]:
        assert tokenizer.count(text) == len(tokenizer.encode(text))


def _hf_tokenizer(path: Path) -> None:
    """A word-level tokenizer that wraps every text in [CLS] ... [SEP] (saved to ``path``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocabulary = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "the": 3, "chef": 4}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    tokenizer.save(str(path))


def test_a_local_hugging_face_tokenizer_counts_without_special_tokens(
    tmp_path: Path, context: Callable[[str], FitContext]
) -> None:
    pytest.importorskip("tokenizers")
    path = tmp_path / "tokenizer.json"
    _hf_tokenizer(path)
    scorer = make_scorer("token_count", {"tokenizer_path": str(path)})
    scorer.fit(context("hf"))
    # Whitespace pre-tokenisation: words and punctuation runs; [CLS]/[SEP] are not counted
    assert _counts(scorer, ["the chef cooks.", "", None, "a b c d e"]) == [4, 0, 0, 5]
    # a scorer that was never fitted loads the file where it runs
    unfitted = make_scorer("token_count", {"tokenizer_path": str(path)})
    assert _counts(unfitted, ["the chef"]) == [2]


def test_a_missing_or_foreign_tokenizer_file_is_refused_on_the_driver(
    tmp_path: Path, context: Callable[[str], FitContext]
) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        make_scorer("token_count", {"tokenizer_path": str(tmp_path / "missing.json")}).fit(
            context("missing")
        )
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not a Hugging Face tokenizer\.json"):
        make_scorer("token_count", {"tokenizer_path": str(foreign)}).fit(context("foreign"))


def test_lm_and_tokenizer_path_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        make_scorer("token_count", {"lm": TINY_LM, "tokenizer_path": "tokenizer.json"})
    with pytest.raises(ValueError, match="vocab_size"):
        make_scorer("token_count", {"lm": {"vocab_size": 10}})
