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
- ``preselect``: PreSelect labels (:mod:`thresher.models.preselect`): a
  sample of the corpus (``sample`` documents) is scored by three or more
  local LMs whose benchmark scores the user gives (``models: [{path: ...,
  score: ...}, ...]``); the ``n_positive`` documents on which the models'
  order by loss best matches their order by score are positives, the
  ``n_negative`` that match it worst negatives. The labelled documents
  (id, text, agreement, each model's bits per byte, label) are saved next
  to the classifier as ``classifier-<k>-<key>-preselect.parquet``;

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
Data Selection", 2025. Shum et al., "Predictive Data Selection: The Data
That Predicts Is the Data That Teaches" (PreSelect), 2025.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from thresher._params import Bool, Constraints, Integral, Interval, ListOf, Mapping, Options
from thresher.errors import ConfigError, InputError, ScorerError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.io.documents import read_documents
from thresher.io.localize import local_model
from thresher.keys import json_digest
from thresher.models.fasttext import (
    POSITIVE,
    FastTextModelError,
    load_fasttext,
    normalise,
    positive_probability,
    train_classifier,
)
from thresher.models.preselect import (
    label_summary,
    model_fingerprints,
    preselect_labels,
    preselect_params,
    training_documents,
    write_labels,
)
from thresher.scorers.base import Scorer
from thresher.scorers.fasttext_specs import (
    SPEC_CONSTRAINTS,
    SPEC_KEYS,
    check_spec,
    example_fingerprints,
)


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
    preselect : dict, optional
        PreSelect labelling: ``models`` (at least 3 mappings of ``path``, a
        local thresher LM directory or Hugging Face checkpoint, and
        ``score``, its benchmark score), ``sample`` (corpus documents scored,
        default 2000), ``n_positive`` and ``n_negative`` (default 500 each),
        ``max_chars`` (characters of a document the LMs read, default 4000),
        ``batch_tokens`` (default 8192) and ``device`` (default ``auto``).
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
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        **SPEC_CONSTRAINTS,
        "classifiers": [ListOf(Mapping(), what="mappings"), None],
        "combine": [Options("mean", "max")],
        "write_members": [Bool()],
        "lowercase": [Bool()],
        "max_words": [Interval(Integral, 1, None)],
    }

    def __init__(
        self,
        positive_files: list[str] | None = None,
        negative_files: list[str] | None = None,
        positive_labels: list[str] | None = None,
        label_column: str = S.LABEL,
        n_negatives: int | None = None,
        n_documents: int = 20_000,
        preselect: dict[str, Any] | None = None,
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
        self.preselect = preselect
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
        """One complete spec per classifier (its own keys, the scorer's values for the rest)."""
        defaults = {key: getattr(self, key) for key in SPEC_KEYS}
        return [{**defaults, **own} for own in self.classifiers or [{}]]

    def _check_together(self) -> None:
        defaults = {key: getattr(self, key) for key in SPEC_KEYS}
        for k, own in enumerate(self.classifiers or [{}]):
            where = f"classifiers[{k}]" if self.classifiers is not None else self.name
            check_spec(own, defaults, where)

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
        self.validate_params()
        specs = self.specs()
        paths: list[str] = []
        labels: list[str] = []
        summary = []
        for k, spec in enumerate(specs):
            if spec["model_path"] is not None:
                uri = str(spec["model_path"])
                path = local_model(uri, "fasttext_quality: model_path", kind="file")
                labels_of_model = load_fasttext(path).get_labels()
                if spec["positive_label"] not in labels_of_model:
                    raise FastTextModelError(
                        f"fasttext_quality: positive_label {spec['positive_label']!r} is not a "
                        f"label of {path} (labels: {labels_of_model})"
                    )
                paths.append(uri)  # each worker makes its own local copy
                labels.append(spec["positive_label"])
                summary.append({"model_path": uri, "positive_label": spec["positive_label"]})
                continue
            seed = context.seed if spec["seed"] is None else int(spec["seed"])
            keyed = {
                **spec,
                "seed": seed,
                "lowercase": self.lowercase,
                "max_words": self.max_words,
                "files": example_fingerprints(spec),  # a changed example file retrains
            }
            where = f"{self.name}: classifiers[{k}]" if self.classifiers else self.name
            if spec["preselect"] is None:
                del keyed["preselect"]  # the key a classifier had before this source existed
            else:  # a changed LM (or score) retrains
                keyed["preselect_models"] = model_fingerprints(
                    preselect_params(spec["preselect"], f"{where}: preselect"),
                    f"{where}: preselect",
                )
            key = json_digest(keyed, length=12)
            path = context.artifact_dir / f"classifier-{k}-{key}.bin"
            record_path = path.with_suffix(".json")
            if not (path.is_file() and record_path.is_file()):
                labelled: dict[str, Any] = {}
                if spec["preselect"] is not None:
                    positives, negatives, labelled = self._preselect_documents(
                        spec, context, seed, path, where, keyed["preselect_models"]
                    )
                else:
                    positives, negatives = self._training_documents(spec, context, seed)
                record = train_classifier(
                    positives, negatives, spec, seed, path, self.lowercase, self.max_words
                )
                record.update(labelled)
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
        self.models_ = [
            load_fasttext(local_model(p, f"{self.name}: model", kind="file")) for p in paths
        ]

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
    def _preselect_documents(
        self,
        spec: dict[str, Any],
        context: FitContext,
        seed: int,
        path: Path,
        where: str,
        fingerprints: list[dict[str, Any]],
    ) -> tuple[list[str], list[str], dict[str, Any]]:
        """PreSelect positives and negatives of a corpus sample; the labels saved beside ``path``."""
        params = preselect_params(spec["preselect"], f"{where}: preselect")
        sample = context.sample(int(params["sample"]), [S.ID, S.TEXT], seed)
        table = preselect_labels(params, sample, seed, f"{where}: preselect")
        labels_path = path.with_name(f"{path.stem}-preselect.parquet")
        write_labels(table, labels_path)
        positives, negatives = training_documents(table)
        summary = {"labels": labels_path.name, "models": fingerprints, **label_summary(table)}
        return positives, negatives, {"preselect": summary}

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
            positives = read_documents(spec["positive_files"], self.name)
            if spec["negative_files"] is not None:
                negatives = read_documents(spec["negative_files"], self.name)
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
