"""Load a local Hugging Face causal LM checkpoint as a reference LM (optional ``hf`` extra).

Only from a local directory (``local_files_only=True``: nothing is ever
downloaded) and only safetensors weights (``use_safetensors=True``: a
pickled ``pytorch_model.bin`` is refused). Every document starts with the
tokenizer's BOS token (or EOS where there is no BOS), as the thresher LM
starts with its document token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thresher.errors import LMError

_INSTALL = 'pip install "thresher[hf]"  (installs transformers)'


def load_hf_backend(directory: Path) -> HFBackend:
    """A backend for :class:`thresher.models.lm.ReferenceLM` from a checkpoint directory."""
    try:
        import transformers
    except ImportError:
        raise LMError(
            f"{directory} is a Hugging Face checkpoint; loading it needs transformers: {_INSTALL}"
        ) from None
    if not any(directory.glob("*.safetensors")):
        raise LMError(
            f"{directory}: no .safetensors weights; thresher loads Hugging Face checkpoints "
            "from safetensors only (pickled .bin weights are refused: loading them can run code)"
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(directory), local_files_only=True, use_safetensors=True
        )
    except (OSError, ValueError, KeyError) as error:
        raise LMError(f"{directory}: cannot load the Hugging Face checkpoint ({error})") from None
    return HFBackend(model.eval(), tokenizer)


class HFBackend:
    """Tokenise with the checkpoint's tokenizer; run its causal LM."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        start = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        if start is None:
            raise LMError("the Hugging Face tokenizer has neither a BOS nor an EOS token")
        self.start_id = int(start)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.start_id
        self.pad_id = int(pad)  # padding sits after the real tokens: causal attention ignores it
        config = model.config
        length = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        self.context_length = int(min(length or 1024, 4096))
        self.hidden_size = int(config.hidden_size)

    def encode_document(self, text: str, max_tokens: int | None) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        if max_tokens is not None:
            ids = ids[:max_tokens]
        return [self.start_id, *ids]

    def forward(self, ids: Any) -> tuple[Any, Any]:
        output = self.model(input_ids=ids, output_hidden_states=True, use_cache=False)
        return output.logits, output.hidden_states[-1]

    def to(self, device: Any) -> None:
        self.model.to(device)


__all__ = ["HFBackend", "load_hf_backend"]
