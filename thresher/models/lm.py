"""The reference language model: trained here on a corpus sample, or loaded from a path.

Perplexity-based selection scores every document by the perplexity a small
reference LM gives it. :func:`fit_reference_lm` trains that LM (a byte-level
BPE tokenizer, :mod:`thresher.models.tokenizer`, and a GPT-style causal
transformer, :mod:`thresher.models._transformer`) on a random sample of the
ingested corpus, once per run, and saves it under a cache directory shared
by every scorer of the run, keyed by the LM parameters and the seed: several
scorers asking for the same LM train it once.

Which rows were trained on. "Perplexed by Perplexity" trains the reference
model on a split disjoint from the data it prunes. Here the LM is trained on
a random sample (``n_documents``, 10% of the 20k sample corpus by default)
and the sample's positions ``(thresher_shard, thresher_row)`` are saved in
``train_rows.parquet``; scorers report, per document, whether it was in the
LM's training sample, so a run can exclude those rows or select among the
others only. A held-out part of the sample (``validation_fraction``) is
never trained on and gives the validation perplexity recorded in
``config.json``.

Files of a saved LM (``config.json``, ``tokenizer.json``,
``model.safetensors``, ``train_rows.parquet``) are plain data: loading never
unpickles anything. A local Hugging Face causal LM checkpoint (safetensors
weights) can be loaded instead with the optional ``hf`` extra; nothing is
ever downloaded.

References
----------
Ankner et al., "Perplexed by Perplexity: Perplexity-Based Data Pruning With
Small Reference Models", 2024. Marion et al., "When Less is More:
Investigating Data Pruning for Pretraining LLMs at Scale", 2023 (perplexity
and token-level EL2N under a reference LM).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.devices import configure_torch, resolve_device
from thresher.errors import ThresherError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.keys import json_digest, row_key

FORMAT = "thresher-lm-1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TRAIN_ROWS_FILE = "train_rows.parquet"

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
_BUCKET = 32  # sequences are padded to a multiple of this (see _batches)


class LMError(ThresherError):
    """A reference LM cannot be trained or loaded (the message says which file and why)."""


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

    lm = ReferenceLM(_ThresherBackend(model.eval(), tokenizer), device, directory)
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
    amp = _autocast_dtype(device.type, _bf16_supported(device))
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


# -- inference ----------------------------------------------------------------------------
def _autocast_dtype(device_type: str, bf16_supported: bool) -> Any:
    """Half precision for inference on CUDA (bf16 where supported, else fp16); none on CPU."""
    import torch

    if device_type != "cuda":
        return None
    return torch.bfloat16 if bf16_supported else torch.float16


def _bf16_supported(device: Any) -> bool:
    import torch

    return device.type == "cuda" and bool(torch.cuda.is_bf16_supported())


class _Backend(Protocol):
    """What :class:`ReferenceLM` needs from a model: tokenise, run, and its shape."""

    context_length: int
    hidden_size: int
    pad_id: int

    def encode_document(self, text: str, max_tokens: int | None) -> list[int]: ...

    def forward(self, ids: Any) -> tuple[Any, Any]: ...

    def to(self, device: Any) -> None: ...


class _ThresherBackend:
    """A thresher-trained LM: BPE tokenizer + :class:`CausalTransformer`."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        from thresher.models.tokenizer import PAD

        self.model = model
        self.tokenizer = tokenizer
        self.context_length = int(model.config.context_length)
        self.hidden_size = int(model.config.d_model)
        self.pad_id = PAD

    def encode_document(self, text: str, max_tokens: int | None) -> list[int]:
        result: list[int] = self.tokenizer.encode_document(text, max_tokens)
        return result

    def forward(self, ids: Any) -> tuple[Any, Any]:
        logits, hidden = self.model(ids)
        return logits, hidden

    def to(self, device: Any) -> None:
        self.model.to(device)


@dataclass
class _Piece:
    document: int
    inputs: list[int]
    targets: list[int]


def lm_kind(directory: Path) -> tuple[str, dict[str, Any]]:
    """``("thresher" | "hf", config)`` of an LM directory, checked without loading weights.

    Raises
    ------
    LMError
        No ``config.json``, invalid JSON, an unknown kind, or no safetensors weights.
    """
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise LMError(f"{directory}: not a language model directory (no {CONFIG_FILE})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LMError(f"{config_path}: not valid JSON ({error})") from None
    if isinstance(config, dict) and config.get("format") == FORMAT:
        kind, weights = "thresher", [directory / WEIGHTS_FILE]
    elif isinstance(config, dict) and "model_type" in config:
        kind, weights = "hf", list(directory.glob("*.safetensors"))
    else:
        raise LMError(
            f"{config_path}: neither a thresher LM (format {FORMAT!r}) "
            "nor a Hugging Face checkpoint (model_type)"
        )
    if not any(w.is_file() for w in weights):
        raise LMError(
            f"{directory}: no safetensors weights; thresher loads weights from safetensors only "
            "(pickled checkpoints such as .pt/.bin files are refused: loading them can run code)"
        )
    return kind, config


class ReferenceLM:
    """A loaded reference LM: per-document NLL, token EL2N and embeddings.

    Use :meth:`load`; the constructor is internal. Inference runs in
    ``torch.inference_mode``; on CUDA under bf16 (or fp16) autocast. On the
    CPU, torch's threads are capped to the worker's share of the cores.

    Batching. A document is cut to ``max_tokens`` tokens and split into
    windows of the model's context. Windows are padded on the right to a
    multiple of 32 tokens and batched only with windows of the same padded
    length, at most ``batch_tokens`` tokens per batch (longest first). As
    attention is causal and every window always has the same padded length,
    a document's scores do not depend on the other documents of the call:
    on the CPU they are bitwise the same alone or in any batch.
    """

    def __init__(self, backend: _Backend, device: str, path: Path | None) -> None:
        import torch

        self.backend = backend
        self.device = torch.device(device)
        self.path = path
        self._amp = _autocast_dtype(self.device.type, _bf16_supported(self.device))

    # -- loading ------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> ReferenceLM:
        """Load a thresher LM directory or a local Hugging Face causal LM checkpoint.

        ``device="auto"`` picks the GPU Spark assigned to the task, else the
        first CUDA device, else the CPU (:func:`thresher.devices.resolve_device`).
        Weights are read from safetensors only; a checkpoint that is anything
        else (a pickle, say) is refused with :class:`LMError`.
        """
        directory = Path(path)
        kind, config = lm_kind(directory)
        resolved = resolve_device(device)
        torch_device = configure_torch(resolved)
        if kind == "thresher":
            backend: _Backend = _load_thresher_backend(directory, config)
        else:
            from thresher.models._hf import load_hf_backend

            backend = load_hf_backend(directory)
        backend.to(torch_device)
        return cls(backend, resolved, directory)

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    @property
    def hidden_size(self) -> int:
        return self.backend.hidden_size

    def training_rows(self) -> pa.Table:
        """``id, thresher_shard, thresher_row`` of the documents the LM was trained on.

        Empty for a checkpoint loaded from elsewhere (its training data is unknown).
        """
        path = None if self.path is None else self.path / TRAIN_ROWS_FILE
        if path is None or not path.is_file():
            return pa.table(
                {
                    S.ID: pa.array([], pa.string()),
                    S.SHARD: pa.array([], pa.int32()),
                    S.ROW: pa.array([], pa.int64()),
                }
            )
        return pq.read_table(path)

    # -- scoring ------------------------------------------------------------------
    def score_documents(
        self,
        texts: Sequence[str | None],
        *,
        max_tokens: int | None = None,
        batch_tokens: int = 8192,
        token_el2n: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean token NLL (nats) and mean token EL2N of each document.

        The document's first token is predicted from the document-start
        token, so every token of the (cut) document counts. Token EL2N is
        ``||softmax(logits) - onehot(next token)||_2``, in ``[0, sqrt(2)]``.

        Parameters
        ----------
        texts : sequence of str or None
            Documents; ``None`` or an empty text gives NaN (nothing to predict).
        max_tokens : int, optional
            Score only the first ``max_tokens`` tokens (default: all).
        batch_tokens : int
            Upper bound on padded tokens per forward pass.
        token_el2n : bool
            Compute token EL2N (``False`` saves a softmax; EL2N is then NaN).

        Returns
        -------
        mean_nll, token_el2n : ndarray of float64, shape (n,)
            ``exp(mean_nll)`` is the perplexity.
        """
        n = len(texts)
        nll = np.zeros(n, dtype=np.float64)
        el2n = np.zeros(n, dtype=np.float64)
        count = np.zeros(n, dtype=np.int64)
        pieces = self._score_pieces(texts, max_tokens)
        for batch, ids in self._batches(pieces, batch_tokens):
            logits, _ = self._forward(ids)
            batch_nll, batch_el2n = _token_losses(logits, batch, token_el2n)
            for row, piece in enumerate(batch):
                k = len(piece.targets)
                nll[piece.document] += float(np.sum(batch_nll[row, :k], dtype=np.float64))
                if batch_el2n is not None:
                    el2n[piece.document] += float(np.sum(batch_el2n[row, :k], dtype=np.float64))
                count[piece.document] += k
        if not token_el2n:
            el2n[:] = np.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            return nll / count, el2n / count

    def embed(
        self,
        texts: Sequence[str | None],
        *,
        max_tokens: int | None = None,
        batch_tokens: int = 8192,
    ) -> np.ndarray:
        """Mean-pooled final hidden state of each document, shape ``(n, hidden_size)``, float32.

        The mean runs over every position of the (cut) document, the
        document-start token included, so an empty or ``None`` text gets
        the document-start token's state.
        """
        import torch

        n = len(texts)
        total = np.zeros((n, self.hidden_size), dtype=np.float64)
        count = np.zeros(n, dtype=np.int64)
        pieces: list[_Piece] = []
        for document, text in enumerate(texts):
            sequence = self.backend.encode_document(text or "", max_tokens)
            for start in range(0, len(sequence), self.context_length):
                pieces.append(_Piece(document, sequence[start : start + self.context_length], []))
        for batch, ids in self._batches(pieces, batch_tokens):
            _, hidden = self._forward(ids)
            hidden = hidden.float().to("cpu", torch.float64).numpy()
            for row, piece in enumerate(batch):
                k = len(piece.inputs)
                total[piece.document] += hidden[row, :k].sum(axis=0)
                count[piece.document] += k
        return (total / np.maximum(count, 1)[:, None]).astype(np.float32)

    # -- internals -------------------------------------------------------------------
    def _score_pieces(self, texts: Sequence[str | None], max_tokens: int | None) -> list[_Piece]:
        """Windows of at most ``context_length`` inputs; each target is predicted once."""
        window = self.context_length
        pieces: list[_Piece] = []
        for document, text in enumerate(texts):
            sequence = self.backend.encode_document(text or "", max_tokens)
            if len(sequence) < 2:
                continue  # nothing to predict: NaN
            for start in range(0, len(sequence) - 1, window):
                chunk = sequence[start : start + window + 1]
                pieces.append(_Piece(document, chunk[:-1], chunk[1:]))
        return pieces

    def _batches(
        self, pieces: list[_Piece], batch_tokens: int
    ) -> Iterator[tuple[list[_Piece], Any]]:
        """Group pieces by padded length (a multiple of 32), longest first, within the token budget."""
        import torch

        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
        by_length: dict[int, list[_Piece]] = {}
        for piece in pieces:
            padded = min(self.context_length, -(-len(piece.inputs) // _BUCKET) * _BUCKET)
            by_length.setdefault(padded, []).append(piece)
        for padded in sorted(by_length, reverse=True):
            group = by_length[padded]
            rows = max(1, batch_tokens // padded)
            for start in range(0, len(group), rows):
                batch = group[start : start + rows]
                ids = torch.full((len(batch), padded), self.backend.pad_id, dtype=torch.long)
                for row, piece in enumerate(batch):
                    ids[row, : len(piece.inputs)] = torch.tensor(piece.inputs, dtype=torch.long)
                yield batch, ids

    def _forward(self, ids: Any) -> tuple[Any, Any]:
        import torch

        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self._amp, enabled=self._amp is not None),
        ):
            return self.backend.forward(ids.to(self.device, non_blocking=True))


def _token_losses(
    logits: Any, batch: list[_Piece], with_el2n: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-token NLL and EL2N (float32 arrays ``(rows, length)``) of a batch's targets.

    NLL is ``logsumexp(logits) - logit(target)``; EL2N uses
    ``||p - e_y||^2 = ||p||^2 - 2 p_y + 1``, so the vocabulary-sized tensors
    are read a few times and written once (the softmax), not copied per step.
    """
    import torch

    with torch.inference_mode():
        rows, length = logits.shape[0], logits.shape[1]
        targets = torch.zeros((rows, length), dtype=torch.long)
        for row, piece in enumerate(batch):
            targets[row, : len(piece.targets)] = torch.tensor(piece.targets, dtype=torch.long)
        targets = targets.to(logits.device)
        logits = logits.float()
        nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, targets[..., None])[..., 0]
        if not with_el2n:
            return nll.to("cpu").numpy(), None
        squared_norm = torch.linalg.vector_norm(torch.softmax(logits, dim=-1), dim=-1).square()
        el2n = (squared_norm - 2.0 * torch.exp(-nll) + 1.0).clamp_min(0.0).sqrt()
        return nll.to("cpu").numpy(), el2n.to("cpu").numpy()


def _load_thresher_backend(directory: Path, config: dict[str, Any]) -> _ThresherBackend:
    from thresher.models._transformer import CausalTransformer, TransformerConfig
    from thresher.models.tokenizer import BPETokenizer

    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise LMError(
            f"{directory}: no {WEIGHTS_FILE}; thresher loads weights from safetensors only "
            "(pickled checkpoints such as .pt/.bin files are refused: loading them can run code)"
        )
    try:
        model_config = TransformerConfig(**config["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise LMError(f"{directory / CONFIG_FILE}: invalid 'model' section ({error})") from None
    tokenizer = BPETokenizer.load(directory / TOKENIZER_FILE)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise LMError(
            f"{directory}: tokenizer has {tokenizer.vocab_size} tokens, model expects "
            f"{model_config.vocab_size}"
        )
    state = read_safetensors(weights)
    model = CausalTransformer(model_config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise LMError(
            f"{weights}: weights do not fit the model in {CONFIG_FILE}: {error}"
        ) from None
    return _ThresherBackend(model.eval(), tokenizer)


def read_safetensors(path: Path) -> dict[str, Any]:
    """Tensors of a safetensors file; anything else (e.g. a pickle) raises :class:`LMError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu"))
    except (SafetensorError, OSError, ValueError) as error:
        raise LMError(
            f"{path}: not a safetensors file ({error}); thresher never unpickles checkpoints"
        ) from None


def in_training_sample(
    training_rows: pa.Table, shards: Any, rows: Any, ids: Sequence[str | None] | None = None
) -> np.ndarray:
    """Boolean mask: which documents are among ``training_rows``.

    A document matches by position ``(thresher_shard, thresher_row)`` and,
    when ``ids`` are given, by id too, so that an LM trained on another
    run's corpus (``model_path``) does not flag unrelated documents that
    happen to sit at the same positions.
    """
    shards_np = np.asarray(shards, dtype=np.int64)
    rows_np = np.asarray(rows, dtype=np.int64)
    if training_rows.num_rows == 0 or S.SHARD not in training_rows.column_names:
        return np.zeros(len(shards_np), dtype=bool)
    trained_keys = row_key(
        training_rows.column(S.SHARD).to_numpy(), training_rows.column(S.ROW).to_numpy()
    )
    keys = row_key(shards_np, rows_np)
    mask = np.isin(keys, trained_keys)
    if ids is not None and S.ID in training_rows.column_names and mask.any():
        trained_ids = dict(
            zip(trained_keys.tolist(), training_rows.column(S.ID).to_pylist(), strict=True)
        )
        for index in np.flatnonzero(mask).tolist():
            mask[index] = trained_ids.get(int(keys[index])) == ids[index]
    return mask
