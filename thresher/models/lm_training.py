"""Training the reference language model on a corpus sample, once per run.

:func:`fit_reference_lm` trains a byte-level BPE tokenizer
(:mod:`thresher.models.tokenizer`) and a GPT-style causal transformer
(:mod:`thresher.models._transformer`) on a random sample of the ingested
corpus and saves them under a cache directory shared by every scorer of the
run, keyed by the LM parameters and the seed: several scorers asking for the
same LM train it once. :class:`thresher.models.lm.ReferenceLM` loads the
result.

Which rows are trained on. "Perplexed by Perplexity" trains the reference
model on a split disjoint from the data it prunes. Here the LM is trained on
a random sample (``n_documents``, 10% of the 20k sample corpus by default)
and the sample's positions ``(thresher_shard, thresher_row)`` are saved in
``train_rows.parquet`` (see :func:`thresher.models.lm.in_training_sample`).
A held-out part of the sample (``validation_fraction``) is never trained on
and gives the validation perplexity recorded in ``config.json``.

References
----------
Ankner et al., "Perplexed by Perplexity: Perplexity-Based Data Pruning With
Small Reference Models", 2024.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.devices import autocast_dtype, bf16_supported, configure_torch, resolve_device
from thresher.errors import LMError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.keys import json_digest
from thresher.models.lm import (
    CONFIG_FILE,
    FORMAT,
    TOKENIZER_FILE,
    TRAIN_ROWS_FILE,
    WEIGHTS_FILE,
    ReferenceLM,
    ThresherBackend,
)

#: Default LM parameters: about 2.6M parameters, trains in a few minutes on 2 CPU cores.
LM_DEFAULTS: dict[str, Any] = {
    "vocab_size": 4096,
    "d_model": 192,
    "n_layers": 4,
    "n_heads": 4,
    "context_length": 256,
    "n_documents": 2000,
    "validation_fraction": 0.05,
    "steps": 300,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "weight_decay": 0.01,
    "device": "auto",
}
_NOT_IN_KEY = ("device",)  # where it trains does not change what the cache holds


# -- parameters ----------------------------------------------------------------------
def lm_params(**params: Any) -> dict[str, Any]:
    """The full LM parameters: :data:`LM_DEFAULTS` updated with ``params``, checked.

    Raises
    ------
    ValueError
        An unknown parameter or a value out of range (the message names it).
    """
    unknown = sorted(set(params) - set(LM_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown LM parameter(s) {unknown}; known: {', '.join(sorted(LM_DEFAULTS))}"
        )
    merged = {**LM_DEFAULTS, **params}
    for name in (
        "vocab_size",
        "d_model",
        "n_layers",
        "n_heads",
        "context_length",
        "n_documents",
        "steps",
        "batch_size",
    ):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"LM parameter {name} must be a positive integer, got {value!r}")
    if merged["vocab_size"] < 258:
        raise ValueError(f"LM parameter vocab_size must be >= 258, got {merged['vocab_size']}")
    if merged["d_model"] % merged["n_heads"]:
        raise ValueError(
            f"LM parameter n_heads ({merged['n_heads']}) must divide d_model ({merged['d_model']})"
        )
    if not 0.0 <= float(merged["validation_fraction"]) < 1.0:
        raise ValueError(
            f"LM parameter validation_fraction must be in [0, 1), got {merged['validation_fraction']!r}"
        )
    for name in ("learning_rate", "weight_decay"):
        if not float(merged[name]) >= 0.0:
            raise ValueError(f"LM parameter {name} must be >= 0, got {merged[name]!r}")
    if not isinstance(merged["device"], str):
        raise ValueError(f"LM parameter device must be a string, got {merged['device']!r}")
    return merged


def lm_cache_key(params: dict[str, Any], seed: int) -> str:
    """Hash of what determines a trained LM (its parameters and the run seed)."""
    full = lm_params(**params)
    keyed = {k: v for k, v in sorted(full.items()) if k not in _NOT_IN_KEY}
    return json_digest({"format": FORMAT, "params": keyed, "seed": seed})


def shared_lm_dir(context: FitContext, params: dict[str, Any]) -> Path:
    """Where :func:`fit_reference_lm` keeps the LM for ``params`` in this run."""
    return context.artifact_dir.parent / "_shared" / f"lm-{lm_cache_key(params, context.seed)}"


# -- training --------------------------------------------------------------------------
def fit_reference_lm(context: FitContext, **lm_params_: Any) -> Path:
    """Train (or reuse) the run's reference LM; return its directory.

    Parameters
    ----------
    context : FitContext
        The run's fit context: the LM is trained on ``context.sample`` and
        saved under ``context.artifact_dir.parent / "_shared"``.
    **lm_params_
        Overrides of :data:`LM_DEFAULTS` (network size, ``n_documents`` in the
        training sample, ``steps``, ``batch_size``, ``learning_rate``,
        ``device``...).

    Returns
    -------
    Path
        A directory that :meth:`ReferenceLM.load` reads. When it already
        holds a finished LM (same parameters and seed: resume, or a second
        scorer), it is returned as is.
    """
    params = lm_params(**lm_params_)
    target = shared_lm_dir(context, params)
    if (target / CONFIG_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _train_into(staging, context, params)
        try:
            staging.rename(target)
        except OSError:
            if not (target / CONFIG_FILE).is_file():  # not a concurrent finisher: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def fit_reference_tokenizer(context: FitContext, **lm_params_: Any) -> Path:
    """The tokenizer file of the run's reference LM, training only the tokenizer if need be.

    The tokenizer is the one :func:`fit_reference_lm` trains for the same
    parameters and seed (the same sample, split and vocabulary size), so
    token counts made with it are the LM's. When that LM is already trained,
    its ``tokenizer.json`` is returned; otherwise only the tokenizer is
    trained (seconds, no network) and kept beside it in the run's shared
    model directory.
    """
    from thresher.models.tokenizer import BPETokenizer

    params = lm_params(**lm_params_)
    lm_file = shared_lm_dir(context, params) / TOKENIZER_FILE
    if (lm_file.parent / CONFIG_FILE).is_file():
        return lm_file
    target = lm_file.parent.with_name(lm_file.parent.name.replace("lm-", "tokenizer-", 1))
    path = target / TOKENIZER_FILE
    if path.is_file():
        return path
    _, texts, train_index, _ = _training_split(context, params)
    tokenizer = BPETokenizer.train([texts[i] for i in train_index], int(params["vocab_size"]))
    target.mkdir(parents=True, exist_ok=True)
    staging = target / f".{TOKENIZER_FILE}.partial"
    tokenizer.save(staging)
    staging.replace(path)
    return path


def _training_split(
    context: FitContext, params: dict[str, Any]
) -> tuple[pa.Table, list[Any], np.ndarray, np.ndarray]:
    """The LM's corpus sample, its texts, and the positions it trains and validates on."""
    sample = context.sample(int(params["n_documents"]), [S.ID, S.TEXT], context.seed)
    texts = sample.column(S.TEXT).to_pylist() if S.TEXT in sample.column_names else []
    usable = [i for i, text in enumerate(texts) if isinstance(text, str) and text.strip()]
    if not usable:
        raise LMError("cannot train the reference LM: the corpus sample holds no text")
    order = np.random.default_rng(context.seed).permutation(usable)
    n_validation = int(len(order) * float(params["validation_fraction"]))
    if len(order) - n_validation < 1:
        n_validation = 0
    return sample, texts, np.sort(order[n_validation:]), np.sort(order[:n_validation])


def _train_into(directory: Path, context: FitContext, params: dict[str, Any]) -> None:
    import torch

    from thresher.models._transformer import CausalTransformer, TransformerConfig
    from thresher.models.tokenizer import DOCUMENT, BPETokenizer

    started = time.perf_counter()
    sample, texts, train_index, validation_index = _training_split(context, params)
    tokenizer = BPETokenizer.train([texts[i] for i in train_index], int(params["vocab_size"]))
    context_length = int(params["context_length"])
    stream = torch.tensor(
        [t for i in train_index for t in [DOCUMENT, *tokenizer.encode(texts[i])]], dtype=torch.long
    )
    if stream.numel() < 2:
        raise LMError("cannot train the reference LM: the corpus sample has fewer than two tokens")

    config = TransformerConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=int(params["d_model"]),
        n_layers=int(params["n_layers"]),
        n_heads=int(params["n_heads"]),
        context_length=context_length,
    )
    device = resolve_device(str(params["device"]))
    torch_device = configure_torch(device)
    torch.manual_seed(context.seed)
    model = CausalTransformer(config).to(torch_device)
    losses = _optimise(model, stream, params, context.seed, torch_device)

    tokenizer.save(directory / TOKENIZER_FILE)
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})

    positions = sample.select([c for c in (S.ID, S.SHARD, S.ROW) if c in sample.column_names])
    pq.write_table(positions.take(pa.array(train_index, pa.int64())), directory / TRAIN_ROWS_FILE)

    lm = ReferenceLM(ThresherBackend(model.eval(), tokenizer), device, directory)
    validation_nll = float("nan")
    if len(validation_index):
        nll, _ = lm.score_documents([texts[i] for i in validation_index])
        validation_nll = float(np.nanmean(nll))
    record = {
        "format": FORMAT,
        "model": config.to_dict(),
        "params": {k: v for k, v in params.items() if k not in _NOT_IN_KEY},
        "seed": context.seed,
        "trained_on": device,
        "n_parameters": model.n_parameters(),
        "n_train_documents": len(train_index),
        "n_validation_documents": len(validation_index),
        "n_train_tokens": int(stream.numel()),
        "final_train_loss": losses[-1] if losses else None,
        "validation_perplexity": math.exp(validation_nll)
        if math.isfinite(validation_nll)
        else None,
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    # config.json last: its presence marks a finished LM directory.
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")


def _optimise(
    model: Any, stream: Any, params: dict[str, Any], seed: int, device: Any
) -> list[float]:
    """AdamW on random windows of the token stream, linear warm-up then cosine decay."""
    import torch
    import torch.nn.functional as F

    steps = int(params["steps"])
    batch_size = int(params["batch_size"])
    window = min(model.config.context_length, stream.numel() - 1)
    peak = float(params["learning_rate"])
    warmup = max(1, min(100, steps // 10))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=peak, betas=(0.9, 0.95), weight_decay=float(params["weight_decay"])
    )
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.arange(window + 1)
    amp = autocast_dtype(device.type, bf16_supported(device))
    losses: list[float] = []
    model.train()
    for step in range(steps):
        if step < warmup:
            rate = peak * (step + 1) / warmup
        else:
            progress = (step - warmup) / max(1, steps - warmup)
            rate = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = rate
        starts = torch.randint(0, stream.numel() - window, (batch_size,), generator=generator)
        windows = stream[starts[:, None] + offsets].to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits, _ = model(windows[:, :-1])
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
