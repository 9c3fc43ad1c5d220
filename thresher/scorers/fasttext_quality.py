"""Quality classifier: P(high quality) from supervised fastText models, optionally ensembled.

Each classifier is a supervised fastText model of positive ("looks like the
reference data") versus negative text, trained in ``fit`` from one of:

- ``positive_files`` and ``negative_files``: documents from files;
- ``positive_files`` alone: negatives are documents drawn at random from the
  corpus (``n_negatives``, default as many as positives), the DCLM and
  Nemotron-CC recipe (reference text versus random web text);
- ``positive_labels``: a labelled column of the corpus (``label_column``,
  default the canonical ``label``); rows whose value is one of
  ``positive_labels`` are positives, every other labelled row a negative;

or loaded from ``model_path``, an existing fastText classifier (``.bin``;
``positive_label`` names its positive class, e.g. ``__label__hq``).

Files are plain text with one document per line (``.txt``), JSON lines
(``.jsonl``, ``.jsonl.gz``) or Parquet with a ``text`` field.

The score is P(positive). Several classifiers (``classifiers``: a list of
specs, each a mapping of the per-classifier parameters below, which default
to the scorer's own) are combined by ``mean`` or ``max`` of their
probabilities, as Nemotron-CC ensembles its quality classifiers; several
seeds of one recipe are ``classifiers: [{seed: 1}, {seed: 2}, {seed: 3}]``.
With ``write_members`` each classifier's probability is written too, as
``<column>_classifier_<k>``.

Text is normalised the same way for training and scoring: lower-cased
(``lowercase``), punctuation split from words, whitespace collapsed, cut to
the first ``max_words`` words (fastText reads at most 1,024 words a line).
fastText trains single-threaded here, so a seed gives the same model.

References
----------
Joulin et al., "Bag of Tricks for Efficient Text Classification", EACL 2017.
Li et al., "DataComp-LM: In search of the next generation of training sets
for language models" (DCLM), 2024. Su et al., "Nemotron-CC: Transforming
Common Crawl into a Refined Long-Horizon Pretraining Dataset", 2024.
Messmer et al., "Enhancing Multilingual LLM Pretraining with Model-Based
Data Selection", 2025.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher._params import check_bool, check_str
from thresher.errors import ConfigError, InputError, ScorerError, ThresherError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.keys import json_digest
from thresher.scorers.base import Scorer

POSITIVE = "__label__positive"
NEGATIVE = "__label__negative"
_FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin file
_PUNCTUATION = re.compile(r"([^\w\s])")
_SPACES = re.compile(r"\s+")

#: Per-classifier parameters and their defaults (the scorer's own values override these).
SPEC_KEYS = (
    "positive_files",
    "negative_files",
    "positive_labels",
    "label_column",
    "n_negatives",
    "n_documents",
    "model_path",
    "positive_label",
    "seed",
    "epoch",
    "learning_rate",
    "dim",
    "word_ngrams",
    "min_count",
    "bucket",
)


class FastTextModelError(ThresherError):
    """A fastText model file cannot be used (missing, or not a fastText model)."""


class FastTextQualityScorer(Scorer):
    """P(positive) of fastText quality classifiers, combined by mean or max (see module docstring).

    Parameters
    ----------
    positive_files, negative_files : list of str, optional
        Example documents (``.txt`` one per line, ``.jsonl[.gz]``, ``.parquet``).
    positive_labels : list of str, optional
        Values of ``label_column`` that are positive (the rest are negative).
    label_column : str
        Corpus column read with ``positive_labels`` (default the canonical ``label``).
    n_negatives : int, optional
        Corpus documents drawn as negatives when only positives are given
        (default: as many as positives).
    n_documents : int
        Corpus rows drawn for ``positive_labels`` training.
    model_path : str, optional
        A trained fastText classifier to load instead of training one.
    positive_label : str
        The positive class of a ``model_path`` model.
    seed, epoch, learning_rate, dim, word_ngrams, min_count, bucket
        fastText training settings (seed ``None``: the run's seed). ``bucket``
        hash buckets for word n-grams; the model holds ``bucket x dim`` floats
        (fastText's default of 2M buckets makes a 64-dim model 512 MB).
    classifiers : list of dict, optional
        Several classifiers, each a mapping of the parameters above; keys
        left out take the scorer's values. ``None``: one classifier.
    combine : {"mean", "max"}
        How the classifiers' probabilities are combined.
    write_members : bool
        Also write each classifier's probability (``<column>_classifier_<k>``).
    lowercase : bool
        Lower-case text before training and scoring.
    max_words : int
        Words of a document the classifiers read.
    """

    name: ClassVar[str] = "fasttext_quality"
    requires_fit: ClassVar[bool] = True
    transient_attributes: ClassVar[tuple[str, ...]] = ("models_",)

    def __init__(
        self,
        positive_files: list[str] | None = None,
        negative_files: list[str] | None = None,
        positive_labels: list[str] | None = None,
        label_column: str = S.LABEL,
        n_negatives: int | None = None,
        n_documents: int = 20_000,
        model_path: str | None = None,
        positive_label: str = POSITIVE,
        seed: int | None = None,
        epoch: int = 10,
        learning_rate: float = 0.1,
        dim: int = 64,
        word_ngrams: int = 2,
        min_count: int = 1,
        bucket: int = 200_000,
        classifiers: list[dict[str, Any]] | None = None,
        combine: str = "mean",
        write_members: bool = False,
        lowercase: bool = True,
        max_words: int = 1000,
    ) -> None:
        self.positive_files = positive_files
        self.negative_files = negative_files
        self.positive_labels = positive_labels
        self.label_column = label_column
        self.n_negatives = n_negatives
        self.n_documents = n_documents
        self.model_path = model_path
        self.positive_label = positive_label
        self.seed = seed
        self.epoch = epoch
        self.learning_rate = learning_rate
        self.dim = dim
        self.word_ngrams = word_ngrams
        self.min_count = min_count
        self.bucket = bucket
        self.classifiers = classifiers
        self.combine = combine
        self.write_members = write_members
        self.lowercase = lowercase
        self.max_words = max_words

    # -- parameters ----------------------------------------------------------------
    def specs(self) -> list[dict[str, Any]]:
        """One complete, checked spec per classifier (the scorer's values fill the gaps)."""
        if self.combine not in ("mean", "max"):
            raise ValueError(f"combine must be 'mean' or 'max', got {self.combine!r}")
        if (
            isinstance(self.max_words, bool)
            or not isinstance(self.max_words, int)
            or self.max_words < 1
        ):
            raise ValueError(f"max_words must be a positive integer, got {self.max_words!r}")
        defaults = {key: getattr(self, key) for key in SPEC_KEYS}
        given = self.classifiers if self.classifiers is not None else [{}]
        if not isinstance(given, list) or not given:
            raise ValueError("classifiers must be a non-empty list of mappings")
        specs = []
        for k, spec in enumerate(given):
            where = f"classifiers[{k}]" if self.classifiers is not None else "fasttext_quality"
            if not isinstance(spec, dict):
                raise ValueError(f"{where}: must be a mapping, got {spec!r}")
            unknown = sorted(set(spec) - set(SPEC_KEYS))
            if unknown:
                raise ValueError(
                    f"{where}: unknown key(s) {unknown}; known: {', '.join(SPEC_KEYS)}"
                )
            specs.append(_check_spec({**defaults, **spec}, where))
        return specs

    def check_params(self) -> None:
        check_str(self.name, "label_column", self.label_column)
        check_str(self.name, "positive_label", self.positive_label)
        for flag in ("write_members", "lowercase"):
            check_bool(self.name, flag, getattr(self, flag))
        self.specs()  # every classifier's spec, checked

    def output_fields(self, column: str) -> list[pa.Field]:
        specs = self.specs()
        fields = [pa.field(column, pa.float64())]
        if self.write_members:
            fields += [
                pa.field(f"{column}_classifier_{k}", pa.float64()) for k in range(len(specs))
            ]
        return fields

    # -- lifecycle -----------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        """Train each classifier (or check its ``model_path``); save models under the artefact dir."""
        specs = self.specs()
        paths: list[str] = []
        labels: list[str] = []
        summary = []
        for k, spec in enumerate(specs):
            if spec["model_path"] is not None:
                path = Path(spec["model_path"]).expanduser().resolve()
                labels_of_model = load_fasttext(path).get_labels()
                if spec["positive_label"] not in labels_of_model:
                    raise FastTextModelError(
                        f"fasttext_quality: positive_label {spec['positive_label']!r} is not a "
                        f"label of {path} (labels: {labels_of_model})"
                    )
                paths.append(str(path))
                labels.append(spec["positive_label"])
                summary.append({"model_path": str(path), "positive_label": spec["positive_label"]})
                continue
            seed = context.seed if spec["seed"] is None else int(spec["seed"])
            key = json_digest(
                {
                    **spec,
                    "seed": seed,
                    "lowercase": self.lowercase,
                    "max_words": self.max_words,
                    "files": _fingerprints(spec),  # a changed example file retrains
                },
                length=12,
            )
            path = context.artifact_dir / f"classifier-{k}-{key}.bin"
            record_path = path.with_suffix(".json")
            if not (path.is_file() and record_path.is_file()):
                positives, negatives = self._training_documents(spec, context, seed)
                record = _train(
                    positives, negatives, spec, seed, path, self.lowercase, self.max_words
                )
                record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
            paths.append(str(path))
            labels.append(POSITIVE)
            summary.append(json.loads(record_path.read_text(encoding="utf-8")))
        self.model_paths_ = paths
        self.model_positive_labels_ = labels
        (context.artifact_dir / "classifiers.json").write_text(
            json.dumps({"combine": self.combine, "classifiers": summary}, indent=2),
            encoding="utf-8",
        )

    def setup(self) -> None:
        """Load the classifiers once per worker."""
        if getattr(self, "models_", None) is not None:
            return
        paths = getattr(self, "model_paths_", None)
        if paths is None:
            raise ScorerError("fasttext_quality: not fitted (call fit first)")
        self.models_ = [load_fasttext(Path(p)) for p in paths]

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        self.setup()
        texts = batch.column(batch.schema.get_field_index(S.TEXT)).to_pylist()
        lines = [normalise(text or "", self.lowercase, self.max_words) for text in texts]
        members = np.empty((len(self.models_), len(lines)), dtype=np.float64)
        for k, (model, label) in enumerate(
            zip(self.models_, self.model_positive_labels_, strict=True)
        ):
            members[k] = positive_probability(model, lines, label)
        combined = members.mean(axis=0) if self.combine == "mean" else members.max(axis=0)
        if not self.write_members:
            return pa.array(combined, pa.float64())
        arrays = [pa.array(combined, pa.float64())] + [pa.array(m, pa.float64()) for m in members]
        return pa.StructArray.from_arrays(arrays, fields=list(self.output_field(self.name).type))

    # -- training data ---------------------------------------------------------------
    def _training_documents(
        self, spec: dict[str, Any], context: FitContext, seed: int
    ) -> tuple[list[str], list[str]]:
        if spec["positive_labels"] is not None:
            column = spec["label_column"]
            sample = context.sample(int(spec["n_documents"]), [S.TEXT, column], seed)
            if column not in sample.column_names:
                raise ConfigError(
                    f"fasttext_quality: label_column {column!r} is not a column of the ingested "
                    f"corpus (columns: {sorted(sample.column_names)})"
                )
            wanted = {str(v) for v in spec["positive_labels"]}
            positives: list[str] = []
            negatives: list[str] = []
            for text, value in zip(
                sample.column(S.TEXT).to_pylist(), sample.column(column).to_pylist(), strict=True
            ):
                if not isinstance(text, str) or value is None:
                    continue
                (positives if str(value) in wanted else negatives).append(text)
        else:
            positives = read_documents(spec["positive_files"])
            if spec["negative_files"] is not None:
                negatives = read_documents(spec["negative_files"])
            else:
                wanted_n = spec["n_negatives"] or len(positives)
                sample = context.sample(int(wanted_n), [S.TEXT], seed + 1)
                negatives = [t for t in sample.column(S.TEXT).to_pylist() if isinstance(t, str)]
        if not positives or not negatives:
            raise InputError(
                f"fasttext_quality: training needs positive and negative documents, got "
                f"{len(positives)} positive and {len(negatives)} negative"
            )
        return positives, negatives


def _check_spec(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """Exactly one data source per classifier; numeric settings in range."""
    sources = [
        name
        for name, present in (
            ("positive_files", spec["positive_files"] is not None),
            ("positive_labels", spec["positive_labels"] is not None),
            ("model_path", spec["model_path"] is not None),
        )
        if present
    ]
    if len(sources) != 1:
        raise ValueError(
            f"{where}: give exactly one of positive_files (with or without negative_files), "
            f"positive_labels or model_path; got {sources or 'none'}"
        )
    if spec["negative_files"] is not None and spec["positive_files"] is None:
        raise ValueError(f"{where}: negative_files needs positive_files")
    for key in ("positive_files", "negative_files", "positive_labels"):
        value = spec[key]
        if value is not None and (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str | int) for v in value)
        ):
            raise ValueError(f"{where}: {key} must be a non-empty list, got {value!r}")
    for key in ("epoch", "dim", "word_ngrams", "min_count", "n_documents", "bucket"):
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
    if spec["n_negatives"] is not None and (
        isinstance(spec["n_negatives"], bool)
        or not isinstance(spec["n_negatives"], int)
        or spec["n_negatives"] < 1
    ):
        raise ValueError(
            f"{where}: n_negatives must be a positive integer, got {spec['n_negatives']!r}"
        )
    if not isinstance(spec["learning_rate"], int | float) or not spec["learning_rate"] > 0:
        raise ValueError(f"{where}: learning_rate must be > 0, got {spec['learning_rate']!r}")
    if spec["seed"] is not None and (
        isinstance(spec["seed"], bool) or not isinstance(spec["seed"], int)
    ):
        raise ValueError(f"{where}: seed must be an integer, got {spec['seed']!r}")
    return spec


def _fingerprints(spec: dict[str, Any]) -> list[list[Any]]:
    """Path, size and modification time of each example file of a spec."""
    out: list[list[Any]] = []
    for key in ("positive_files", "negative_files"):
        for name in spec[key] or []:
            path = Path(str(name)).expanduser().resolve()
            stat = path.stat() if path.is_file() else None
            out.append(
                [str(path), stat.st_size if stat else None, stat.st_mtime_ns if stat else None]
            )
    return out


# -- text, files, models -----------------------------------------------------------
def normalise(text: str, lowercase: bool = True, max_words: int = 1000) -> str:
    """One line of space-separated words, punctuation split off, at most ``max_words`` words."""
    if lowercase:
        text = text.lower()
    words = _SPACES.sub(" ", _PUNCTUATION.sub(r" \1 ", text)).strip().split(" ")
    return " ".join(words[:max_words])


def read_documents(paths: list[str]) -> list[str]:
    """Documents of ``.txt`` (one per line), ``.jsonl[.gz]`` or ``.parquet`` files (``text`` field)."""
    documents: list[str] = []
    for name in paths:
        path = Path(str(name)).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"fasttext_quality: example file not found: {name} ({path})")
        try:
            if path.suffix == ".parquet":
                table = pq.read_table(path)
                if S.TEXT not in table.column_names:
                    raise InputError(f"{path}: no 'text' column (columns: {table.column_names})")
                documents += [t for t in table.column(S.TEXT).to_pylist() if isinstance(t, str)]
            elif path.name.endswith((".jsonl", ".jsonl.gz")):
                opener = gzip.open if path.name.endswith(".gz") else open
                with opener(path, "rt", encoding="utf-8") as handle:
                    for number, line in enumerate(handle, 1):
                        if not line.strip():
                            continue
                        record = json.loads(line)
                        text = record.get(S.TEXT) if isinstance(record, dict) else None
                        if not isinstance(text, str):
                            raise InputError(f"{path}:{number}: no string 'text' field")
                        documents.append(text)
            else:
                documents += [
                    line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
                ]
        except (UnicodeDecodeError, json.JSONDecodeError, pa.ArrowInvalid) as error:
            raise InputError(f"{path}: cannot read example documents ({error})") from None
    return [d for d in documents if d.strip()]


def _train(
    positives: list[str],
    negatives: list[str],
    spec: dict[str, Any],
    seed: int,
    path: Path,
    lowercase: bool,
    max_words: int,
) -> dict[str, Any]:
    """Train one classifier from a temporary file (shuffled, seeded) and save it to ``path``."""
    import fasttext

    lines = [f"{POSITIVE} {normalise(t, lowercase, max_words)}" for t in positives]
    lines += [f"{NEGATIVE} {normalise(t, lowercase, max_words)}" for t in negatives]
    order = np.random.default_rng(seed).permutation(len(lines))
    with tempfile.TemporaryDirectory(prefix="thresher-fasttext-") as directory:
        train_file = Path(directory) / "train.txt"
        train_file.write_text("\n".join(lines[i] for i in order) + "\n", encoding="utf-8")
        model = fasttext.train_supervised(
            input=str(train_file),
            epoch=int(spec["epoch"]),
            lr=float(spec["learning_rate"]),
            dim=int(spec["dim"]),
            wordNgrams=int(spec["word_ngrams"]),
            minCount=int(spec["min_count"]),
            bucket=int(spec["bucket"]),
            loss="softmax",
            thread=1,
            seed=seed,
            verbose=0,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial")
        model.save_model(str(staging))
        os.replace(staging, path)
    return {
        "seed": seed,
        "n_positive": len(positives),
        "n_negative": len(negatives),
        "spec": {k: v for k, v in spec.items() if v is not None},
        "model": path.name,
    }


def check_fasttext_file(path: Path) -> None:
    """Refuse a path that is not a fastText model before fastText's loader reads it."""
    if not path.is_file():
        raise FastTextModelError(f"fastText model not found: {path}")
    with path.open("rb") as handle:
        header = handle.read(8)
    if len(header) < 8 or struct.unpack("<i", header[:4])[0] != _FASTTEXT_MAGIC:
        raise FastTextModelError(
            f"{path}: not a fastText model (bad magic number); give a .bin saved by fastText"
        )


def load_fasttext(path: Path) -> Any:
    """Load a fastText model after checking its header."""
    import fasttext

    check_fasttext_file(path)
    try:
        return fasttext.load_model(str(path))
    except (ValueError, RuntimeError, MemoryError) as error:
        raise FastTextModelError(f"{path}: cannot load fastText model ({error})") from None


def positive_probability(model: Any, lines: list[str], positive_label: str) -> np.ndarray:
    """P(``positive_label``) for each normalised line (NaN when the model gives no label)."""
    if positive_label not in model.get_labels():
        raise FastTextModelError(
            f"positive_label {positive_label!r} is not a label of the model "
            f"(labels: {model.get_labels()})"
        )
    if not lines:
        return np.zeros(0, dtype=np.float64)
    labels, probabilities = model.predict(lines, k=-1, threshold=0.0)
    out = np.full(len(lines), np.nan, dtype=np.float64)
    for i, (names, values) in enumerate(zip(labels, probabilities, strict=True)):
        for name, value in zip(names, values, strict=True):
            if name == positive_label:
                out[i] = min(1.0, max(0.0, float(value)))
                break
        else:
            if len(names):
                out[i] = 0.0  # the model ranks every other label but not this one: p ~ 0
    return out
