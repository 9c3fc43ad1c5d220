"""GPU check part ``lm_eval``: the language-model eval's training loop at a larger model size.

The eval trains one small LM per (selector, rate, seed); on a GPU it can
afford a larger one. This part measures, with the eval's own code
(:func:`thresher.evaluation.lm_train.train_lm`, bf16 autocast on CUDA):

- training tokens/s of a 6-layer, 384-wide model (context 256) on the GPU
  against the same loop on the CPU (a shorter run), and its model FLOP
  utilisation against the measured bf16 peak;
- the eval's known-answer grid at that size: a subset of only planted
  low-quality documents, a random subset and a clean subset of the same
  tokens, each trained for the same tokens and measured on held-out clean
  text (target: planted-only loss at least 10% above random's, clean-only
  below it).

Text: the Python standard library's docstrings with planted documents of
the five kinds of :mod:`thresher.examples.lm_corpus` (nothing but Python
needed). The whole grid through ``thresher eval`` (Prefect, the scorers) runs
where thresher is installed: ``python -m benchmarks.eval_lm --scale gpu
--device cuda``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from benchmarks._gpu_common import Row, Workspace

#: Model, training tokens per model, and CPU tokens of the speed leg.
SIZES = {
    "full": {
        "model": {"d_model": 384, "n_layers": 6, "n_heads": 6, "context_length": 256},
        "batch_size": 32,
        "train_tokens": 2_000_000,
        "cpu_tokens": 60_000,
        "vocab_size": 4096,
        "lr": 2e-3,
    },
    "dry": {
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "context_length": 32},
        "batch_size": 8,
        "train_tokens": 6_000,
        "cpu_tokens": 2_000,
        "vocab_size": 400,
        "lr": 1e-2,
    },
}


def _documents(dry: bool) -> tuple[list[str], np.ndarray]:
    """Docstring texts and whether each is planted (20% of the documents)."""
    from thresher.examples.lm_corpus import plant, planted_counts, stdlib_documents

    clean = stdlib_documents(limit=300 if dry else None, seed=0)
    planted = plant(clean, planted_counts(len(clean), 0.2), seed=0)
    texts = [d.text for d in clean] + [d.text for d in planted]
    flags = np.array([False] * len(clean) + [True] * len(planted))
    return texts, flags


def _model_flops(settings: Any, tokens: int) -> float:
    """Training FLOPs: 6 x parameters (without embeddings) x tokens, plus attention."""
    d, layers, context = settings.d_model, settings.n_layers, settings.context_length
    per_token = 6 * (12 * layers * d * d + settings.vocab_size * d) + 12 * layers * context * d
    return float(per_token) * tokens


def part_lm_eval(ws: Workspace) -> None:
    """The eval's LM loop on the GPU: tokens/s against the CPU, MFU, the known answer."""
    from thresher.evaluation.lm_train import (
        LMTrainSettings,
        heldout_loss,
        tokenize_documents,
        train_lm,
    )
    from thresher.models.tokenizer import BPETokenizer

    size = SIZES["dry" if ws.dry else "full"]
    texts, planted = _documents(ws.dry)
    rng = np.random.default_rng(0)
    clean = rng.permutation(np.flatnonzero(~planted))
    held_out, clean = np.sort(clean[: max(20, clean.size // 20)]), clean[clean.size // 20 :]
    tokenizer = BPETokenizer.train([texts[i] for i in clean[:2000]], size["vocab_size"])
    docs = tokenize_documents(texts, tokenizer)
    settings = LMTrainSettings(
        vocab_size=tokenizer.vocab_size,
        train_tokens=size["train_tokens"],
        batch_size=size["batch_size"],
        lr=size["lr"],
        device=ws.device,
        **size["model"],
    )
    pool = np.sort(np.concatenate([clean, np.flatnonzero(planted)]))

    started = time.perf_counter()
    gpu = train_lm(docs.take(pool), settings, seed=0)
    gpu_rate = float(gpu.record["tokens_per_second"])
    cpu_settings = dataclasses.replace(settings, device="cpu", train_tokens=size["cpu_tokens"])
    cpu_rate = float(train_lm(docs.take(pool), cpu_settings, seed=0).record["tokens_per_second"])
    workload = (
        f"d {settings.d_model}, {settings.n_layers} layers, context {settings.context_length}, "
        f"batch {settings.batch_size}, {gpu.record['n_parameters'] / 1e6:.1f}M parameters"
    )
    ws.emit(
        Row(
            "lm_eval",
            "LM eval training loop (train_lm)",
            workload=workload,
            unit="tokens/s",
            gpu=gpu_rate,
            cpu=cpu_rate,
            speedup=gpu_rate / cpu_rate,
            note=f"{gpu.record['tokens_trained']:,} tokens on {ws.device} in "
            f"{time.perf_counter() - started:.1f} s with the CPU leg",
        )
    )
    ws.emit(
        Row(
            "lm_eval",
            "MFU bf16, LM eval training loop",
            workload="6 x parameters x tokens (+ attention) / measured bf16 peak",
            unit="%",
            gpu=100 * _model_flops(settings, 1) * gpu_rate / ws.peak_flops(),
        )
    )

    sizes = np.diff(docs.starts)
    budget = int(sizes[planted].sum())

    def fill(candidates: np.ndarray) -> np.ndarray:
        order = rng.permutation(candidates)
        return np.sort(order[np.cumsum(sizes[order]) <= budget])

    losses = {}
    for name, rows in (
        ("planted only", np.flatnonzero(planted)),
        ("random", fill(pool)),
        ("clean only", fill(clean)),
    ):
        trained = train_lm(docs.take(rows), settings, seed=1)
        losses[name], _ = heldout_loss(trained.model, docs.take(held_out), settings.context_length)
    ratio = losses["planted only"] / losses["random"]
    ws.emit(
        Row(
            "lm_eval",
            "known answer: planted-only / random held-out loss",
            workload=f"{budget:,} tokens per subset, {settings.train_tokens:,} training tokens",
            unit="x",
            gpu=ratio,
            target=">= 1.10",
            status="met" if ratio >= 1.10 else "missed",
            note=f"losses {', '.join(f'{k} {v:.3f}' for k, v in losses.items())}",
        )
    )
    ws.emit(
        Row(
            "lm_eval",
            "known answer: clean-only / random held-out loss",
            unit="x",
            gpu=losses["clean only"] / losses["random"],
            target="< 1",
            status="met" if losses["clean only"] < losses["random"] else "missed",
        )
    )
