"""Tokens per document: the unit of an LLM training budget.

Two tokenizers, nothing downloaded:

- by default, the byte-level BPE tokenizer of the run's own reference LM
  (:func:`thresher.models.lm_training.fit_reference_tokenizer`): the tokenizer the
  ``perplexity`` scorer's LM uses for the same ``lm`` parameters, so scorers
  given equal ``lm`` settings share it. When that LM is not trained in the
  run, only its tokenizer is (seconds);
- ``tokenizer_path``: a local Hugging Face ``tokenizer.json`` (the
  ``tokenizers`` package, the ``hf`` extra), e.g. the file shipped with the
  checkpoint of the model to be trained, so that a budget counts that
  model's tokens. Special tokens (BOS/EOS) are not counted.

The output is an int64 count (0 for an empty or missing text), to be
summed by a token budget or filtered on with ``threshold``.

References
----------
Sennrich, Haddow and Birch, "Neural Machine Translation of Rare Words with
Subword Units", ACL 2016 (BPE). Radford et al., "Language Models are
Unsupervised Multitask Learners", 2019 (byte-level BPE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from thresher._params import Constraints, Mapping, Text
from thresher.errors import ConfigError, ScorerError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.scorers.base import Scorer


class TokenCountScorer(Scorer):
    """Number of tokens of each document (see module docstring).

    Parameters
    ----------
    lm : dict, optional
        Parameters of the run's reference LM whose tokenizer counts
        (:data:`thresher.models.lm_training.LM_DEFAULTS`; only ``vocab_size``,
        ``n_documents`` and ``validation_fraction`` change the tokenizer, but
        every key is accepted so that the same mapping as the ``perplexity``
        scorer's can be given).
    tokenizer_path : str, optional
        A local Hugging Face ``tokenizer.json`` to count with instead.

    Notes
    -----
    Output: int64, shape (n_rows,).
    """

    name: ClassVar[str] = "token_count"
    output_type: ClassVar[pa.DataType] = pa.int64()
    requires_fit: ClassVar[bool] = True
    transient_attributes: ClassVar[tuple[str, ...]] = ("tokenizer_",)
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "lm": [Mapping(), None],
        "tokenizer_path": [Text(), None],
    }

    def __init__(self, lm: dict[str, Any] | None = None, tokenizer_path: str | None = None) -> None:
        self.lm = lm
        self.tokenizer_path = tokenizer_path

    def _check_together(self) -> None:
        from thresher.models.lm_training import lm_params

        if self.lm is not None and self.tokenizer_path is not None:
            raise ValueError(
                f"{self.name}: give either lm (the run's reference LM tokenizer) or "
                "tokenizer_path, not both"
            )
        try:
            lm_params(**(self.lm or {}))
        except ValueError as error:
            raise ValueError(f"{self.name}: lm: {error}") from None

    # -- lifecycle -----------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        """Find (or train) the reference LM's tokenizer, or check ``tokenizer_path``."""
        from thresher.models.lm_training import fit_reference_tokenizer

        self.validate_params()
        if self.tokenizer_path is not None:
            path = Path(self.tokenizer_path).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(
                    f"{self.name}: tokenizer_path {self.tokenizer_path!r} is not a file ({path})"
                )
            _load_hf_tokenizer(path)  # fail here, on the driver, rather than in every worker
            self.kind_ = "hf"
        else:
            path = fit_reference_tokenizer(context, **(self.lm or {}))
            self.kind_ = "thresher"
        self.tokenizer_file_ = str(path)

    def setup(self) -> None:
        """Load the tokenizer once per worker."""
        if getattr(self, "tokenizer_", None) is not None:
            return
        path = getattr(self, "tokenizer_file_", None)
        kind = getattr(self, "kind_", None)
        if path is None and self.tokenizer_path is not None:
            path, kind = self.tokenizer_path, "hf"  # a local file needs no fitting
        if path is None:
            raise ScorerError(f"{self.name}: not fitted (call fit) and no tokenizer_path given")
        if kind == "hf":
            self.tokenizer_ = _load_hf_tokenizer(Path(path))
        else:
            from thresher.models.tokenizer import BPETokenizer

            self.tokenizer_ = BPETokenizer.load(path)

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        self.setup()
        texts = batch.column(batch.schema.get_field_index(S.TEXT)).to_pylist()
        counts = np.zeros(len(texts), dtype=np.int64)
        present = [i for i, text in enumerate(texts) if text]
        if not present:
            return pa.array(counts, pa.int64())
        tokenizer = self.tokenizer_
        if getattr(self, "kind_", "hf") == "thresher":
            counts[present] = [tokenizer.count(texts[i]) for i in present]
        else:
            encodings = tokenizer.encode_batch_fast(
                [texts[i] for i in present], add_special_tokens=False
            )
            counts[present] = [len(encoding.ids) for encoding in encodings]
        return pa.array(counts, pa.int64())


def _load_hf_tokenizer(path: Path) -> Any:
    """A Hugging Face tokenizer from a local ``tokenizer.json`` (ConfigError when unreadable)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(
            "token_count: tokenizer_path needs the `tokenizers` package "
            "(pip install 'thresher[hf]')"
        ) from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust loader raises plain Exceptions
        raise ConfigError(
            f"token_count: {path} is not a Hugging Face tokenizer.json ({error})"
        ) from None
