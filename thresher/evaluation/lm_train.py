"""The language-model eval's training loop: a small LM trained from scratch on a subset.

Every (selector, pruning rate, seed) of the language-model eval trains a
small decoder-only transformer (:class:`thresher.models._transformer.CausalTransformer`)
from scratch on its subset for the same number of training tokens
(:attr:`LMTrainSettings.train_tokens`), then measures its per-token loss on
held-out text (:func:`heldout_loss`). Training for a fixed number of tokens
is the protocol of the data-pruning papers: a selector cannot win by
training longer, and a smaller subset is simply repeated more often.

The repetition rule. A subset is one token stream (:class:`TokenDocs`: the
``DOCUMENT`` token before each document). The stream is cut into
non-overlapping windows of ``context_length + 1`` tokens with stride
``context_length`` (each window predicts its last ``context_length``
tokens, so every token but the first is a target exactly once per epoch).
Batches of ``batch_size`` windows are taken in turn from a seeded
permutation of all windows, a new permutation each epoch, without
replacement within an epoch. A subset with fewer tokens than
``train_tokens`` is thus seen ``train_tokens / subset tokens`` times (the
record's ``epochs``); a larger one is seen in part. A subset shorter than
one window trains on its whole stream as one shorter window.

The optimiser is that of the reference LM (:mod:`thresher.models.lm_training`):
AdamW with betas (0.9, 0.95), linear warm-up then cosine decay to
``min_lr * lr``, gradient clipping; bf16 autocast on CUDA, float32 on the
CPU. On the CPU the result is the same, to the last bit, for a seed
whatever torch's thread count.

References
----------
Radford et al., "Language Models are Unsupervised Multitask Learners"
(GPT-2), 2019. Loshchilov and Hutter, "Decoupled Weight Decay
Regularization", ICLR 2019 (AdamW). Paul, Ganguli and Dziugaite, "Deep
Learning on a Data Diet", NeurIPS 2021 (a fixed training budget per subset).
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from thresher.devices import bf16_supported, configure_torch, resolve_device

#: Steps between two reads of the loss on the host (divergence check, progress).
CHECK_EVERY = 50
#: Steps whose mean training loss is the record's ``final_loss``.
FINAL_LOSS_STEPS = 10
_IDS = "ids"
_STARTS = "starts"


# -- tokenized documents ------------------------------------------------------------------
@dataclass(frozen=True)
class TokenDocs:
    """Tokenized documents: one int32 stream, the ``DOCUMENT`` id before each document.

    Attributes
    ----------
    ids : ndarray of int32, shape (n_tokens,)
        The token stream.
    starts : ndarray of int64, shape (n_docs + 1,)
        Document ``i`` is ``ids[starts[i]:starts[i + 1]]``; ``starts[0] == 0``
        and ``starts[-1] == n_tokens``.
    """

    ids: NDArray[np.int32]
    starts: NDArray[np.int64]

    def __post_init__(self) -> None:
        ids = np.ascontiguousarray(self.ids, dtype=np.int32)
        starts = np.ascontiguousarray(self.starts, dtype=np.int64)
        if ids.ndim != 1 or starts.ndim != 1 or len(starts) < 1:
            raise ValueError("TokenDocs needs 1-d ids and at least one start offset")
        if starts[0] != 0 or starts[-1] != len(ids) or np.any(np.diff(starts) < 0):
            raise ValueError(
                "TokenDocs starts must rise from 0 to len(ids) "
                f"(got {starts[0]}..{starts[-1]} for {len(ids)} tokens)"
            )
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "starts", starts)

    @property
    def n_docs(self) -> int:
        """Number of documents."""
        return len(self.starts) - 1

    @property
    def n_tokens(self) -> int:
        """Number of tokens, ``DOCUMENT`` tokens included."""
        return len(self.ids)

    def take(self, positions: Sequence[int] | NDArray[np.integer]) -> TokenDocs:
        """The documents at ``positions``, in that order (a position may repeat)."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < -self.n_docs or positions.max() >= self.n_docs):
            raise IndexError(f"document position out of range for {self.n_docs} documents")
        first = self.starts[:-1][positions]
        lengths = self.starts[1:][positions] - first
        starts = np.zeros(len(positions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        # Token k of the result comes from first[doc] + (k - starts[doc]).
        index = np.arange(starts[-1], dtype=np.int64) + np.repeat(first - starts[:-1], lengths)
        return TokenDocs(self.ids[index], starts)

    def save(self, path: Path | str) -> None:
        """Write one ``.npz`` file, atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}-", suffix=".npz", dir=path.parent
        )
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, ids=self.ids, starts=self.starts)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path | str) -> TokenDocs:
        """Read a file written by :meth:`save` (no pickle is read)."""
        with np.load(Path(path), allow_pickle=False) as data:
            missing = {_IDS, _STARTS} - set(data.files)
            if missing:
                raise ValueError(f"{path}: not a TokenDocs file (missing {sorted(missing)})")
            return cls(data[_IDS], data[_STARTS])


def tokenize_documents(texts: Sequence[str | None], tokenizer: Any) -> TokenDocs:
    """Tokenize ``texts`` into one stream, the ``DOCUMENT`` id before each document.

    ``tokenizer`` has ``encode(text) -> list[int]`` and follows the
    ``DOCUMENT`` convention of :class:`thresher.models.tokenizer.BPETokenizer`.
    A ``None`` or empty text is a document of the ``DOCUMENT`` token alone,
    so positions in ``texts`` stay document positions.
    """
    from thresher.models.tokenizer import DOCUMENT

    pieces: list[NDArray[np.int32]] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    head = np.array([DOCUMENT], dtype=np.int32)
    for i, text in enumerate(texts):
        body = np.asarray(tokenizer.encode(text) if text else [], dtype=np.int32)
        pieces.append(head)
        pieces.append(body)
        lengths[i] = 1 + len(body)
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return TokenDocs(ids, starts)


# -- settings and result ------------------------------------------------------------------
@dataclass(frozen=True)
class LMTrainSettings:
    """Network shape, training budget and optimiser of the eval's LM.

    Attributes
    ----------
    vocab_size : int
        The tokenizer's vocabulary size.
    d_model, n_layers, n_heads, context_length : int
        Shape of the :class:`~thresher.models._transformer.CausalTransformer`.
    train_tokens : int
        Tokens every model trains on, whatever its subset's size.
    batch_size : int
        Windows (sequences) per step.
    lr : float
        Peak learning rate.
    warmup : float
        Fraction of the steps spent in linear warm-up.
    min_lr : float
        Floor of the cosine decay, as a fraction of ``lr``.
    weight_decay, grad_clip : float
        AdamW's decoupled weight decay; the gradient-norm clip (0: none).
    device : str
        ``"auto"`` (CUDA with bf16 autocast when present, else the CPU),
        ``"cpu"`` or ``"cuda:N"``.
    hf_config : str or None
        Path to a local Hugging Face ``config.json`` (GPT-2 style): train
        that architecture (``AutoModelForCausalLM.from_config``) instead of
        the built-in transformer; needs the ``hf`` extra. ``vocab_size`` and
        ``context_length`` of these settings override the file's.
    """

    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    context_length: int = 128
    train_tokens: int = 1_000_000
    batch_size: int = 16
    lr: float = 3e-3
    warmup: float = 0.05
    min_lr: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    device: str = "auto"
    hf_config: str | None = field(default=None)

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "context_length",
            "train_tokens",
            "batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LM setting {name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"LM setting n_heads ({self.n_heads}) must divide d_model ({self.d_model})"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"LM setting lr must be a positive number, got {self.lr!r}")
        for name in ("warmup", "min_lr"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(
                    f"LM setting {name} must be in [0, 1], got {getattr(self, name)!r}"
                )
        for name in ("weight_decay", "grad_clip"):
            if not float(getattr(self, name)) >= 0.0:
                raise ValueError(f"LM setting {name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def steps(self) -> int:
        """Optimiser steps: ``ceil(train_tokens / (batch_size * context_length))``."""
        return -(-self.train_tokens // (self.batch_size * self.context_length))

    def learning_rate(self, step: int) -> float:
        """Learning rate of ``step`` (0-based): linear warm-up, then cosine to ``min_lr * lr``."""
        steps = self.steps
        warmup_steps = min(steps, math.ceil(self.warmup * steps))
        if step < warmup_steps:
            return self.lr * (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return self.lr * (
            self.min_lr + (1.0 - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        )


@dataclass(frozen=True)
class TrainedLM:
    """A trained LM and the record of its training.

    Attributes
    ----------
    model : CausalTransformer
        In eval mode, on the device it trained on.
    record : dict
        ``steps`` (run; fewer than planned when it diverged), ``tokens_trained``
        (predicted tokens), ``epochs`` (``tokens_trained`` / subset tokens),
        ``subset_tokens``, ``n_windows``, ``train_seconds``,
        ``tokens_per_second``, ``final_loss`` (mean training loss of the last
        10 steps), ``diverged`` (a non-finite loss was seen; training stopped),
        ``device``, ``n_parameters``, ``lr``.
    """

    model: Any
    record: dict[str, Any]


# -- windows ------------------------------------------------------------------------------
def window_starts(n_tokens: int, context_length: int) -> tuple[NDArray[np.int64], int]:
    """Offsets of the training windows of a stream and their length in tokens.

    Non-overlapping windows of ``context_length + 1`` tokens with stride
    ``context_length``; a stream shorter than one window is one window of
    all its tokens.

    Raises
    ------
    ValueError
        Fewer than two tokens: nothing to predict.
    """
    if n_tokens < 2:
        raise ValueError(
            f"cannot train a language model on {n_tokens} token(s): the subset is empty "
            "(at least two tokens are needed)"
        )
    if n_tokens < context_length + 1:
        return np.zeros(1, dtype=np.int64), n_tokens
    n_windows = (n_tokens - 1) // context_length
    return np.arange(n_windows, dtype=np.int64) * context_length, context_length + 1


def window_order(n_windows: int, n_draws: int, seed: int) -> NDArray[np.int64]:
    """The first ``n_draws`` window indices: seeded permutations, one per epoch, end to end."""
    rng = np.random.default_rng(seed)
    epochs = -(-n_draws // n_windows)
    return np.concatenate([rng.permutation(n_windows) for _ in range(epochs)])[:n_draws]


# -- training -----------------------------------------------------------------------------
def train_lm(
    docs: TokenDocs,
    settings: LMTrainSettings,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> TrainedLM:
    """Train a fresh LM on ``docs`` for ``settings.steps`` steps (the repetition rule).

    Parameters
    ----------
    docs : TokenDocs
        The subset's documents.
    settings : LMTrainSettings
        Network, budget and optimiser.
    seed : int
        Seeds the initial weights and the window permutations.
    progress : callable, optional
        Called as ``progress(steps_done, steps)`` every few dozen steps and at the end.

    Returns
    -------
    TrainedLM
        The model in eval mode and its training record.

    Raises
    ------
    ValueError
        ``docs`` has fewer than two tokens (an empty subset).
    """
    import torch
    import torch.nn.functional as F

    starts, window = window_starts(docs.n_tokens, settings.context_length)
    device_name = resolve_device(settings.device)
    device = configure_torch(device_name)
    steps, batch_size = settings.steps, settings.batch_size

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_model(settings).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=settings.lr,
        betas=(0.9, 0.95),
        weight_decay=settings.weight_decay,
        fused=True if device.type == "cuda" else None,
    )
    # The whole stream and every batch's window offsets go to the device once; each step
    # gathers its windows with one indexing operation.
    stream = torch.from_numpy(docs.ids).to(device)
    order = window_order(len(starts), steps * batch_size, seed)
    batch_starts = torch.from_numpy(starts[order].reshape(steps, batch_size)).to(device)
    offsets = torch.arange(window, device=device)
    losses = torch.full((steps,), float("nan"), device=device)
    amp = torch.bfloat16 if bf16_supported(device) else None

    model.train()
    done, diverged = 0, False
    started = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate(step)
        windows = stream[batch_starts[step, :, None] + offsets].long()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits, _ = model(windows[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        losses[step] = loss.detach()
        done = step + 1
        if done % CHECK_EVERY == 0 or done == steps:
            if not bool(torch.isfinite(losses[max(0, done - CHECK_EVERY) : done]).all()):
                diverged = True
                break
            if progress is not None:
                progress(done, steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    model.eval()

    tokens_trained = done * batch_size * (window - 1)
    last = losses[max(0, done - FINAL_LOSS_STEPS) : done].double().mean()
    record = {
        "steps": done,
        "tokens_trained": tokens_trained,
        "epochs": tokens_trained / docs.n_tokens,
        "subset_tokens": docs.n_tokens,
        "n_windows": len(starts),
        "train_seconds": round(seconds, 3),
        "tokens_per_second": tokens_trained / seconds if seconds > 0 else None,
        "final_loss": float(last),
        "diverged": diverged,
        "device": device_name,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "lr": settings.lr,
    }
    return TrainedLM(model=model, record=record)


def _build_model(settings: LMTrainSettings) -> Any:
    """A freshly initialised network (the built-in transformer, or ``hf_config``'s).

    Its layer norms compute their scale and shift apart from the normalisation
    (:func:`_thread_independent_layer_norms`).
    """
    if settings.hf_config is not None:
        model = _hf_model(settings)
    else:
        from thresher.models._transformer import CausalTransformer, TransformerConfig

        model = CausalTransformer(
            TransformerConfig(
                vocab_size=settings.vocab_size,
                d_model=settings.d_model,
                n_layers=settings.n_layers,
                n_heads=settings.n_heads,
                context_length=settings.context_length,
            )
        )
    _thread_independent_layer_norms(model)
    return model


def _thread_independent_layer_norms(model: Any) -> None:
    """Replace each ``nn.LayerNorm`` of ``model`` with :func:`_layer_norm_class` (same parameters).

    torch's fused CPU layer-norm backward sums the scale and shift gradients
    in one buffer per thread, so they change in the last bits with the thread
    count. Normalising without the affine part and then multiplying and adding
    leaves those sums to autograd's reductions over the batch, which split the
    work by output element and so give the same bits at any thread count.
    """
    from torch import nn

    layer_norm = _layer_norm_class()
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.LayerNorm and child.elementwise_affine:
                replacement = layer_norm(
                    child.normalized_shape, eps=child.eps, bias=child.bias is not None
                )
                replacement.load_state_dict(child.state_dict())
                setattr(parent, name, replacement)


@functools.cache
def _layer_norm_class() -> Any:
    """The layer norm class (made on first use: torch is imported only when a model is built)."""
    import torch.nn.functional as F
    from torch import nn

    class LayerNorm(nn.LayerNorm):
        """``nn.LayerNorm`` whose affine part is applied apart (same parameters, same state)."""

        def forward(self, x: Any) -> Any:
            normalised = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
            if self.bias is None:
                return normalised * self.weight
            return normalised * self.weight + self.bias

    return LayerNorm


def _hf_model(settings: LMTrainSettings) -> Any:
    """A Hugging Face causal LM built from a local ``config.json``, behind the loop's interface."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        raise ValueError(
            "LM setting hf_config needs the transformers package: pip install 'thresher[hf]'"
        ) from None
    from torch import nn

    path = Path(settings.hf_config or "")
    if not path.is_file():
        raise ValueError(f"LM setting hf_config: no such file {path}")
    config = AutoConfig.from_pretrained(str(path))
    config.vocab_size = settings.vocab_size
    for name in ("n_positions", "max_position_embeddings"):
        if hasattr(config, name):
            setattr(config, name, max(int(getattr(config, name)), settings.context_length))
    network = AutoModelForCausalLM.from_config(config)

    class _HFCausalLM(nn.Module):
        """``ids -> (logits, None)``, the call the loop and :func:`heldout_loss` make."""

        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, ids: Any) -> tuple[Any, None]:
            return self.network(input_ids=ids).logits, None

    return _HFCausalLM()


# -- held-out loss ------------------------------------------------------------------------
def heldout_loss(
    model: Any, docs: TokenDocs, context_length: int, batch_size: int = 32
) -> tuple[float, int]:
    """Mean next-token NLL (nats) of ``model`` on ``docs``, and the number of tokens scored.

    The stream is cut as in training (windows of ``context_length + 1``
    tokens, stride ``context_length``), and the last, shorter window is
    scored too, so every token but the first is predicted exactly once. The
    mean is over tokens (a short window weighs by its length). A stream of
    fewer than two tokens scores nothing: ``(nan, 0)``.
    """
    import torch
    import torch.nn.functional as F

    n_tokens = docs.n_tokens
    if n_tokens < 2:
        return float("nan"), 0
    device = next(model.parameters()).device
    amp = torch.bfloat16 if bf16_supported(device) else None
    stream = torch.from_numpy(docs.ids).to(device)
    n_full = (n_tokens - 1) // context_length
    full_starts = torch.arange(n_full, device=device) * context_length
    offsets = torch.arange(context_length + 1, device=device)
    batches = [
        full_starts[i : i + batch_size, None] + offsets for i in range(0, n_full, batch_size)
    ]
    tail = n_full * context_length
    if n_tokens - tail >= 2:
        batches.append(torch.arange(tail, n_tokens, device=device)[None, :])
    total = torch.zeros((), dtype=torch.float64, device=device)
    n_scored = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for index in batches:
                windows = stream[index].long()
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    logits, _ = model(windows[:, :-1])
                nll = F.cross_entropy(
                    logits.float().flatten(0, 1), windows[:, 1:].flatten(), reduction="sum"
                )
                total += nll.double()
                n_scored += windows[:, 1:].numel()
    finally:
        model.train(was_training)
    return float(total) / n_scored, n_scored
