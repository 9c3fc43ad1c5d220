"""GPU check parts on models: bf16 peak, perplexity (reference LM and GPT-2-sized), EL2N, embeddings.

Model FLOP utilisation (MFU) divides the forward FLOPs of the tokens a
scorer read by the bf16 matrix-product rate measured in the same run.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks._gpu_common import (
    Row,
    Scale,
    Workspace,
    fit_context,
    importable,
    matmul_flops,
    record_batches,
    timed_loop,
)


# -- FLOP counting ---------------------------------------------------------------------------
def model_shape(model: Any) -> tuple[int, int, int]:
    """``(matmul parameters, layers, width)`` of a causal LM (thresher's or a transformers one).

    Matmul parameters are the weights of the linear layers, plus the output
    projection when it is the token embedding used directly (thresher's
    tied head); embeddings looked up, norms and biases are not counted.
    """
    from torch import nn

    config = model.config
    width = int(getattr(config, "d_model", None) or config.hidden_size)
    layers = int(getattr(config, "n_layers", None) or config.num_hidden_layers)
    vocab = int(config.vocab_size)
    linear = [
        m for m in model.modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"
    ]
    params = sum(int(m.weight.numel()) for m in linear)
    if not any(isinstance(m, nn.Linear) and m.out_features == vocab for m in linear):
        params += vocab * width
    return params, layers, width


def forward_flops(
    lengths: Sequence[int], window: int, shape: tuple[int, int, int]
) -> tuple[int, float]:
    """Scored tokens and forward FLOPs of documents whose token sequences have ``lengths``.

    A sequence of ``s`` ids (document token included) is scored in windows
    of at most ``window`` inputs (as :class:`thresher.models.lm.ReferenceLM`
    does); a window of ``t`` inputs costs ``2 P t + 4 L d t^2`` FLOPs
    (PaLM's count for a forward pass: matmuls, then attention scores and
    values without the causal halving), padding not counted.
    """
    params, layers, width = shape
    s = np.asarray(lengths, dtype=np.int64)
    targets = np.maximum(s - 1, 0)
    full, rest = targets // window, targets % window
    flops = full * (2.0 * params * window + 4.0 * layers * width * window**2)
    flops += 2.0 * params * rest + 4.0 * layers * width * rest.astype(np.float64) ** 2
    return int(targets.sum()), float(flops.sum())


class Tally:
    """Wraps a reference-LM backend's tokeniser: sequence lengths and tokenising time.

    The scorer under test tokenises as usual; the tally only records what
    it read, so that tokens and FLOPs are counted without tokenising twice.
    """

    def __init__(self, backend: Any) -> None:
        self._encode = backend.encode_document
        backend.encode_document = self
        self.lengths: list[int] = []
        self.seconds = 0.0

    def __call__(self, text: str, max_tokens: int | None) -> list[int]:
        started = time.perf_counter()
        ids: list[int] = self._encode(text, max_tokens)
        self.seconds += time.perf_counter() - started
        self.lengths.append(len(ids))
        return ids

    def reset(self) -> None:
        self.lengths = []
        self.seconds = 0.0


# -- part: bf16 peak -----------------------------------------------------------------------------
def part_peak(ws: Workspace) -> None:
    """The bf16 matrix-product rate: the denominator of every model FLOP utilisation."""
    gpu = ws.peak_flops()
    cpu = matmul_flops(ws.scale.cpu_peak_n, "cpu", min(2.0, ws.scale.leg_seconds))
    n, m = ws.scale.peak_n, ws.scale.cpu_peak_n
    ws.emit(
        Row(
            "peak",
            "bf16 matrix product",
            workload=f"{n}x{n}x{n} (GPU), {m}x{m}x{m} (CPU), random data",
            unit="TFLOP/s",
            gpu=gpu / 1e12,
            cpu=cpu / 1e12,
            speedup=gpu / cpu,
            note="the MFU rows divide by the GPU figure",
        )
    )


# -- part: perplexity with the run's reference LM ------------------------------------------------
def _score_legs(
    ws: Workspace,
    make_scorer: Callable[[str], Any],
    table: pa.Table,
    rows: dict[str, int],
    backend_of: Callable[[Any], Any],
) -> dict[str, tuple[Any, Tally, int, float]]:
    """Time ``score()`` on the GPU leg's device and on the CPU: ``{device: (scorer, tally, docs, s)}``."""
    legs: dict[str, tuple[Any, Tally, int, float]] = {}
    for leg, device in (("gpu", ws.device), ("cpu", "cpu")):
        scorer = make_scorer(device)
        scorer.setup()
        tally = Tally(backend_of(scorer))
        batches = record_batches(table, scorer.input_columns, rows[leg])
        scorer.score(batches[0].slice(0, 2))  # warm-up: kernels, allocator, autocast caches
        ws.sync(device)
        tally.reset()
        done, seconds = timed_loop(scorer.score, batches, ws.scale.leg_seconds, ws.syncer(device))
        legs[leg] = (scorer, tally, sum(batches[i].num_rows for i in done), seconds)
    return legs


def part_perplexity(ws: Workspace) -> None:
    """Perplexity scorer tokens/s with the run's own reference LM, GPU against CPU."""
    from thresher.scorers.perplexity import PerplexityScorer

    lm_dir, train_seconds = ws.reference_lm()
    config = json.loads((lm_dir / "config.json").read_text())
    legs = _score_legs(
        ws,
        lambda device: PerplexityScorer(model_path=str(lm_dir), device=device),
        ws.corpus().slice(0, ws.scale.documents),
        {"gpu": 1024, "cpu": 256},
        lambda scorer: scorer.lm_.backend,
    )
    scorer, tally, n_docs, seconds = legs["gpu"]
    shape = model_shape(scorer.lm_.backend.model)
    tokens, flops = forward_flops(tally.lengths, scorer.lm_.context_length, shape)
    _, cpu_tally, _, cpu_seconds = legs["cpu"]
    cpu_tokens, _ = forward_flops(cpu_tally.lengths, scorer.lm_.context_length, shape)
    gpu_rate, cpu_rate = tokens / seconds, cpu_tokens / cpu_seconds
    model = config["model"]
    workload = (
        f"reference LM {config['n_parameters'] / 1e6:.2g}M parameters (d {model['d_model']}, "
        f"{model['n_layers']} layers, context {model['context_length']}), defaults "
        f"(max_tokens {scorer.max_tokens}, batch_tokens {scorer.batch_tokens})"
    )
    ws.emit(
        Row(
            "perplexity",
            "perplexity scorer, the run's reference LM",
            workload=workload,
            unit="tokens/s",
            gpu=gpu_rate,
            cpu=cpu_rate,
            speedup=gpu_rate / cpu_rate,
            note=f"LM trained in {train_seconds:.1f} s on {ws.device}; "
            f"{n_docs:,} documents in the GPU leg; tokenising took "
            f"{100 * tally.seconds / seconds:.0f}% of it",
        )
    )
    ws.emit(
        Row(
            "perplexity",
            "MFU bf16, perplexity scorer, reference LM",
            workload="forward FLOPs of the scored tokens / measured bf16 peak",
            unit="%",
            gpu=100 * flops / seconds / ws.peak_flops(),
        )
    )


# -- part: perplexity with a GPT-2-small-sized model ---------------------------------------------
def build_gpt2(directory: Path, scale: Scale, texts: Sequence[str]) -> int:
    """Save a randomly initialised GPT-2-shaped causal LM and a byte-level BPE tokenizer.

    The tokenizer is trained on ``texts`` (nothing is downloaded); the
    model keeps GPT-2's vocabulary size, so its output layer costs what
    GPT-2's does. Returns the number of parameters.
    """
    import tokenizers
    import torch
    import transformers

    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts,
        vocab_size=scale.gpt2_tokenizer_vocab,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(str(directory))
    config = transformers.GPT2Config(**scale.gpt2, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(str(directory))
    return int(sum(p.numel() for p in model.parameters()))


def part_gpt2(ws: Workspace) -> None:
    """Perplexity scorer tokens/s and bf16 MFU with a GPT-2-small-sized model, GPU against CPU."""
    import torch

    from thresher.io import schema as S
    from thresher.scorers.perplexity import PerplexityScorer

    texts = ws.corpus().column(S.TEXT).to_pylist()[: ws.scale.documents]
    directory = ws.directory / "gpt2"
    n_params = build_gpt2(directory, ws.scale, texts)
    joined = [
        "\n\n".join(texts[i : i + ws.scale.joined]) for i in range(0, len(texts), ws.scale.joined)
    ]
    window = int(ws.scale.gpt2["n_positions"])
    legs = _score_legs(
        ws,
        lambda device: PerplexityScorer(
            model_path=str(directory), device=device, max_tokens=window, flag_lm_train=False
        ),
        pa.table({S.TEXT: joined}),
        {"gpu": 64, "cpu": 2},
        lambda scorer: scorer.lm_.backend,
    )
    scorer, tally, n_docs, seconds = legs["gpu"]
    lm = scorer.lm_
    shape = model_shape(lm.backend.model)
    tokens, flops = forward_flops(tally.lengths, lm.context_length, shape)
    _, cpu_tally, _, cpu_seconds = legs["cpu"]
    cpu_tokens, _ = forward_flops(cpu_tally.lengths, lm.context_length, shape)
    peak = ws.peak_flops()
    gpt = ws.scale.gpt2
    workload = (
        f"GPT-2-small-sized, random init, {n_params / 1e6:.3g}M parameters (d {gpt['n_embd']}, "
        f"{gpt['n_layer']} layers, vocab {gpt['vocab_size']:,}), documents of {window} tokens, "
        f"batch_tokens {scorer.batch_tokens}"
    )
    ws.emit(
        Row(
            "gpt2",
            "perplexity scorer, GPT-2-sized model",
            workload=workload,
            unit="tokens/s",
            gpu=tokens / seconds,
            cpu=cpu_tokens / cpu_seconds,
            speedup=(tokens / seconds) / (cpu_tokens / cpu_seconds),
            note=f"{n_docs:,} documents in the GPU leg; tokenising took "
            f"{100 * tally.seconds / seconds:.0f}% of it",
        )
    )
    scorer_mfu = flops / seconds / peak
    ws.emit(
        Row(
            "gpt2",
            "MFU bf16, perplexity scorer, GPT-2-sized model",
            workload="forward FLOPs of the scored tokens / measured bf16 peak",
            unit="%",
            gpu=100 * scorer_mfu,
            target=">= 30%",
            status="met" if scorer_mfu >= 0.30 else "missed",
        )
    )
    # The model alone, on batches shaped like the scorer's (full windows, no tokenising, no loss).
    rows = max(1, scorer.batch_tokens // window)
    ids = torch.randint(0, int(gpt["vocab_size"]), (rows, window), device=lm.device)
    batch_flops = rows * (2.0 * shape[0] * window + 4.0 * shape[1] * shape[2] * window**2)
    mfu = batch_flops / _seconds_per_call(lambda: lm._forward(ids), ws) / peak
    model16 = lm.backend.model.to(torch.bfloat16)  # in place: the scorer is not used after this

    def forward16() -> None:
        with torch.inference_mode():
            model16(input_ids=ids, use_cache=False)

    mfu16 = batch_flops / _seconds_per_call(forward16, ws) / peak
    ws.emit(
        Row(
            "gpt2",
            "MFU bf16, model forward alone, GPT-2-sized model",
            workload=f"{rows} x {window} token ids per call, the scorer's autocast forward",
            unit="%",
            gpu=100 * mfu,
            target=">= 30%",
            status="met" if mfu >= 0.30 else "missed",
            note=f"with bf16 weights (no autocast) and logits only: {100 * mfu16:.1f}%",
        )
    )


def _seconds_per_call(call: Callable[[], Any], ws: Workspace) -> float:
    """Mean seconds of ``call`` on the GPU leg's device, after two warm-up calls."""
    for _ in range(2):
        call()
    ws.sync()
    done, seconds = timed_loop(lambda _: call(), [None], min(2.0, ws.scale.leg_seconds), ws.sync)
    return seconds / len(done)


# -- part: EL2N proxy training and scoring ---------------------------------------------------------
def part_el2n(ws: Workspace) -> None:
    """EL2N: proxy training examples/s and scoring documents/s, GPU against CPU."""
    from thresher.scorers.el2n import EL2NScorer

    table = ws.corpus().slice(0, ws.scale.proxy_documents)
    fits: dict[str, float] = {}
    rates: dict[str, float] = {}
    config: Any = None
    n_train = 0
    for leg, device in (("gpu", ws.device), ("cpu", "cpu")):
        scorer = EL2NScorer(proxy=ws.scale.proxy, device=device)
        context = fit_context(table, ws.directory / f"el2n-{leg}" / "models" / "el2n")
        started = time.perf_counter()
        scorer.fit(context)
        ws.sync(device)
        fits[leg] = time.perf_counter() - started
        config = scorer.proxy_config
        n_train = int(json.loads((Path(scorer.proxy_path_) / "proxy.json").read_text())["n_train"])
        scorer.setup()
        batches = record_batches(table, scorer.input_columns, 4096 if leg == "gpu" else 1024)
        scorer.score(batches[0].slice(0, 2))
        done, seconds = timed_loop(scorer.score, batches, ws.scale.leg_seconds, ws.syncer(device))
        rates[leg] = sum(batches[i].num_rows for i in done) / seconds
    examples = n_train * config.epochs * config.n_seeds
    ws.emit(
        Row(
            "el2n",
            "EL2N proxy training (fit)",
            workload=f"{n_train:,} labelled documents x {config.epochs} epochs x {config.n_seeds} "
            f"seeds, hidden {config.hidden}, {config.features.source} dim {config.features.dim}, "
            f"batch {config.batch_size}",
            unit="examples/s",
            gpu=examples / fits["gpu"],
            cpu=examples / fits["cpu"],
            speedup=fits["cpu"] / fits["gpu"],
            note=f"fit {fits['gpu']:.2f} s (GPU), {fits['cpu']:.2f} s (CPU), features included",
        )
    )
    ws.emit(
        Row(
            "el2n",
            "EL2N scoring",
            workload="score() on batches of 4,096 (GPU) and 1,024 (CPU) documents",
            unit="docs/s",
            gpu=rates["gpu"],
            cpu=rates["cpu"],
            speedup=rates["gpu"] / rates["cpu"],
        )
    )


# -- part: embeddings ------------------------------------------------------------------------------
def build_encoder(directory: Path, scale: Scale, texts: Sequence[str]) -> None:
    """Save a randomly initialised BERT encoder (all-MiniLM-L6-v2's shape) and a WordPiece tokenizer."""
    import tokenizers
    import torch
    import transformers

    wordpiece = tokenizers.BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(
        texts, vocab_size=scale.encoder_tokenizer_vocab, show_progress=False
    )
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=wordpiece._tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**scale.encoder)).save_pretrained(str(directory))


def part_embedding(ws: Workspace) -> None:
    """Embedding throughput: thresher's LM embedding scorer, and a sentence-transformers encoder."""
    from thresher.io import schema as S
    from thresher.scorers.embedding import EmbeddingScorer

    lm_dir, _ = ws.reference_lm()
    table = ws.corpus().slice(0, ws.scale.documents)

    def make(device: str) -> Any:
        scorer = EmbeddingScorer(source="lm", model_path=str(lm_dir), device=device)
        scorer.fit(fit_context(table, ws.directory / "run" / "models" / "embedding"))
        return scorer

    legs = _score_legs(ws, make, table, {"gpu": 1024, "cpu": 256}, lambda s: s.model_.backend)
    gpu = legs["gpu"][2] / legs["gpu"][3]
    cpu = legs["cpu"][2] / legs["cpu"][3]
    ws.emit(
        Row(
            "embedding",
            "embedding scorer, source lm (the run's reference LM)",
            workload="mean-pooled final hidden states, batches of 1,024 (GPU) and 256 (CPU)",
            unit="docs/s",
            gpu=gpu,
            cpu=cpu,
            speedup=gpu / cpu,
        )
    )
    if not importable("sentence_transformers"):
        ws.emit(
            Row(
                "embedding",
                "sentence-transformers encoder",
                status="skipped",
                note="needs sentence_transformers (not installed)",
            )
        )
        return
    texts = table.column(S.TEXT).to_pylist()
    directory = ws.directory / "encoder"
    build_encoder(directory, ws.scale, texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from sentence_transformers.sentence_transformer import modules
        except ImportError:  # before sentence-transformers 6.1
            from sentence_transformers import models as modules  # type: ignore[no-redef,attr-defined]
        from sentence_transformers import SentenceTransformer
    rates: dict[str, float] = {}
    for leg, device, rows in (("gpu", ws.device, 1024), ("cpu", "cpu", 128)):
        width = int(ws.scale.encoder["hidden_size"])
        length = min(256, int(ws.scale.encoder["max_position_embeddings"]))
        model = SentenceTransformer(
            modules=[
                modules.Transformer(str(directory), max_seq_length=length),
                modules.Pooling(width, "mean"),
            ],
            device=device,
        )
        chunks = [texts[i : i + rows] for i in range(0, len(texts), rows)]

        def encode(chunk: list[str], model: Any = model) -> None:
            model.encode(chunk, batch_size=128, show_progress_bar=False)

        encode(chunks[0][:2])
        done, seconds = timed_loop(encode, chunks, ws.scale.leg_seconds, ws.syncer(device))
        rates[leg] = sum(len(chunks[i]) for i in done) / seconds
    enc = ws.scale.encoder
    ws.emit(
        Row(
            "embedding",
            "sentence-transformers encoder, all-MiniLM-L6-v2-sized, random init",
            workload=f"BERT d {enc['hidden_size']}, {enc['num_hidden_layers']} layers, "
            f"max_seq_length {min(256, int(enc['max_position_embeddings']))}, batch_size 128, "
            "float32, mean pooling",
            unit="docs/s",
            gpu=rates["gpu"],
            cpu=rates["cpu"],
            speedup=rates["gpu"] / rates["cpu"],
        )
    )
