"""The reference LM, its tokenizer and the perplexity scorer, with real models trained here."""

from __future__ import annotations

import json
import math
import pickle
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.lm import (
    SMALL_LM,
    IngestedRun,
    ingest_small_corpus,
    one_torch_thread,
    read_scores,
)
from thresher.devices import autocast_dtype, resolve_device
from thresher.errors import ConfigError, ThresherError
from thresher.models.lm import (
    CONFIG_FILE,
    TRAIN_ROWS_FILE,
    WEIGHTS_FILE,
    LMError,
    ReferenceLM,
    in_training_sample,
)
from thresher.models.lm_training import fit_reference_lm, lm_params
from thresher.models.tokenizer import DOCUMENT, BPETokenizer, TokenizerError, split_words
from thresher.scorers import make_scorer
from thresher.scorers.perplexity import PerplexityScorer
from thresher.stages.score import BoundScorer, ScoreShard

TINY_LM = {"vocab_size": 300, "d_model": 16, "n_layers": 1, "n_heads": 2, "context_length": 32}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def ingested(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> IngestedRun:
    return ingest_small_corpus(small_corpus, tmp_path_factory.mktemp("lm-run"))


@pytest.fixture(scope="module")
def lm_path(ingested: IngestedRun) -> Path:
    return fit_reference_lm(ingested.context("perplexity"), **SMALL_LM)


@pytest.fixture(scope="module")
def lm(lm_path: Path) -> ReferenceLM:
    return ReferenceLM.load(lm_path, device="cpu")


@pytest.fixture(scope="module")
def held_out_clean(ingested: IngestedRun, lm: ReferenceLM) -> list[str]:
    """Clean documents of the corpus that the LM was not trained on."""
    table = ingested.table()
    trained = set(lm.training_rows().column("id").to_pylist())
    return [
        text
        for text, kind, doc_id in zip(
            table.column("text").to_pylist(),
            table.column("kind").to_pylist(),
            table.column("id").to_pylist(),
            strict=True,
        )
        if kind == "clean" and doc_id not in trained
    ][:40]


# -- tokenizer ---------------------------------------------------------------------------
def test_bpe_learns_the_most_frequent_pairs_first() -> None:
    tokenizer = BPETokenizer.train(["ab ab ab abc"], vocab_size=260)
    # words "ab", " ab", " ab", " abc": (a, b) occurs 4 times, then (" ", ab) 3 times.
    assert tokenizer.merges == [(ord("a"), ord("b")), (ord(" "), 258)]
    assert tokenizer.encode("ab abc") == [258, 259, ord("c")]
    assert tokenizer.vocab_size == 260


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_tokenizer_round_trips_any_text(text: str) -> None:
    tokenizer = _CORPUS_TOKENIZER
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_long_runs_are_cut_into_short_words_and_max_tokens_stops_early() -> None:
    tokenizer = _CORPUS_TOKENIZER
    blob = "a" * 20_000 + " " * 5_000 + "!" * 5_000 + "_" * 300
    # BPE on one word is quadratic in its length: no word may be long.
    assert max(len(word) for word in split_words(blob)) <= 65
    assert tokenizer.decode(tokenizer.encode(blob)) == blob
    assert tokenizer.encode(blob, max_tokens=7) == tokenizer.encode(blob)[:7]
    text = "The chef simmered the sauce. " * 20
    assert tokenizer.encode(text, max_tokens=11) == tokenizer.encode(text)[:11]
    assert tokenizer.encode_document(text, 3) == [DOCUMENT, *tokenizer.encode(text)[:3]]


_CORPUS_TOKENIZER = BPETokenizer.train(
    ["The chef simmered the sauce. Analysts said the market rallied!"] * 3, vocab_size=400
)


def test_tokenizer_compresses_corpus_text_and_round_trips_through_json(
    tmp_path: Path, lm: ReferenceLM, held_out_clean: list[str]
) -> None:
    tokenizer = lm.backend.tokenizer  # type: ignore[attr-defined]
    text = held_out_clean[0]
    assert len(tokenizer.encode(text)) < len(text.encode()) / 3
    tokenizer.save(tmp_path / "t.json")
    assert BPETokenizer.load(tmp_path / "t.json").encode(text) == tokenizer.encode(text)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(TokenizerError, match="not a thresher tokenizer"):
        BPETokenizer.load(tmp_path / "bad.json")


# -- known answers -----------------------------------------------------------------------
def test_in_distribution_text_has_lower_perplexity_than_shuffled_or_random(
    lm: ReferenceLM, held_out_clean: list[str]
) -> None:
    rng = random.Random(0)
    shuffled = []
    for text in held_out_clean:
        words = text.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    random_bytes = [
        bytes(rng.randrange(32, 127) for _ in range(len(text))).decode("ascii")
        for text in held_out_clean
    ]
    clean_ppl = np.exp(lm.score_documents(held_out_clean)[0])
    shuffled_ppl = np.exp(lm.score_documents(shuffled)[0])
    random_ppl = np.exp(lm.score_documents(random_bytes)[0])
    assert np.all(clean_ppl < shuffled_ppl)
    assert np.all(clean_ppl < random_ppl)
    assert np.median(shuffled_ppl / clean_ppl) > 3
    # The validation perplexity recorded at training is in the range of held-out text.
    recorded = json.loads((lm.path / CONFIG_FILE).read_text())["validation_perplexity"]  # type: ignore[operator]
    assert 0.5 * np.median(clean_ppl) < recorded < 2 * np.median(clean_ppl)


def _manual_scores(lm: ReferenceLM, text: str, max_tokens: int | None) -> tuple[float, float]:
    """NLL and token EL2N computed directly from the network, window by window."""
    sequence = lm.backend.encode_document(text, max_tokens)
    window = lm.context_length
    nll, el2n, count = 0.0, 0.0, 0
    model = lm.backend.model  # type: ignore[attr-defined]
    with torch.no_grad():
        for start in range(0, len(sequence) - 1, window):
            chunk = torch.tensor(sequence[start : start + window + 1])
            logits, _ = model(chunk[None, :-1])
            targets = chunk[1:]
            nll += torch.nn.functional.cross_entropy(logits[0], targets, reduction="sum").item()
            p = torch.softmax(logits[0].double(), dim=-1)
            onehot = torch.nn.functional.one_hot(targets, p.shape[-1]).double()
            el2n += torch.linalg.vector_norm(p - onehot, dim=-1).sum().item()
            count += len(targets)
    return nll / count, el2n / count


def test_scores_match_a_direct_computation(lm: ReferenceLM, held_out_clean: list[str]) -> None:
    long_text = " ".join(held_out_clean[:4])  # several context windows
    assert len(lm.backend.encode_document(long_text, None)) > 3 * lm.context_length
    cases = [(held_out_clean[0], None), (long_text, None), (long_text, 5), ("word", None)]
    for text, max_tokens in cases:
        nll, el2n = lm.score_documents([text], max_tokens=max_tokens)
        expected_nll, expected_el2n = _manual_scores(lm, text, max_tokens)
        assert nll[0] == pytest.approx(expected_nll, rel=1e-5)
        assert el2n[0] == pytest.approx(expected_el2n, rel=1e-5)


def test_batching_and_padding_do_not_change_a_documents_scores(
    lm: ReferenceLM, held_out_clean: list[str]
) -> None:
    texts = [*held_out_clean[:6], " ".join(held_out_clean[6:9]), "word", "x7# qq!!"]
    together = lm.score_documents(texts)
    alone = [lm.score_documents([t], batch_tokens=1) for t in texts]
    reordered = lm.score_documents(texts[::-1], batch_tokens=700)
    for k in range(2):  # mean NLL, then token EL2N: bitwise equal on the CPU
        assert np.array_equal(together[k], np.array([a[k][0] for a in alone]))
        assert np.array_equal(together[k], reordered[k][::-1])
    embedded = lm.embed(texts)
    assert embedded.shape == (len(texts), lm.hidden_size) and embedded.dtype == np.float32
    assert np.array_equal(embedded, np.vstack([lm.embed([t], batch_tokens=1) for t in texts]))


def test_token_el2n_is_between_0_and_sqrt2_and_empty_text_is_nan(
    lm: ReferenceLM, held_out_clean: list[str]
) -> None:
    texts = [*held_out_clean[:5], "BUY NOW!!! " * 30, "zq#@ 81x ~~ \x00\x7f é中", "", None]
    nll, el2n = lm.score_documents(texts)
    assert np.all((el2n[:-2] >= 0) & (el2n[:-2] <= math.sqrt(2)))
    assert np.all(np.isfinite(nll[:-2]))
    assert np.isnan(nll[-2:]).all() and np.isnan(el2n[-2:]).all()
    assert np.isfinite(lm.embed(["", None])).all()


# -- training, cache, records ------------------------------------------------------------
def test_lm_is_shared_by_parameters_and_records_its_training_rows(
    ingested: IngestedRun, lm_path: Path
) -> None:
    other_scorer = ingested.context("perplexity_b")  # same run, another scorer
    assert fit_reference_lm(other_scorer, **SMALL_LM) == lm_path
    assert lm_path.parent == (ingested.run.models / "_shared").as_path()
    record = json.loads((lm_path / CONFIG_FILE).read_text())
    rows = pq.read_table(lm_path / TRAIN_ROWS_FILE)
    assert rows.num_rows == record["n_train_documents"] == 380  # 400 minus 5% held out
    keys = set(
        zip(
            rows.column("thresher_shard").to_pylist(),
            rows.column("thresher_row").to_pylist(),
            strict=True,
        )
    )
    assert len(keys) == rows.num_rows
    assert 1e5 < record["n_parameters"] < 2e5


def test_training_is_deterministic_for_a_seed(ingested: IngestedRun, tmp_path: Path) -> None:
    params = {**TINY_LM, "n_documents": 50, "steps": 3, "batch_size": 2}
    first = fit_reference_lm(ingested.context("a", seed=5), **params)
    # A fresh cache directory (another run) trains again and gets the same bytes.
    other = ingest_small_corpus(ingested.corpus, tmp_path / "run")
    second = fit_reference_lm(other.context("a", seed=5), **params)
    assert first != second
    assert (first / WEIGHTS_FILE).read_bytes() == (second / WEIGHTS_FILE).read_bytes()
    assert fit_reference_lm(ingested.context("a", seed=6), **params) != first


def test_unknown_or_bad_lm_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="dmodel"):
        lm_params(dmodel=3)
    with pytest.raises(ValueError, match="n_heads"):
        lm_params(d_model=10, n_heads=3)


# -- safety -------------------------------------------------------------------------------
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_pickled_checkpoint_is_refused_without_running_it(lm_path: Path, tmp_path: Path) -> None:
    fake = tmp_path / "lm"
    fake.mkdir()
    for name in (CONFIG_FILE, "tokenizer.json"):
        (fake / name).write_bytes((lm_path / name).read_bytes())
    marker = tmp_path / "pwned"
    (fake / WEIGHTS_FILE).write_bytes(pickle.dumps({"weights": _Exploit(marker)}))
    with pytest.raises(LMError, match="not a valid safetensors file"):
        ReferenceLM.load(fake, device="cpu")
    assert not marker.exists()
    (fake / WEIGHTS_FILE).unlink()
    (fake / "model.pt").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(LMError, match="safetensors only"):
        ReferenceLM.load(fake, device="cpu")
    assert not marker.exists()
    (fake / CONFIG_FILE).write_text('{"something": 1}')
    with pytest.raises(LMError, match="neither a thresher LM"):
        ReferenceLM.load(fake, device="cpu")


# -- devices ------------------------------------------------------------------------------
def test_device_choice_and_cpu_thread_cap(lm_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert autocast_dtype("cpu", True) is None
    assert autocast_dtype("cuda", True) is torch.bfloat16
    assert autocast_dtype("cuda", False) is torch.float16
    threads = torch.get_num_threads()
    monkeypatch.setenv("THRESHER_WORKER_THREADS", "3")
    try:
        loaded = ReferenceLM.load(lm_path, device="auto")
        assert loaded.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
        if not torch.cuda.is_available():
            assert resolve_device("auto") == "cpu"
            assert torch.get_num_threads() == 3
            assert loaded._amp is None
    finally:
        torch.set_num_threads(threads)


@pytest.mark.gpu
def test_gpu_scores_match_cpu_in_half_precision(lm_path: Path, held_out_clean: list[str]) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cpu = ReferenceLM.load(lm_path, device="cpu").score_documents(held_out_clean)
    gpu_lm = ReferenceLM.load(lm_path, device="cuda")
    assert gpu_lm._amp in (torch.bfloat16, torch.float16)
    gpu = gpu_lm.score_documents(held_out_clean)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=3e-2)
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=3e-2)


# -- the scorer ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scorer(ingested: IngestedRun) -> PerplexityScorer:
    instance = PerplexityScorer(lm=SMALL_LM, token_el2n=True, max_tokens=128, batch_tokens=2048)
    instance.fit(ingested.context("perplexity"))
    return instance


def test_scorer_outputs_perplexity_el2n_and_lm_training_flags(
    scorer: PerplexityScorer, ingested: IngestedRun, lm: ReferenceLM, lm_path: Path
) -> None:
    assert scorer.lm_path_ == str(lm_path)  # the LM trained once is shared
    scores = ingested.score_locally("perplexity", scorer)
    assert scores.column_names[-3:] == [
        "perplexity",
        "perplexity_token_el2n",
        "perplexity_in_lm_train",
    ]
    texts = (
        pa.concat_tables(
            [pq.read_table(ingested.run.ingested_shard(i)) for i in sorted(ingested.shard_rows)]
        )
        .column("text")
        .to_pylist()
    )
    nll, el2n = lm.score_documents(texts[:50], max_tokens=scorer.max_tokens)
    np.testing.assert_allclose(scores.column("perplexity").to_numpy()[:50], np.exp(nll), rtol=1e-9)
    np.testing.assert_allclose(
        scores.column("perplexity_token_el2n").to_numpy()[:50], el2n, rtol=1e-9
    )
    flagged = scores.filter(scores.column("perplexity_in_lm_train"))
    trained = lm.training_rows()
    assert sorted(flagged.column("id").to_pylist()) == sorted(trained.column("id").to_pylist())


def test_training_flags_match_position_and_id() -> None:
    trained = pa.table(
        {
            "id": ["a", "b"],
            "thresher_shard": pa.array([0, 1], pa.int32()),
            "thresher_row": pa.array([5, 7], pa.int64()),
        }
    )
    flags = in_training_sample(trained, [0, 0, 1, 1], [5, 6, 7, 7], ["a", "a", "b", "z"])
    assert flags.tolist() == [True, False, True, False]
    assert in_training_sample(trained, [0, 1], [5, 5]).tolist() == [True, False]
    assert not in_training_sample(trained.slice(0, 0), [0], [5]).any()


def test_scorer_loads_a_saved_lm_from_model_path(
    scorer: PerplexityScorer, ingested: IngestedRun, lm_path: Path
) -> None:
    reused = PerplexityScorer(
        model_path=str(lm_path), token_el2n=True, max_tokens=128, batch_tokens=2048
    )
    reused.fit(ingested.context("reused"))
    reused.setup()
    table = pq.read_table(ingested.run.ingested_shard(0)).slice(0, 60)
    batch = table.select(list(reused.input_columns)).to_batches()[0]
    assert reused.score(batch).equals(scorer.score(batch))


@pytest.mark.slow
def test_scorer_loads_an_lm_from_object_storage(
    scorer: PerplexityScorer,
    ingested: IngestedRun,
    lm_path: Path,
    s3: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    bucket = s3_bucket
    s3.upload(lm_path, bucket, "lms/reference")
    uri = f"s3://{bucket}/lms/reference"
    remote = PerplexityScorer(model_path=uri, token_el2n=True, max_tokens=128, batch_tokens=2048)
    remote.fit(ingested.context("remote"))
    assert remote.lm_path_ == uri  # the fitted state names the URI, not this machine's copy
    remote.setup()
    table = pq.read_table(ingested.run.ingested_shard(0)).slice(0, 60)
    batch = table.select(list(remote.input_columns)).to_batches()[0]
    assert remote.score(batch).equals(scorer.score(batch))
    (copy,) = (tmp_path / "cache" / "inputs").iterdir()  # this machine's copy, read by setup
    for original in (p for p in lm_path.rglob("*") if p.is_file()):
        assert (copy / original.relative_to(lm_path)).read_bytes() == original.read_bytes()
    with pytest.raises(ConfigError, match=f"perplexity: model_path: 's3://{bucket}/none'"):
        PerplexityScorer(model_path=f"s3://{bucket}/none").fit(ingested.context("none"))


def test_scorer_parameters_are_checked_when_the_config_is_read(make_config: Any) -> None:
    with pytest.raises(ConfigError, match="dmodel"):
        make_config(scorers=[{"name": "perplexity", "params": {"lm": {"dmodel": 3}}}])
    with pytest.raises(ConfigError, match="not both"):
        make_config(scorers=[{"name": "perplexity", "params": {"lm": {}, "model_path": "x"}}])
    with pytest.raises(ConfigError, match="max_tokens"):
        make_config(scorers=[{"name": "perplexity", "params": {"max_tokens": 0}}])
    with pytest.raises(ThresherError, match="not a directory"):
        make_scorer("perplexity", {"model_path": "/nonexistent/lm"}).fit(None)  # type: ignore[arg-type]


@pytest.mark.spark
def test_spark_engine_scores_equal_the_local_engine(
    spark: Any, scorer: PerplexityScorer, ingested: IngestedRun, small_corpus: Path, tmp_path: Path
) -> None:
    from thresher.config import SparkConfig
    from thresher.engines.spark import SparkEngine

    run = ingest_small_corpus(small_corpus, tmp_path / "spark-run")
    engine = SparkEngine(SparkConfig(), batch_size=64)
    task = ScoreShard([BoundScorer("perplexity", scorer)], run.run, 64)
    engine.map_shards(task, sorted(run.shard_rows))
    engine.close()
    on_spark = read_scores(run.run)
    local = ingested.score_locally("perplexity", scorer).sort_by(
        [("thresher_shard", "ascending"), ("thresher_row", "ascending")]
    )
    assert on_spark.column("id").to_pylist() == local.column("id").to_pylist()
    for column in ("perplexity", "perplexity_token_el2n"):
        np.testing.assert_allclose(
            on_spark.column(column).to_numpy(), local.column(column).to_numpy(), rtol=1e-6
        )
    assert on_spark.column("perplexity_in_lm_train").equals(local.column("perplexity_in_lm_train"))


@pytest.mark.spark
def test_spark_tasks_use_their_share_of_the_cores(spark: Any) -> None:
    from thresher.devices import worker_threads

    def share(_: int) -> int:
        import os

        os.environ.pop("THRESHER_WORKER_THREADS", None)  # as on a real executor
        return worker_threads()

    # One CPU per task (spark.task.cpus defaults to 1), not every core of the machine.
    assert spark.sparkContext.parallelize([0, 1], 2).map(share).collect() == [1, 1]


# -- Hugging Face checkpoints (optional extra) --------------------------------------------
def test_a_hugging_face_checkpoint_without_transformers_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    with pytest.raises(LMError, match=r"thresher\[hf\]"):
        ReferenceLM.load(tmp_path, device="cpu")


def test_a_local_hugging_face_checkpoint_scores_like_the_model_itself(tmp_path: Path) -> None:
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

    loaded = ReferenceLM.load(tmp_path, device="cpu")
    documents = ["the cat sat", "a dog ate the sun today"]
    nll, el2n = loaded.score_documents(documents)
    for text, value in zip(documents, nll, strict=True):
        ids = torch.tensor(
            [[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]]
        )
        with torch.no_grad():
            expected = model(ids, labels=ids).loss.item()
        assert value == pytest.approx(expected, rel=1e-5)
    assert np.all((el2n >= 0) & (el2n <= math.sqrt(2)))
    assert loaded.embed(documents).shape == (2, 32)
    assert loaded.training_rows().num_rows == 0
    for weights in tmp_path.glob("*.safetensors"):
        weights.unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(LMError, match="safetensors only"):
        ReferenceLM.load(tmp_path, device="cpu")


def test_document_token_starts_every_sequence(lm: ReferenceLM) -> None:
    assert lm.backend.encode_document("abc", None)[0] == DOCUMENT
