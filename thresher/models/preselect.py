"""PreSelect: label documents by how well models' losses on them predict the models' ranking.

A document is worth training on, PreSelect argues, when the models that
compress it best are the models that score best on downstream benchmarks:
its loss "predicts" ability. Given several local LMs and their benchmark
scores (numbers the user supplies), each document of a corpus sample gets

- each model's normalised loss, in bits per byte (:func:`bits_per_byte`):
  the document's summed token NLL over its UTF-8 bytes, so models with
  different tokenizers are comparable (the paper uses bits per character);
  every model reads the same text, the document's first ``max_chars``
  characters;
- its predictive strength (:func:`predictive_strength`), the paper's
  pairwise concordance: of the pairs of models with different benchmark
  scores, the fraction in which the better-scoring model has the strictly
  lower loss. 1 when the order by loss is the order by score, 0 when it is
  reversed. Pairs of equal benchmark score carry no order and are left out;
  equal losses count as discordant, as in the paper's implementation.

The ``n_positive`` documents of highest strength are positives, the
``n_negative`` of lowest strength negatives (:func:`label_documents`; ties
broken by a seeded random order, as strength takes few distinct values
with few models), and a fastText classifier trained on them scores the
whole corpus (:mod:`thresher.scorers.fasttext_quality`, its ``preselect``
training source). Models are loaded as the perplexity scorer loads them
(:class:`thresher.models.lm.ReferenceLM`: a thresher LM directory or a
local Hugging Face checkpoint, safetensors only); nothing is downloaded.

References
----------
Shum et al., "Predictive Data Selection: The Data That Predicts Is the Data
That Teaches", 2025. Huang et al., "Compression Represents Intelligence
Linearly", COLM 2024.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher._params import (
    Constraints,
    Device,
    Integral,
    Interval,
    ListOf,
    Mapping,
    Real,
    Text,
    check_entry,
)
from thresher.errors import InputError
from thresher.io import schema as S
from thresher.io.localize import local_model

if TYPE_CHECKING:
    from thresher.models.lm import ReferenceLM

#: The fewest models PreSelect ranks (two give a strength of 0 or 1 only).
MIN_MODELS = 3

#: Settings of a ``preselect`` training source other than ``models``, and their defaults.
PRESELECT_DEFAULTS: dict[str, Any] = {
    "sample": 2000,
    "n_positive": 500,
    "n_negative": 500,
    "max_chars": 4000,
    "batch_tokens": 8192,
    "device": "auto",
}

POSITIVE = "positive"
NEGATIVE = "negative"
STRENGTH = "agreement"
LOSS_PREFIX = "bits_per_byte_"

_COUNT = Interval(Integral, 1, None)
_CONSTRAINTS: dict[str, Constraints] = {
    "models": [ListOf(Mapping(), what="mappings of path and score")],
    "sample": [_COUNT],
    "n_positive": [_COUNT],
    "n_negative": [_COUNT],
    "max_chars": [_COUNT, None],
    "batch_tokens": [_COUNT],
    "device": [Device()],
}
_MODEL_CONSTRAINTS: dict[str, Constraints] = {
    "path": [Text()],
    "score": [Interval(Real, None, None)],
}


def preselect_params(value: Any, where: str) -> dict[str, Any]:
    """The full settings of a ``preselect`` source (:data:`PRESELECT_DEFAULTS` filled in), checked.

    Refuses (ValueError starting with ``where``) an unknown key or bad
    value, no ``models``, fewer than :data:`MIN_MODELS` models, a model
    without ``path`` or ``score``, a score that is not finite, one path
    given twice, every score equal (nothing to rank by), and more positives
    plus negatives than documents sampled.
    """
    check_entry(where, value, _CONSTRAINTS)
    if "models" not in value:
        raise ValueError(
            f"{where}: models is required: a list of {{path: ..., score: ...}}, one per LM, "
            "with its benchmark score"
        )
    params = {**PRESELECT_DEFAULTS, **value}
    models = params["models"]
    if len(models) < MIN_MODELS:
        raise ValueError(
            f"{where}: models: PreSelect ranks at least {MIN_MODELS} models, got {len(models)}"
        )
    for k, model in enumerate(models):
        entry = f"{where}: models[{k}]"
        check_entry(entry, model, _MODEL_CONSTRAINTS)
        missing = [key for key in _MODEL_CONSTRAINTS if key not in model]
        if missing:
            raise ValueError(
                f"{entry}: needs {' and '.join(missing)} (the LM's directory and its benchmark "
                "score)"
            )
        if not math.isfinite(float(model["score"])):
            raise ValueError(f"{entry}: score must be a finite number, got {model['score']!r}")
    paths = [str(m["path"]) for m in models]
    if len(set(paths)) != len(paths):
        raise ValueError(f"{where}: models: a path is given twice ({paths})")
    if len({float(m["score"]) for m in models}) == 1:
        raise ValueError(
            f"{where}: models: every model has the benchmark score {models[0]['score']!r}; "
            "PreSelect needs scores that rank the models"
        )
    wanted = int(params["n_positive"]) + int(params["n_negative"])
    if wanted > int(params["sample"]):
        raise ValueError(
            f"{where}: n_positive + n_negative ({wanted}) is more than the documents sampled "
            f"(sample: {params['sample']})"
        )
    return params


def predictive_strength(losses: Any, scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per document, the fraction of model pairs whose order by loss is their order by score.

    Parameters
    ----------
    losses : array-like, shape (n_documents, n_models)
        Each model's normalised loss on each document (lower is better).
    scores : array-like, shape (n_models,)
        Each model's benchmark score (higher is better).

    Returns
    -------
    ndarray of float64, shape (n_documents,)
        In ``[0, 1]``: over the pairs of models with different scores, the
        fraction where the better-scoring model has the strictly lower loss
        (1: the losses rank the models as the benchmark does; 0: reversed).
        NaN for a document with a NaN loss.
    """
    table = np.asarray(losses, dtype=np.float64)
    ranks = np.asarray(scores, dtype=np.float64)
    if table.ndim != 2 or ranks.ndim != 1 or table.shape[1] != len(ranks):
        raise ValueError(
            f"losses must be (n_documents, n_models) and scores (n_models,), got "
            f"{table.shape} and {ranks.shape}"
        )
    first, second = np.triu_indices(len(ranks), k=1)
    score_gap = ranks[first] - ranks[second]
    ordered = score_gap != 0
    if not ordered.any():
        raise ValueError("every model has the same score: no pair of models to order")
    first, second, score_gap = first[ordered], second[ordered], score_gap[ordered]
    loss_gap = table[:, first] - table[:, second]
    concordant = np.sign(score_gap)[None, :] * np.sign(loss_gap) < 0
    strength = concordant.sum(axis=1) / len(score_gap)
    strength[np.isnan(table).any(axis=1)] = np.nan
    return strength


def label_documents(
    strength: np.ndarray, n_positive: int, n_negative: int, seed: int
) -> list[str | None]:
    """``"positive"`` for the ``n_positive`` strongest documents, ``"negative"`` for the weakest.

    Documents of equal strength are taken in a random order drawn from
    ``seed``; a NaN strength is never labelled. Raises InputError when
    fewer documents than ``n_positive + n_negative`` have a strength.
    """
    ranked = np.flatnonzero(~np.isnan(strength))
    if len(ranked) < n_positive + n_negative:
        raise InputError(
            f"preselect: {len(ranked)} sampled documents have a loss under every model, fewer "
            f"than n_positive + n_negative ({n_positive + n_negative}); sample more documents "
            "or label fewer"
        )
    shuffled = np.random.default_rng(seed).permutation(ranked)
    order = shuffled[np.argsort(-strength[shuffled], kind="stable")]
    labels: list[str | None] = [None] * len(strength)
    for index in order[:n_positive].tolist():
        labels[index] = POSITIVE
    for index in order[len(order) - n_negative :].tolist():
        labels[index] = NEGATIVE
    return labels


def bits_per_byte(lm: ReferenceLM, texts: Sequence[str], *, batch_tokens: int = 8192) -> np.ndarray:
    """Each text's summed token NLL in bits over its UTF-8 bytes (NaN with no token to predict)."""
    mean_nll, _ = lm.score_documents(texts, batch_tokens=batch_tokens, token_el2n=False)
    targets = np.array(
        [max(len(lm.backend.encode_document(text, None)) - 1, 0) for text in texts],
        dtype=np.float64,
    )
    n_bytes = np.array([len(text.encode("utf-8")) for text in texts], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(mean_nll * targets / (math.log(2.0) * n_bytes), dtype=np.float64)


def model_fingerprints(params: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Path, score and content digest of each model; refuses a path that holds no LM.

    A changed model (retrained, replaced) changes its digest, so the
    classifier trained from its labels is trained again.
    """
    from thresher.models.lm import lm_kind

    out = []
    for k, model in enumerate(params["models"]):
        directory = local_model(str(model["path"]), f"{where}: models[{k}].path")
        lm_kind(directory)
        out.append(
            {
                "path": str(model["path"]),
                "score": float(model["score"]),
                "digest": directory_digest(directory),
            }
        )
    return out


def directory_digest(directory: Path) -> str:
    """SHA-256 of the names, sizes and contents of the files below ``directory`` (dot-files left out)."""
    digest = hashlib.sha256()
    files = sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )
    for path in files:
        relative = path.relative_to(directory).as_posix()
        digest.update(f"{relative}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def preselect_labels(params: dict[str, Any], sample: pa.Table, seed: int, where: str) -> pa.Table:
    """Score a corpus sample with every model and label it (one row per scored document).

    Columns: ``id``, ``text`` (the whole document, as the classifier reads
    it), ``agreement`` (the predictive strength), ``bits_per_byte_<k>``
    (model ``k``'s loss on the first ``max_chars`` characters) and
    ``label`` (``positive``, ``negative`` or null). The models' paths and
    scores are in the schema metadata (``preselect_models``, JSON).
    """
    from thresher.models.lm import ReferenceLM

    texts = sample.column(S.TEXT).to_pylist() if S.TEXT in sample.column_names else []
    ids = sample.column(S.ID).to_pylist() if S.ID in sample.column_names else [None] * len(texts)
    kept = [i for i, text in enumerate(texts) if isinstance(text, str) and text.strip()]
    documents = [texts[i] for i in kept]
    limit = params["max_chars"]
    scored = [text if limit is None else text[: int(limit)] for text in documents]
    models = params["models"]
    losses = np.full((len(scored), len(models)), np.nan, dtype=np.float64)
    for k, model in enumerate(models):
        directory = local_model(str(model["path"]), f"{where}: models[{k}].path")
        lm = ReferenceLM.load(directory, device=str(params["device"]))
        losses[:, k] = bits_per_byte(lm, scored, batch_tokens=int(params["batch_tokens"]))
        del lm
    strength = predictive_strength(losses, [float(m["score"]) for m in models])
    labels = label_documents(strength, int(params["n_positive"]), int(params["n_negative"]), seed)
    columns: dict[str, Any] = {
        S.ID: pa.array([ids[i] for i in kept], pa.string()),
        S.TEXT: pa.array(documents, pa.string()),
        STRENGTH: pa.array(strength, pa.float64()),
        **{f"{LOSS_PREFIX}{k}": pa.array(losses[:, k], pa.float64()) for k in range(len(models))},
        "label": pa.array(labels, pa.string()),
    }
    described = [{"path": str(m["path"]), "score": float(m["score"])} for m in models]
    table = pa.table(columns)
    return table.replace_schema_metadata({"preselect_models": json.dumps(described)})


def training_documents(table: pa.Table) -> tuple[list[str], list[str]]:
    """The texts labelled positive and negative in a :func:`preselect_labels` table."""
    texts = table.column(S.TEXT).to_pylist()
    labels = table.column("label").to_pylist()
    positives = [t for t, label in zip(texts, labels, strict=True) if label == POSITIVE]
    negatives = [t for t, label in zip(texts, labels, strict=True) if label == NEGATIVE]
    return positives, negatives


def label_summary(table: pa.Table) -> dict[str, Any]:
    """Counts of a :func:`preselect_labels` table, and the strengths where its labels change."""
    labels = np.array(table.column("label").to_pylist(), dtype=object)
    strength = table.column(STRENGTH).to_numpy(zero_copy_only=False)
    positive, negative = labels == POSITIVE, labels == NEGATIVE
    return {
        "n_scored": table.num_rows,
        "n_positive": int(positive.sum()),
        "n_negative": int(negative.sum()),
        "positive_min_agreement": float(strength[positive].min()) if positive.any() else None,
        "negative_max_agreement": float(strength[negative].max()) if negative.any() else None,
    }


def write_labels(table: pa.Table, path: Path) -> None:
    """Write the labelled documents to ``path`` whole (a staged file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    pq.write_table(table, staging)
    os.replace(staging, path)
