"""The memorization scorer, with a reference LM really trained here on a corpus holding a repeat."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.helpers.lm import IngestedRun, ingest_small_corpus, one_torch_thread, read_scores
from thresher.errors import ConfigError
from thresher.fitting import FitContext
from thresher.models.lm import ReferenceLM
from thresher.scorers import make_scorer
from thresher.scorers.memorization import MemorizationScorer, memorization_scores
from thresher.scorers.perplexity import PerplexityScorer
from thresher.stages.score import BoundScorer, ScoreShard

#: Trains in a few seconds and learns a document repeated in its training sample by heart.
LM = {
    "vocab_size": 400,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 2,
    "context_length": 64,
    "n_documents": 200,
    "validation_fraction": 0.0,
    "steps": 250,
    "batch_size": 16,
    "learning_rate": 0.01,
}
SHORT = {"prefix": 12, "continuation": 12, "offsets": [0, 24, 48]}
WORDS = [
    "river",
    "stone",
    "garden",
    "window",
    "market",
    "silver",
    "orange",
    "yellow",
    "quiet",
    "winter",
    "summer",
    "bridge",
    "teacher",
    "doctor",
    "village",
    "forest",
    "mountain",
    "ocean",
    "candle",
    "letter",
    "basket",
    "pencil",
    "engine",
    "harbour",
    "castle",
    "meadow",
    "thunder",
    "feather",
    "lantern",
    "mirror",
    "ribbon",
    "saddle",
    "tunnel",
    "valley",
]


def _fresh(rng: random.Random, n_words: int = 60) -> str:
    """Words drawn at random: text of the corpus's kind that no model can have seen."""
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


REPEATED = _fresh(random.Random(99), 80)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def _context(root: Path, column: str) -> FitContext:
    """A fit context whose sample is 120 random documents and the same document 80 times."""
    rng = random.Random(0)
    texts = [_fresh(rng) for _ in range(120)] + [REPEATED] * 80
    table = pa.table({"id": [f"doc-{i}" for i in range(len(texts))], "text": texts})

    def sample(n: int, columns: list[str], seed: int) -> pa.Table:
        rows = np.sort(np.random.default_rng(seed).permutation(table.num_rows)[:n])
        return table.take(pa.array(rows)).select(columns)

    directory = root / "models" / column
    directory.mkdir(parents=True, exist_ok=True)
    return FitContext(artifact_dir=directory, sample=sample, n_rows=table.num_rows, seed=0)


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memorization-run")


@pytest.fixture(scope="module")
def scorer(run_root: Path) -> MemorizationScorer:
    instance = make_scorer("memorization", {"lm": LM, **SHORT, "device": "cpu"})
    assert isinstance(instance, MemorizationScorer)
    instance.fit(_context(run_root, "memorization"))
    instance.setup()
    return instance


@pytest.fixture(scope="module")
def fresh_texts() -> list[str]:
    rng = random.Random(12345)
    return [_fresh(rng) for _ in range(12)]


def _scores(scorer: MemorizationScorer, texts: list[str | None]) -> np.ndarray:
    batch = pa.RecordBatch.from_arrays([pa.array(texts, pa.string())], names=["text"])
    result = scorer.score(batch)
    assert result.type == pa.float64() and len(result) == len(texts)
    return np.asarray(result.to_numpy(zero_copy_only=False), dtype=np.float64)


# -- known answers -------------------------------------------------------------------------
def test_a_repeated_document_is_memorised_and_fresh_text_is_not(
    scorer: MemorizationScorer, fresh_texts: list[str]
) -> None:
    repeated, *fresh = _scores(scorer, [REPEATED, *fresh_texts])
    assert repeated >= 0.9
    assert max(fresh) < 0.5 and float(np.mean(fresh)) < 0.25
    assert np.all((np.asarray(fresh) >= 0) & (np.asarray(fresh) <= 1))


def test_the_score_is_the_fraction_of_greedy_tokens_equal_to_the_document(
    scorer: MemorizationScorer, fresh_texts: list[str]
) -> None:
    """The definition, computed by hand: one prompt at a time, straight through the network."""
    lm = scorer.lm_
    model = lm.backend.model  # type: ignore[attr-defined]
    prefix, continuation = SHORT["prefix"], SHORT["continuation"]
    for text in (REPEATED, fresh_texts[0]):
        sequence = lm.backend.encode_document(text, None)
        tokens = sequence[1:]
        fractions = []
        for offset in SHORT["offsets"]:
            if offset + prefix + continuation > len(tokens):
                continue
            ids = ([sequence[0]] if offset == 0 else []) + tokens[offset : offset + prefix]
            for _ in range(continuation):
                with torch.no_grad():
                    logits, _ = model(torch.tensor([ids]))
                ids.append(int(logits[0, -1].argmax()))
            truth = tokens[offset + prefix : offset + prefix + continuation]
            fractions.append(np.mean(np.asarray(ids[-continuation:]) == np.asarray(truth)))
        assert len(fractions) >= 2
        assert _scores(scorer, [text])[0] == pytest.approx(float(np.mean(fractions)), abs=1e-12)


def test_only_offsets_that_fit_count_and_a_short_document_is_nan(
    scorer: MemorizationScorer,
) -> None:
    lm = scorer.lm_
    words = REPEATED.split()
    tokens = lm.backend.encode_document(REPEATED, None)[1:]
    need = SHORT["prefix"] + SHORT["continuation"]
    # The shortest word prefixes of REPEATED with enough tokens for offset 0, then for 24.
    fits_first = next(
        " ".join(words[:k])
        for k in range(1, len(words))
        if len(lm.backend.encode_document(" ".join(words[:k]), None)) - 1 >= need
    )
    short = " ".join(words[:4])
    assert len(tokens) >= 24 + need and len(lm.backend.encode_document(short, None)) - 1 < need
    values = _scores(scorer, ["", None, short, fits_first])
    assert np.isnan(values[:3]).all()  # nothing, no text, fewer tokens than prefix + continuation
    only_first = memorization_scores(lm, [REPEATED], prefix=12, continuation=12, offsets=[0])
    assert values[3] == only_first[0]  # only offset 0 fits: the score is offset 0's
    assert 0.0 <= values[3] <= 1.0


def test_scores_do_not_depend_on_batch_size_or_thread_count(
    scorer: MemorizationScorer, fresh_texts: list[str]
) -> None:
    words = REPEATED.split()
    texts = [REPEATED, *fresh_texts, " ".join(words[:30]), "tiny", " ".join(words[10:])]
    lm = scorer.lm_
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for batch_size in (1, 7, 64):
                results.append(memorization_scores(lm, texts, **SHORT, batch_size=batch_size))
    finally:
        torch.set_num_threads(threads)
    assert np.isnan(results[0]).sum() == 1  # "tiny"
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])  # bitwise, NaN where NaN
    reversed_order = memorization_scores(lm, texts[::-1], **SHORT, batch_size=5)
    np.testing.assert_array_equal(reversed_order[::-1], results[0])


# -- the shared reference LM --------------------------------------------------------------
def test_the_perplexity_scorer_with_the_same_lm_parameters_reuses_the_same_lm(
    scorer: MemorizationScorer, run_root: Path
) -> None:
    shared = run_root / "models" / "_shared"
    trained = sorted(shared.glob("lm-*"))
    assert [str(p) for p in trained] == [scorer.lm_path_]
    stamp = (trained[0] / "model.safetensors").stat().st_mtime_ns
    perplexity = PerplexityScorer(lm=LM, flag_lm_train=False, device="cpu")
    perplexity.fit(_context(run_root, "perplexity"))
    assert perplexity.lm_path_ == scorer.lm_path_
    assert sorted(shared.glob("lm-*")) == trained  # no second LM trained
    assert (trained[0] / "model.safetensors").stat().st_mtime_ns == stamp
    # A model_path scorer loads that LM and scores the same.
    loaded = MemorizationScorer(model_path=scorer.lm_path_, **SHORT, device="cpu")
    loaded.fit(_context(run_root, "loaded"))
    assert _scores(loaded, [REPEATED])[0] == _scores(scorer, [REPEATED])[0]


def test_parameters_are_checked_when_the_config_is_read(make_config: Any) -> None:
    def config(**params: Any) -> Any:
        return make_config(scorers=[{"name": "memorization", "params": params}], filters=[])

    with pytest.raises(ConfigError, match="must fit the reference LM's context"):
        config(lm={"context_length": 32}, prefix=32, continuation=32)
    with pytest.raises(ConfigError, match="not both"):
        config(lm={}, model_path="x")
    with pytest.raises(ConfigError, match="offsets must differ"):
        config(offsets=[0, 0])
    with pytest.raises(ConfigError, match="offsets"):
        config(offsets=[-1])
    config(lm={"context_length": 64}, prefix=32, continuation=32)  # exactly the context


# -- Hugging Face checkpoints -------------------------------------------------------------
def test_a_local_hugging_face_checkpoint_decodes_as_its_own_greedy_generate(
    tmp_path: Path,
) -> None:
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    texts = ["the cat sat on the mat", "a dog ate the bone", "the sun is hot today"] * 5
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=120,
            special_tokens=["<s>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    lm = ReferenceLM.load(tmp_path, device="cpu")
    prompts = [lm.backend.encode_document(t, None) for t in ("the cat sat on", "a dog ate")]
    decoded = lm.greedy_continuations(prompts, 6, batch_size=1)
    for prompt, tokens in zip(prompts, decoded, strict=True):
        generated = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=6,
            min_new_tokens=6,
            do_sample=False,
            pad_token_id=tokenizer.bos_token_id,
        )
        assert tokens == generated[0, len(prompt) :].tolist()
    text = " ".join(texts)
    value = memorization_scores(lm, [text, "the"], prefix=4, continuation=4, offsets=[0, 8])
    assert 0.0 <= value[0] <= 1.0 and np.isnan(value[1])


# -- engines ------------------------------------------------------------------------------
@pytest.mark.spark
def test_the_spark_engine_scores_equal_the_local_engine(
    spark_engine: Any, small_corpus: Path, tmp_path: Path
) -> None:
    ingested: IngestedRun = ingest_small_corpus(small_corpus, tmp_path / "run")
    tiny = {**LM, "n_documents": 100, "steps": 20}
    scorer = MemorizationScorer(lm=tiny, prefix=8, continuation=8, offsets=[0, 16], device="cpu")
    scorer.fit(ingested.context("memorization"))
    task = ScoreShard([BoundScorer("memorization", scorer)], ingested.run, 64)
    spark_engine.map_shards(task, sorted(ingested.shard_rows))
    on_spark = read_scores(ingested.run)
    local = ingested.score_locally("memorization", scorer, batch_size=50).sort_by(
        [("thresher_shard", "ascending"), ("thresher_row", "ascending")]
    )
    assert on_spark.column("id").to_pylist() == local.column("id").to_pylist()
    spark_values = on_spark.column("memorization").to_numpy()
    assert np.isfinite(spark_values).sum() > 100  # most documents are long enough
    np.testing.assert_array_equal(spark_values, local.column("memorization").to_numpy())
