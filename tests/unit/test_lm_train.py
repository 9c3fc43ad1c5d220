"""The language-model eval's training loop, with tiny real models trained on real text."""

from __future__ import annotations

import argparse
import collections
import inspect
import itertools
import json
import math
import pathlib
import string
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.lm import one_torch_thread
from thresher.evaluation.lm_train import (
    CHECK_EVERY,
    LMTrainSettings,
    TokenDocs,
    heldout_loss,
    tokenize_documents,
    train_lm,
    window_order,
    window_starts,
)
from thresher.models._transformer import CausalTransformer, TransformerConfig
from thresher.models.tokenizer import DOCUMENT, BPETokenizer

CONTEXT = 16


def _docstrings(*modules: object) -> list[str]:
    """Docstrings of the public names of standard-library modules: real English text."""
    texts = []
    for module in modules:
        for name in sorted(dir(module)):
            doc = None if name.startswith("_") else inspect.getdoc(getattr(module, name))
            if doc:
                texts.append(doc)
    return texts


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def train_texts() -> list[str]:
    return _docstrings(json, collections, pathlib, argparse)


@pytest.fixture(scope="module")
def tokenizer(train_texts: list[str]) -> BPETokenizer:
    return BPETokenizer.train(train_texts, vocab_size=400)


@pytest.fixture(scope="module")
def train_docs(train_texts: list[str], tokenizer: BPETokenizer) -> TokenDocs:
    docs = tokenize_documents(train_texts, tokenizer)
    # A few thousand tokens keep each test to a second or two.
    n_docs = int(np.searchsorted(docs.starts, 6000))
    return docs.take(np.arange(n_docs))


@pytest.fixture(scope="module")
def heldout_docs(tokenizer: BPETokenizer) -> TokenDocs:
    return tokenize_documents(_docstrings(textwrap, string), tokenizer)


def _settings(tokenizer: BPETokenizer, **overrides: object) -> LMTrainSettings:
    values: dict[str, object] = {
        "vocab_size": tokenizer.vocab_size,
        "d_model": 32,
        "n_layers": 1,
        "n_heads": 2,
        "context_length": CONTEXT,
        "train_tokens": 4000,
        "batch_size": 8,
        "device": "cpu",
    }
    values.update(overrides)
    return LMTrainSettings(**values)  # type: ignore[arg-type]


def _docs(*documents: list[int]) -> TokenDocs:
    lengths = [len(d) for d in documents]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate([np.asarray(d, dtype=np.int32) for d in documents])
    return TokenDocs(ids, starts)


# -- tokenized documents ----------------------------------------------------------------------
def test_tokenize_documents_keeps_every_position(tokenizer: BPETokenizer) -> None:
    docs = tokenize_documents([None, "", "Return the path.", None], tokenizer)
    assert docs.n_docs == 4
    assert docs.ids.dtype == np.int32 and docs.starts.dtype == np.int64
    pieces = [docs.ids[docs.starts[i] : docs.starts[i + 1]].tolist() for i in range(4)]
    assert pieces == [
        [DOCUMENT],
        [DOCUMENT],
        [DOCUMENT, *tokenizer.encode("Return the path.")],
        [DOCUMENT],
    ]
    assert docs.n_tokens == sum(map(len, pieces))
    empty = tokenize_documents([], tokenizer)
    assert (empty.n_docs, empty.n_tokens) == (0, 0)


def test_take_save_load_round_trip(train_docs: TokenDocs, tmp_path: Path) -> None:
    positions = np.array([5, 0, 5, train_docs.n_docs - 1, 2])
    taken = train_docs.take(positions)
    expected = np.concatenate(
        [train_docs.ids[train_docs.starts[p] : train_docs.starts[p + 1]] for p in positions]
    )
    assert taken.n_docs == len(positions)
    np.testing.assert_array_equal(taken.ids, expected)
    for i, p in enumerate(positions):
        assert taken.ids[taken.starts[i]] == DOCUMENT
        assert (
            taken.starts[i + 1] - taken.starts[i] == train_docs.starts[p + 1] - train_docs.starts[p]
        )
    assert train_docs.take([]).n_tokens == 0
    with pytest.raises(IndexError):
        train_docs.take([train_docs.n_docs])

    path = tmp_path / "sub" / "docs.npz"
    taken.save(path)
    loaded = TokenDocs.load(path)
    np.testing.assert_array_equal(loaded.ids, taken.ids)
    np.testing.assert_array_equal(loaded.starts, taken.starts)
    assert loaded.ids.dtype == np.int32 and loaded.starts.dtype == np.int64
    assert [p.name for p in path.parent.iterdir()] == ["docs.npz"]  # no temporary file left

    np.savez(tmp_path / "other.npz", tokens=np.arange(3))
    with pytest.raises(ValueError, match="not a TokenDocs file"):
        TokenDocs.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="starts must rise"):
        TokenDocs(np.arange(4, dtype=np.int32), np.array([0, 3], dtype=np.int64))


# -- settings and the repetition rule --------------------------------------------------------
def test_settings_steps_schedule_and_checks(tokenizer: BPETokenizer) -> None:
    settings = _settings(tokenizer, train_tokens=1000, batch_size=4, warmup=0.1, min_lr=0.1)
    assert settings.steps == math.ceil(1000 / (4 * CONTEXT)) == 16
    rates = [settings.learning_rate(step) for step in range(settings.steps)]
    assert rates[0] == pytest.approx(settings.lr / 2)  # two warm-up steps
    assert rates[1] == pytest.approx(settings.lr)
    assert all(a >= b for a, b in itertools.pairwise(rates[1:]))
    assert rates[-1] > settings.lr * settings.min_lr
    assert rates[-1] == pytest.approx(
        settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 13 / 14)))
    )
    for bad in ({"d_model": 31}, {"batch_size": 0}, {"lr": 0.0}, {"warmup": 1.5}, {"min_lr": -1}):
        with pytest.raises(ValueError, match="LM setting"):
            _settings(tokenizer, **bad)


def test_windows_and_their_order() -> None:
    starts, length = window_starts(50, CONTEXT)
    assert length == CONTEXT + 1
    assert starts.tolist() == [0, 16, 32]  # 32 + 17 <= 50; a window at 48 would overrun
    assert window_starts(17, CONTEXT)[0].tolist() == [0]
    short, short_length = window_starts(9, CONTEXT)  # shorter than one window: all of it
    assert (short.tolist(), short_length) == ([0], 9)
    for n_tokens in (0, 1):
        with pytest.raises(ValueError, match="subset is empty"):
            window_starts(n_tokens, CONTEXT)

    order = window_order(7, 30, seed=3)
    assert len(order) == 30
    epochs = [order[i : i + 7] for i in range(0, 28, 7)]
    for epoch in epochs:  # no window twice within an epoch
        assert sorted(epoch.tolist()) == list(range(7))
    assert len({tuple(e) for e in epochs}) > 1  # a new permutation each epoch
    assert set(order[28:].tolist()) <= set(range(7))
    np.testing.assert_array_equal(order, window_order(7, 30, seed=3))
    assert not np.array_equal(order, window_order(7, 30, seed=4))


def test_repetition_rule(tokenizer: BPETokenizer, train_docs: TokenDocs) -> None:
    settings = _settings(tokenizer, train_tokens=6000)
    half = train_docs.take(np.arange(train_docs.n_docs // 2))
    double = half.take(np.tile(np.arange(half.n_docs), 2))  # exactly twice the tokens
    records = {
        name: train_lm(d, settings, seed=0).record
        for name, d in [("half", half), ("double", double)]
    }
    for name, docs in [("half", half), ("double", double)]:
        record = records[name]
        assert record["steps"] == settings.steps == math.ceil(6000 / (8 * CONTEXT))
        assert record["tokens_trained"] == settings.steps * settings.batch_size * CONTEXT
        assert record["epochs"] == record["tokens_trained"] / docs.n_tokens
        assert record["subset_tokens"] == docs.n_tokens
        assert record["n_windows"] == (docs.n_tokens - 1) // CONTEXT
        assert record["diverged"] is False and record["device"] == "cpu"
        assert math.isfinite(record["final_loss"]) and record["tokens_per_second"] > 0
    assert records["half"]["epochs"] == pytest.approx(2 * records["double"]["epochs"])
    assert records["half"]["epochs"] > 1  # the half subset is really repeated


def test_subset_shorter_than_one_window_trains_on_it_whole(tokenizer: BPETokenizer) -> None:
    docs = tokenize_documents(["Open the file."], tokenizer)
    assert 2 <= docs.n_tokens < CONTEXT + 1
    settings = _settings(tokenizer, train_tokens=200, batch_size=2)
    record = train_lm(docs, settings, seed=0).record
    assert record["n_windows"] == 1
    assert record["tokens_trained"] == settings.steps * 2 * (docs.n_tokens - 1)
    assert record["epochs"] == record["tokens_trained"] / docs.n_tokens
    assert math.isfinite(record["final_loss"])

    for empty in (tokenize_documents([], tokenizer), tokenize_documents([None], tokenizer)):
        with pytest.raises(ValueError, match="subset is empty"):
            train_lm(empty, settings, seed=0)


# -- training -----------------------------------------------------------------------------------
def test_same_seed_same_model_at_any_thread_count(
    tokenizer: BPETokenizer,
    train_docs: TokenDocs,
    heldout_docs: TokenDocs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(tokenizer, train_tokens=2000)
    results = {}
    for threads in (1, 2):
        monkeypatch.setenv("THRESHER_WORKER_THREADS", str(threads))
        trained = train_lm(train_docs, settings, seed=7)
        assert torch.get_num_threads() == threads  # the setting took
        results[threads] = (trained, heldout_loss(trained.model, heldout_docs, CONTEXT))
    one, two = results[1][0].model.state_dict(), results[2][0].model.state_dict()
    assert all(torch.equal(one[name], two[name]) for name in one)
    assert results[1][1] == results[2][1]
    assert results[1][0].record["final_loss"] == results[2][0].record["final_loss"]

    other = train_lm(train_docs, settings, seed=8).model.state_dict()
    assert not all(torch.equal(one[name], other[name]) for name in one)


def test_training_lowers_heldout_loss(
    tokenizer: BPETokenizer, train_docs: TokenDocs, heldout_docs: TokenDocs
) -> None:
    settings = _settings(tokenizer, train_tokens=20_000, batch_size=16)
    torch.manual_seed(0)
    untrained = CausalTransformer(
        TransformerConfig(
            tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=2, context_length=CONTEXT
        )
    ).eval()
    before, n_scored = heldout_loss(untrained, heldout_docs, CONTEXT)
    assert n_scored == heldout_docs.n_tokens - 1
    assert before == pytest.approx(math.log(tokenizer.vocab_size), abs=0.05)

    calls: list[tuple[int, int]] = []
    trained = train_lm(train_docs, settings, seed=0, progress=lambda *a: calls.append(a))
    after, _ = heldout_loss(trained.model, heldout_docs, CONTEXT)
    assert not trained.model.training
    assert after < before - 0.5
    assert calls[-1] == (settings.steps, settings.steps)
    assert [done for done, _ in calls[:-1]] == list(range(CHECK_EVERY, settings.steps, CHECK_EVERY))
    assert trained.record["final_loss"] < before - 1.0


def test_divergence_stops_training(tokenizer: BPETokenizer, train_docs: TokenDocs) -> None:
    settings = _settings(tokenizer, lr=1e30, train_tokens=3 * CHECK_EVERY * 8 * CONTEXT)
    record = train_lm(train_docs, settings, seed=0).record
    assert record["diverged"] is True
    assert record["steps"] == CHECK_EVERY < settings.steps  # stopped at the first check
    assert record["tokens_trained"] == CHECK_EVERY * 8 * CONTEXT
    assert not math.isfinite(record["final_loss"])


# -- held-out loss --------------------------------------------------------------------------------
@pytest.mark.parametrize("n_tokens", [45, 33])  # a last, shorter window; none
def test_heldout_loss_is_the_per_token_mean(n_tokens: int) -> None:
    length = 8
    torch.manual_seed(1)
    model = CausalTransformer(
        TransformerConfig(vocab_size=300, d_model=16, n_layers=1, n_heads=2, context_length=length)
    ).eval()
    ids = np.random.default_rng(0).integers(0, 300, n_tokens)
    docs = _docs(ids[:10].tolist(), ids[10:].tolist())
    loss, n_scored = heldout_loss(model, docs, length, batch_size=2)
    assert n_scored == n_tokens - 1

    # Brute force: token t is predicted from its window's tokens before it, window by window.
    total = 0.0
    with torch.no_grad():
        for t in range(1, n_tokens):
            start = (t - 1) // length * length
            context = torch.as_tensor(ids[start:t], dtype=torch.long)[None]
            logits, _ = model(context)
            total -= float(F.log_softmax(logits[0, -1].double(), dim=-1)[int(ids[t])])
    assert loss == pytest.approx(total / (n_tokens - 1), rel=1e-5)
    nothing, n_nothing = heldout_loss(model, _docs([DOCUMENT]), length)
    assert math.isnan(nothing) and n_nothing == 0


# -- a Hugging Face architecture ------------------------------------------------------------------
def test_hf_config_trains_that_architecture(
    tokenizer: BPETokenizer, train_docs: TokenDocs, heldout_docs: TokenDocs, tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=CONTEXT,
        vocab_size=300,  # the settings override it
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=DOCUMENT,
        eos_token_id=DOCUMENT,
    )
    config.save_pretrained(tmp_path)
    settings = _settings(tokenizer, train_tokens=8000, hf_config=str(tmp_path / "config.json"))
    trained = train_lm(train_docs, settings, seed=0)
    assert type(trained.model.network).__name__ == "GPT2LMHeadModel"
    assert trained.model.network.config.vocab_size == tokenizer.vocab_size
    loss, _ = heldout_loss(trained.model, heldout_docs, CONTEXT)
    assert loss < math.log(tokenizer.vocab_size) - 0.5
    with pytest.raises(ValueError, match="no such file"):
        train_lm(train_docs, _settings(tokenizer, hf_config=str(tmp_path / "missing.json")), 0)
