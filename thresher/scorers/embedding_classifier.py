"""A quality score learned on embeddings: a linear or MLP head on a vector column.

The scorer reads one column of fixed-size vectors (``embeddings``, default
``embedding``: the output of the run's ``embedding`` scorer, e.g. MiniLM
sentence vectors with ``source: sentence_transformer``, or any vector column
of the corpus such as ``features``) and applies heads trained in ``fit``
(:mod:`thresher.models.vector_head`) on one of:

- ``positive_files`` and ``negative_files``: documents from files, embedded
  by the run's scorer that writes the ``embeddings`` column (the same model
  as the column); ``positive_files`` alone takes ``n_negatives`` random
  corpus rows as negatives (the DCLM recipe). Refused when no scorer of the
  run writes the column from text alone (a vector column of the corpus
  cannot embed new documents): use a label or target column then;
- ``positive_labels``: a label column of the corpus (``label_column``,
  default the canonical ``label``): classification, the score is
  P(positive); rows whose value is one of ``positive_labels`` are positive,
  every other labelled row negative;
- ``target_column``: a numeric annotation of the corpus (FineWeb-Edu's 0-5
  educational scores): regression, the score is the predicted value; rows
  whose target is null or NaN are unlabelled and not trained on.

Corpus rows are drawn at random (``n_documents``) and those labelled kept.
A seeded ``holdout`` share of the labelled rows (per class for
classification) is held out: the head trains on the rest, and its held-out
accuracy and ROC AUC (classification) or Pearson and Spearman correlation
(regression) are recorded with the model, in ``models/<column>/classifiers.json``.
A training set with fewer than ten rows, or with one class (fewer than two
rows of either), is refused (ConfigError naming the counts).

Several heads (``classifiers``, each a mapping of the per-classifier
parameters, which default to the scorer's own) are combined by ``mean`` or
``max``, all classifiers or all regressors; ``write_members`` writes each
head's score too (``<column>_classifier_<k>``). To combine these scores with
other scorers' (fastText quality classifiers), use ``score_combine``.

A row without a usable vector (null, or holding a NaN) scores NaN, which the
selection drops as ``invalid_score``. Heads train and score on the CPU in
float64 with one torch thread: the same data and seed give the same scores
at any thread count, on either engine, with or without a GPU (the vectors
themselves are the embedding scorer's: on a GPU it may compute them in half
precision, which changes them).

References
----------
Penedo et al., "The FineWeb Datasets: Decanting the Web for the Finest Text
Data at Scale", NeurIPS 2024 (FineWeb-Edu classifier: a regression head on
sentence embeddings). Li et al., "DataComp-LM: In search of the next
generation of training sets for language models" (DCLM), 2024.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from thresher._params import (
    Bool,
    Constraints,
    Integral,
    Interval,
    ListOf,
    Mapping,
    Options,
    Real,
    Text,
    check_entry,
)
from thresher.errors import ConfigError, ScorerError
from thresher.fitting import Derived, FitContext
from thresher.io import schema as S
from thresher.io.documents import file_fingerprints, read_documents
from thresher.keys import json_digest
from thresher.models.vector_head import (
    HeadSettings,
    Task,
    VectorHead,
    heldout_metrics,
    holdout_split,
    train_head,
    vector_matrix,
)
from thresher.scorers.base import Scorer

#: Fewest labelled rows with a vector a head trains on, and fewest rows of each class.
MIN_ROWS = 10
MIN_PER_CLASS = 2

_COUNT = Interval(Integral, 1, None)

#: What each per-classifier parameter may be (the scorer's parameters of these names too).
SPEC_CONSTRAINTS: dict[str, Constraints] = {
    "positive_files": [ListOf(Text(), what="file paths"), None],
    "negative_files": [ListOf(Text(), what="file paths"), None],
    "n_negatives": [_COUNT, None],
    "positive_labels": [
        ListOf(Text(allow_empty=True), Interval(Integral, None, None), what="labels"),
        None,
    ],
    "label_column": [Text()],
    "target_column": [Text(), None],
    "n_documents": [_COUNT],
    "head": [Options("linear", "mlp")],
    "hidden": [_COUNT],
    "epochs": [_COUNT],
    "batch_size": [_COUNT],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None)],
    "holdout": [Interval(Real, 0, 1, closed="left")],
    "seed": [Interval(Integral, None, None), None],
}
SPEC_KEYS = tuple(SPEC_CONSTRAINTS)


class EmbeddingClassifierScorer(Scorer):
    """Heads trained on a vector column, combined by mean or max (see module docstring).

    Parameters
    ----------
    embeddings : str
        The vector column read (default ``embedding``): another scorer's
        output or an ingested column (``features``, a pass-through column).
    positive_files, negative_files : list of str, optional
        Example documents (``.txt`` one per line, ``.jsonl[.gz]``, ``.parquet``).
    n_negatives : int, optional
        Corpus rows drawn as negatives with ``positive_files`` alone
        (default: as many as positives).
    positive_labels : list of str, optional
        Values of ``label_column`` that are positive (the rest are negative).
    label_column : str
        Corpus column read with ``positive_labels`` (default the canonical ``label``).
    target_column : str, optional
        Numeric corpus column to regress (null: unlabelled row).
    n_documents : int
        Corpus rows drawn for ``positive_labels`` and ``target_column`` training.
    head : {"linear", "mlp"}
        A linear head, or one hidden ReLU layer of ``hidden`` units.
    hidden, epochs, batch_size, learning_rate, weight_decay
        Shape and optimiser (AdamW) settings.
    holdout : float
        Share of the labelled rows held out to measure the head (0: none).
    seed : int, optional
        Seed of the split, the initial weights and the batch order (None: the run's).
    classifiers : list of dict, optional
        Several heads, each a mapping of the per-classifier parameters above;
        keys left out take the scorer's values. ``None``: one head.
    combine : {"mean", "max"}
        How the heads' scores are combined.
    write_members : bool
        Also write each head's score (``<column>_classifier_<k>``).

    Output: float64, shape (n_rows,): P(positive), or the predicted target.
    """

    name: ClassVar[str] = "embedding_classifier"
    requires_fit: ClassVar[bool] = True
    transient_attributes: ClassVar[tuple[str, ...]] = ("heads_",)
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "embeddings": [Text()],
        **SPEC_CONSTRAINTS,
        "classifiers": [ListOf(Mapping(), what="mappings"), None],
        "combine": [Options("mean", "max")],
        "write_members": [Bool()],
    }

    def __init__(
        self,
        embeddings: str = "embedding",
        positive_files: list[str] | None = None,
        negative_files: list[str] | None = None,
        n_negatives: int | None = None,
        positive_labels: list[str] | None = None,
        label_column: str = S.LABEL,
        target_column: str | None = None,
        n_documents: int = 20_000,
        head: str = "linear",
        hidden: int = 64,
        epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 0.01,
        weight_decay: float = 1e-4,
        holdout: float = 0.2,
        seed: int | None = None,
        classifiers: list[dict[str, Any]] | None = None,
        combine: str = "mean",
        write_members: bool = False,
    ) -> None:
        self.embeddings = embeddings
        self.positive_files = positive_files
        self.negative_files = negative_files
        self.n_negatives = n_negatives
        self.positive_labels = positive_labels
        self.label_column = label_column
        self.target_column = target_column
        self.n_documents = n_documents
        self.head = head
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.holdout = holdout
        self.seed = seed
        self.classifiers = classifiers
        self.combine = combine
        self.write_members = write_members

    # -- parameters ----------------------------------------------------------------
    @property
    def input_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.embeddings,)

    def specs(self) -> list[dict[str, Any]]:
        """One complete spec per head (its own keys, the scorer's values for the rest)."""
        defaults = {key: getattr(self, key) for key in SPEC_KEYS}
        return [{**defaults, **own} for own in self.classifiers or [{}]]

    def _check_together(self) -> None:
        defaults = {key: getattr(self, key) for key in SPEC_KEYS}
        tasks = set()
        for k, own in enumerate(self.classifiers or [{}]):
            where = f"classifiers[{k}]" if self.classifiers is not None else self.name
            tasks.add(_task(_check_spec(own, defaults, where)))
        if len(tasks) > 1:
            raise ValueError(
                f"{self.name}: classifiers: all classify (positive_files, positive_labels) or "
                "all regress (target_column); their scores are not on one scale"
            )

    def output_fields(self, column: str) -> list[pa.Field]:
        fields = [pa.field(column, pa.float64())]
        if self.write_members:
            fields += [
                pa.field(f"{column}_classifier_{k}", pa.float64()) for k in range(len(self.specs()))
            ]
        return fields

    # -- lifecycle -----------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        """Train each head (or reuse the one saved for the same settings); record its metrics."""
        self.validate_params()
        derived = context.derived.get(self.embeddings)
        paths: list[str] = []
        summary: list[dict[str, Any]] = []
        for k, spec in enumerate(self.specs()):
            where = f"{self.name}.classifiers[{k}]" if self.classifiers else self.name
            seed = context.seed if spec["seed"] is None else int(spec["seed"])
            key = json_digest(
                {
                    **spec,
                    "seed": seed,
                    "run_seed": context.seed,
                    "embeddings": self.embeddings,
                    "derived": None if derived is None else derived.fingerprint,
                    "files": file_fingerprints(
                        [*(spec["positive_files"] or []), *(spec["negative_files"] or [])]
                    ),
                },
                length=12,
            )
            path = context.artifact_dir / f"head-{k}-{key}.safetensors"
            record_path = path.with_suffix(".json")
            if not (path.is_file() and record_path.is_file()):
                vectors, targets, source = self._training_rows(spec, context, derived, seed, where)
                record = _train(vectors, targets, spec, seed, where)
                record.update(source)
                record["model"] = path.name
                head: VectorHead = record.pop("head_")
                head.save(path)
                record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
            paths.append(str(path))
            summary.append(json.loads(record_path.read_text(encoding="utf-8")))
        self.model_paths_ = paths
        self.summary_ = summary
        (context.artifact_dir / "classifiers.json").write_text(
            json.dumps(
                {"combine": self.combine, "embeddings": self.embeddings, "classifiers": summary},
                indent=2,
            ),
            encoding="utf-8",
        )

    def setup(self) -> None:
        """Load the heads once per worker."""
        if getattr(self, "heads_", None) is not None:
            return
        paths = getattr(self, "model_paths_", None)
        if paths is None:
            raise ScorerError(f"{self.name}: not fitted (call fit first)")
        self.heads_ = [VectorHead.load(p) for p in paths]

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        self.setup()
        column = batch.column(batch.schema.get_field_index(self.embeddings))
        vectors, usable = vector_matrix(
            column, self.heads_[0].width, f"{self.name}: column {self.embeddings!r}"
        )
        members = np.full((len(self.heads_), batch.num_rows), np.nan)
        for k, head in enumerate(self.heads_):
            members[k, usable] = head.predict(vectors[usable])
        if batch.num_rows == 0:
            combined = np.zeros(0)
        else:
            combined = members.mean(axis=0) if self.combine == "mean" else members.max(axis=0)
        if not self.write_members:
            return pa.array(combined, pa.float64())
        arrays = [pa.array(combined, pa.float64())] + [pa.array(m, pa.float64()) for m in members]
        return pa.StructArray.from_arrays(arrays, fields=list(self.output_field(self.name).type))

    # -- training data ---------------------------------------------------------------
    def _training_rows(
        self,
        spec: dict[str, Any],
        context: FitContext,
        derived: Derived | None,
        seed: int,
        where: str,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, Any]]:
        """Vectors and targets (1/0, or the annotation) of the labelled rows, and their source."""
        if spec["positive_files"] is not None:
            return self._file_rows(spec, context, derived, seed, where)
        column = spec["target_column"] or spec["label_column"]
        table = self._corpus_sample(context, derived, int(spec["n_documents"]), column, seed)
        if column not in table.column_names:
            raise ConfigError(
                f"{where}: {'target' if spec['target_column'] else 'label'}_column {column!r} is "
                f"not a column of the ingested corpus (columns: {sorted(table.column_names)})"
            )
        values = table.column(column)
        if spec["target_column"] is not None:
            targets = _numbers(values, column, where)
            source: dict[str, Any] = {"source": "target_column", "column": column}
        else:
            wanted = {str(v) for v in spec["positive_labels"]}
            labels = values.to_pylist()
            targets = np.array(
                [np.nan if v is None else float(str(v) in wanted) for v in labels], np.float64
            )
            source = {"source": "label_column", "column": column}
        labelled = np.isfinite(targets)
        table = table.filter(pa.array(labelled))
        vectors = self._vectors(table, derived)
        return vectors, targets[labelled], {**source, "n_drawn": int(labelled.size)}

    def _corpus_sample(
        self, context: FitContext, derived: Derived | None, n: int, column: str, seed: int
    ) -> pa.Table:
        inputs = list(derived.inputs) if derived is not None else [self.embeddings]
        table = context.sample(n, [*inputs, column], seed)
        if derived is None and self.embeddings not in table.column_names:
            raise ConfigError(
                f"{self.name}: embeddings column {self.embeddings!r} is neither written by a "
                f"scorer of this run nor a column of the ingested corpus (columns: "
                f"{sorted(table.column_names)}); add the `embedding` scorer or name the column"
            )
        return table

    def _vectors(self, table: pa.Table, derived: Derived | None) -> NDArray[np.float64]:
        """The vectors of ``table``'s rows (computed by the column's scorer, or read)."""
        column = derived.compute(table) if derived is not None else table.column(self.embeddings)
        vectors, _ = vector_matrix(column, None, f"{self.name}: column {self.embeddings!r}")
        return vectors

    def _file_rows(
        self,
        spec: dict[str, Any],
        context: FitContext,
        derived: Derived | None,
        seed: int,
        where: str,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, Any]]:
        if derived is None or not set(derived.inputs) <= {S.TEXT}:
            what = (
                "is not written by a scorer of this run (a corpus column)"
                if derived is None
                else f"is computed from {list(derived.inputs)}, not from text alone"
            )
            raise ConfigError(
                f"{where}: positive_files need the documents embedded by the model of column "
                f"{self.embeddings!r}, but that column {what}; train on a label column "
                "(positive_labels) or a numeric annotation (target_column) instead"
            )
        positives = read_documents(spec["positive_files"], self.name)
        text = pa.table({S.TEXT: pa.array(positives, pa.string())})
        parts = [self._vectors(text, derived)]
        if spec["negative_files"] is not None:
            negatives = read_documents(spec["negative_files"], self.name)
            text = pa.table({S.TEXT: pa.array(negatives, pa.string())})
            parts.append(self._vectors(text, derived))
        else:
            wanted = spec["n_negatives"] or len(positives)
            sample = context.sample(int(wanted), list(derived.inputs), seed + 1)
            parts.append(self._vectors(sample, derived))
        targets = np.concatenate([np.ones(len(parts[0])), np.zeros(len(parts[1]))])
        return np.concatenate(parts), targets, {"source": "files"}


def _check_spec(own: dict[str, Any], defaults: dict[str, Any], where: str) -> dict[str, Any]:
    """The complete spec of a head: its own keys checked, exactly one data source."""
    check_entry(where, own, SPEC_CONSTRAINTS)
    spec = {**defaults, **own}
    sources = [
        key
        for key in ("positive_files", "positive_labels", "target_column")
        if spec[key] is not None
    ]
    if len(sources) != 1:
        raise ValueError(
            f"{where}: give exactly one of positive_files (with or without negative_files), "
            f"positive_labels or target_column; got {sources or 'none'}"
        )
    if spec["negative_files"] is not None and spec["positive_files"] is None:
        raise ValueError(f"{where}: negative_files needs positive_files")
    return spec


def _task(spec: dict[str, Any]) -> Task:
    return "regression" if spec["target_column"] is not None else "classification"


def _numbers(values: pa.ChunkedArray, column: str, where: str) -> NDArray[np.float64]:
    """A numeric column as float64, null as NaN (refused when not numeric)."""
    kind = values.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
        raise ConfigError(f"{where}: target_column {column!r} is not numeric (type {kind})")
    cast = pc.fill_null(values.cast(pa.float64()), np.nan)
    return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)


def _train(
    vectors: NDArray[np.float64],
    targets: NDArray[np.float64],
    spec: dict[str, Any],
    seed: int,
    where: str,
) -> dict[str, Any]:
    """Train one head on the rows with a vector; return its record (the head under ``head_``)."""
    task = _task(spec)
    usable = np.isfinite(vectors).all(axis=1) if vectors.size else np.ones(len(targets), bool)
    vectors, targets = vectors[usable], targets[usable]
    counts: dict[str, int] = {"n_rows": int(targets.size)}
    if task == "classification":
        counts["n_positive"] = int((targets == 1.0).sum())
        counts["n_negative"] = int((targets == 0.0).sum())
        if min(counts["n_positive"], counts["n_negative"]) < MIN_PER_CLASS:
            raise ConfigError(
                f"{where}: a classifier needs at least {MIN_PER_CLASS} positive and "
                f"{MIN_PER_CLASS} negative rows with a vector, got {counts['n_positive']} "
                f"positive and {counts['n_negative']} negative"
            )
    if targets.size < MIN_ROWS:
        raise ConfigError(
            f"{where}: training needs at least {MIN_ROWS} labelled rows with a vector, "
            f"got {targets.size}"
        )
    train, held = holdout_split(targets, float(spec["holdout"]), task, seed)
    settings = HeadSettings(
        task=task,
        head=spec["head"],
        hidden=int(spec["hidden"]),
        epochs=int(spec["epochs"]),
        batch_size=int(spec["batch_size"]),
        learning_rate=float(spec["learning_rate"]),
        weight_decay=float(spec["weight_decay"]),
    )
    head = train_head(vectors[train], targets[train], settings, seed)
    metrics = heldout_metrics(task, head.predict(vectors[held]), targets[held]) if held.size else {}
    return {
        "task": task,
        "seed": seed,
        **counts,
        "n_without_vector": int((~usable).sum()),
        "n_train": int(train.size),
        "n_heldout": int(held.size),
        "heldout": metrics,
        "width": int(vectors.shape[1]),
        "spec": {k: v for k, v in spec.items() if v is not None},
        "head_": head,
    }
