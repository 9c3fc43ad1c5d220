"""Memorization under a reference LM: how much of a document the LM recites from a prefix.

For each offset ``o`` of ``offsets`` that fits in the document (its first
``o + prefix + continuation`` tokens exist), the reference LM reads the
``prefix`` tokens starting at token ``o`` and decodes ``continuation``
tokens greedily; the offset's score is the fraction of decoded tokens equal
to the document's true next tokens (position by position). The document's
score is the mean over the offsets that fit, in ``[0, 1]``: 1 when the LM
recites every continuation, about 0 for text it never saw. The prompt at
offset 0 starts with the document-start token, as the LM saw documents in
training; later prompts are the bare ``prefix`` tokens.

A document too short for any offset (fewer than ``prefix + continuation``
tokens), empty or missing gets NaN, which selection drops as
``invalid_score``, as the perplexity scorer does for a document with no
token.

The reference LM is the perplexity scorer's: the same ``lm`` parameters
train one LM per run (:func:`thresher.models.lm_training.fit_reference_lm`,
shared by every scorer asking for them), or ``model_path`` loads a thresher
LM directory or a local Hugging Face causal LM checkpoint (the ``hf``
extra). Nothing is downloaded. Decoding is batched and deterministic: on
the CPU a document's score does not depend on the batch it is in, the
batch size nor torch's thread count.

Documents the LM memorised are usually repeated or templated ones
(boilerplate, licences, near copies), so a high score flags them: keep a
low band (``quantile_band`` with ``band: low``) or filter with
``threshold`` (``max``). The rows the LM was trained on score higher by
construction; the perplexity scorer's ``<column>_in_lm_train`` flags them.

References
----------
Marion et al., "When Less is More: Investigating Data Pruning for
Pretraining LLMs at Scale", 2023 (the memorization factor). Biderman et
al., "Emergent and Predictable Memorization in Large Language Models",
2023 (32-token prefix, 32-token greedy continuation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from thresher._params import Constraints, Device, Integral, Interval, ListOf, Mapping, Text
from thresher.errors import ScorerError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.io.localize import local_model
from thresher.scorers.base import Scorer

if TYPE_CHECKING:
    from thresher.models.lm import ReferenceLM

#: Offsets (in tokens) scored when none are given.
DEFAULT_OFFSETS = (0, 64, 128)


class MemorizationScorer(Scorer):
    """Fraction of greedy continuations equal to the document (see module docstring).

    Parameters
    ----------
    lm : dict, optional
        Parameters of the reference LM to train, as for the ``perplexity``
        scorer (keys of :data:`thresher.models.lm_training.LM_DEFAULTS`);
        scorers given the same ``lm`` share one LM.
    model_path : str, optional
        Use this LM instead of training one: a thresher LM directory or a
        local Hugging Face checkpoint directory (safetensors weights).
    prefix : int
        Tokens the LM reads at each offset.
    continuation : int
        Tokens it decodes greedily and that are compared with the document.
        ``prefix + continuation`` must fit the LM's context.
    offsets : list of int, optional
        Token offsets of the prompts (default ``[0, 64, 128]``); only those
        with ``offset + prefix + continuation`` tokens in the document count.
    batch_size : int
        Prompts decoded together.
    device : str
        ``"auto"`` (the task's GPU in Spark, else CUDA if present, else CPU),
        ``"cpu"`` or ``"cuda:N"``.

    Notes
    -----
    Output: float64 in ``[0, 1]``, shape (n_rows,); NaN for a document too
    short for any offset.
    """

    name: ClassVar[str] = "memorization"
    requires_fit: ClassVar[bool] = True
    transient_attributes: ClassVar[tuple[str, ...]] = ("lm_",)
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "lm": [Mapping(), None],
        "model_path": [Text(), None],
        "prefix": [Interval(Integral, 1, None)],
        "continuation": [Interval(Integral, 1, None)],
        "offsets": [
            ListOf(Interval(Integral, 0, None), what="token offsets (integers >= 0)"),
            None,
        ],
        "batch_size": [Interval(Integral, 1, None)],
        "device": [Device()],
    }

    def __init__(
        self,
        lm: dict[str, Any] | None = None,
        model_path: str | None = None,
        prefix: int = 32,
        continuation: int = 32,
        offsets: list[int] | None = None,
        batch_size: int = 64,
        device: str = "auto",
    ) -> None:
        self.lm = lm
        self.model_path = model_path
        self.prefix = prefix
        self.continuation = continuation
        self.offsets = offsets
        self.batch_size = batch_size
        self.device = device

    @property
    def offsets_used(self) -> tuple[int, ...]:
        """The offsets scored: ``offsets``, or :data:`DEFAULT_OFFSETS`."""
        return DEFAULT_OFFSETS if self.offsets is None else tuple(self.offsets)

    def _check_together(self) -> None:
        from thresher.models.lm_training import lm_params

        if self.lm is not None and self.model_path is not None:
            raise ValueError(
                f"{self.name}: give either lm (train a reference LM) or model_path, not both"
            )
        if len(set(self.offsets_used)) != len(self.offsets_used):
            raise ValueError(f"{self.name}: offsets must differ, got {list(self.offsets_used)}")
        try:
            params = lm_params(**(self.lm or {}))
        except ValueError as error:
            raise ValueError(f"{self.name}: lm: {error}") from None
        if self.model_path is None:
            _check_context(self.prefix, self.continuation, int(params["context_length"]))

    # -- lifecycle -----------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        """Train (or reuse) the run's reference LM, or check ``model_path``; remember its directory."""
        from thresher.models.lm import lm_kind
        from thresher.models.lm_training import fit_reference_lm

        self.validate_params()
        if self.model_path is not None:
            lm_kind(local_model(self.model_path, f"{self.name}: model_path"))
            self.lm_path_ = self.model_path  # a URI stays one: each worker copies it
        else:
            self.lm_path_ = str(fit_reference_lm(context, **(self.lm or {})))
        record = {"lm_path": self.lm_path_, "offsets": list(self.offsets_used)}
        (context.artifact_dir / "memorization.json").write_text(json.dumps(record, indent=2))

    def setup(self) -> None:
        """Load the LM once per worker; refuse a prompt and continuation longer than its context."""
        if getattr(self, "lm_", None) is not None:
            return
        from thresher.models.lm import ReferenceLM

        path = getattr(self, "lm_path_", None) or self.model_path
        if path is None:
            raise ScorerError(f"{self.name}: not fitted (call fit) and no model_path given")
        lm = ReferenceLM.load(local_model(path, f"{self.name}: model"), device=self.device)
        try:
            _check_context(self.prefix, self.continuation, lm.context_length)
        except ValueError as error:
            raise ScorerError(str(error)) from None
        self.lm_ = lm

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        self.setup()
        texts = batch.column(batch.schema.get_field_index(S.TEXT)).to_pylist()
        values = memorization_scores(
            self.lm_,
            texts,
            prefix=self.prefix,
            continuation=self.continuation,
            offsets=self.offsets_used,
            batch_size=self.batch_size,
        )
        return pa.array(values, pa.float64(), from_pandas=False)


def memorization_scores(
    lm: ReferenceLM,
    texts: Sequence[str | None],
    *,
    prefix: int = 32,
    continuation: int = 32,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    batch_size: int = 64,
) -> np.ndarray:
    """Memorization score of each document under ``lm`` (see module docstring).

    Returns
    -------
    ndarray of float64, shape (n,)
        Mean over the offsets that fit of the fraction of greedily decoded
        tokens equal to the document's; NaN where no offset fits.
    """
    needed = max(offsets) + prefix + continuation
    prompts: list[list[int]] = []
    truths: list[list[int]] = []
    owners: list[int] = []
    for document, text in enumerate(texts):
        sequence = lm.backend.encode_document(text or "", needed)
        start, tokens = sequence[:1], sequence[1:]  # the document-start token, then the text's
        for offset in offsets:
            if offset + prefix + continuation > len(tokens):
                continue
            prompt = tokens[offset : offset + prefix]
            prompts.append(start + prompt if offset == 0 else prompt)
            truths.append(tokens[offset + prefix : offset + prefix + continuation])
            owners.append(document)
    matched = np.zeros(len(texts), dtype=np.float64)
    counted = np.zeros(len(texts), dtype=np.int64)
    decoded = lm.greedy_continuations(prompts, continuation, batch_size=batch_size)
    for owner, truth, tokens in zip(owners, truths, decoded, strict=True):
        matched[owner] += np.mean(np.asarray(tokens) == np.asarray(truth))
        counted[owner] += 1
    with np.errstate(invalid="ignore"):
        return matched / counted


def _check_context(prefix: int, continuation: int, context_length: int) -> None:
    # The longest forward pass reads the document-start token, the prefix and all but
    # the last decoded token.
    if prefix + continuation > context_length:
        raise ValueError(
            f"memorization: prefix + continuation ({prefix} + {continuation}) must fit the "
            f"reference LM's context ({context_length} tokens)"
        )


__all__ = ["DEFAULT_OFFSETS", "MemorizationScorer", "memorization_scores"]
