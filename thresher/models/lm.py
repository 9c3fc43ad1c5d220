"""The reference language model: per-document NLL, token EL2N and embeddings.

Perplexity-based selection scores every document by the perplexity a small
reference LM gives it. :class:`ReferenceLM` loads one, either trained here
(:mod:`thresher.models.lm_training`: a byte-level BPE tokenizer,
:mod:`thresher.models.tokenizer`, and a GPT-style causal transformer,
:mod:`thresher.models._transformer`, trained on a random sample of the
ingested corpus) or a local Hugging Face causal LM checkpoint with the
optional ``hf`` extra (:mod:`thresher.models._hf`); nothing is ever
downloaded.

Which rows were trained on. The positions ``(thresher_shard, thresher_row)``
of the LM's training sample are saved in ``train_rows.parquet``;
:func:`in_training_sample` tells scorers, per document, whether it was in
that sample, so a run can exclude those rows or select among the others only.

Files of a saved LM (``config.json``, ``tokenizer.json``,
``model.safetensors``, ``train_rows.parquet``) are plain data: loading never
unpickles anything.

References
----------
Ankner et al., "Perplexed by Perplexity: Perplexity-Based Data Pruning With
Small Reference Models", 2024. Marion et al., "When Less is More:
Investigating Data Pruning for Pretraining LLMs at Scale", 2023 (perplexity
and token-level EL2N under a reference LM).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.devices import autocast_dtype, bf16_supported, configure_torch, resolve_device
from thresher.errors import LMError
from thresher.io import schema as S
from thresher.keys import row_key
from thresher.models._safe import load_safetensors

FORMAT = "thresher-lm-1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TRAIN_ROWS_FILE = "train_rows.parquet"
_BUCKET = 32  # sequences are padded to a multiple of this (see _batches)


class _Backend(Protocol):
    """What :class:`ReferenceLM` needs from a model: tokenise, run, and its shape."""

    context_length: int
    hidden_size: int
    pad_id: int

    def encode_document(self, text: str, max_tokens: int | None) -> list[int]: ...

    def forward(self, ids: Any) -> tuple[Any, Any]: ...

    def to(self, device: Any) -> None: ...


class ThresherBackend:
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

    def greedy(self, ids: Any, n_tokens: int) -> Any:
        """Greedy continuations with the transformer's key-value cache."""
        return self.model.greedy(ids, n_tokens)

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
        self._amp = autocast_dtype(self.device.type, bf16_supported(self.device))

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

    def greedy_continuations(
        self, prompts: Sequence[Sequence[int]], n_tokens: int, *, batch_size: int = 64
    ) -> list[list[int]]:
        """The ``n_tokens`` tokens greedy decoding appends to each prompt (token ids in, ids out).

        Prompts of the same length are decoded together, at most
        ``batch_size`` at a time (no padding): thresher's own transformer
        runs the prompt once and each decoded token alone against a
        key-value cache; another model recomputes the whole sequence at each
        step. Each step takes the most likely next token of each row
        (``argmax``, the lowest id on a tie). On the CPU a prompt's continuation does not
        depend on the other prompts of the call nor on ``batch_size``.

        Raises
        ------
        ValueError
            A prompt is empty, or a prompt plus its continuation is longer
            than the model's context.
        """
        import torch

        if batch_size < 1 or n_tokens < 0:
            raise ValueError(
                f"batch_size must be >= 1 and n_tokens >= 0, got {batch_size}, {n_tokens}"
            )
        by_length: dict[int, list[int]] = {}
        for index, prompt in enumerate(prompts):
            if not prompt or len(prompt) + n_tokens - 1 > self.context_length:
                raise ValueError(
                    f"a prompt of {len(prompt)} tokens plus {n_tokens} decoded tokens does not "
                    f"fit the model's context ({self.context_length})"
                )
            by_length.setdefault(len(prompt), []).append(index)
        decoded: list[list[int]] = [[] for _ in prompts]
        for length in sorted(by_length):
            group = by_length[length]
            for start in range(0, len(group), batch_size):
                rows = group[start : start + batch_size]
                ids = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long)
                ids = ids.to(self.device)
                greedy = getattr(self.backend, "greedy", None)
                if greedy is not None and n_tokens:  # a key-value cache: each token once
                    with (
                        torch.inference_mode(),
                        torch.autocast(
                            self.device.type, dtype=self._amp, enabled=self._amp is not None
                        ),
                    ):
                        ids = torch.cat([ids, greedy(ids, n_tokens)], dim=1)
                else:
                    for _ in range(n_tokens):
                        logits, _ = self._forward(ids)
                        following = logits[:, -1, :].float().argmax(dim=-1)
                        ids = torch.cat([ids, following[:, None].to(ids.dtype)], dim=1)
                for row, index in enumerate(ids[:, length:].to("cpu").tolist()):
                    decoded[rows[row]] = index
        return decoded

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


def _load_thresher_backend(directory: Path, config: dict[str, Any]) -> ThresherBackend:
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
    state = load_safetensors(weights, framework="pt", error=LMError)
    model = CausalTransformer(model_config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise LMError(
            f"{weights}: weights do not fit the model in {CONFIG_FILE}: {error}"
        ) from None
    return ThresherBackend(model.eval(), tokenizer)


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
