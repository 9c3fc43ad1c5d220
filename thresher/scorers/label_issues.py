"""Label issues by confident learning, on out-of-fold probabilities of the proxy.

The labelled rows the proxy trains on (the same sample as the other proxy
scorers: up to ``proxy.max_rows``, run seed) are split into ``n_folds``
folds by a seeded hash of their id (:func:`thresher.keys.id_priority`), so
a row's fold does not depend on order, engine or partitioning. For each
fold, proxies (``proxy.n_seeds`` seeds, the proxy's own training loop) are
trained on the other folds; the fold's rows are predicted by them at
``epoch`` (default: the last), softmax averaged over the seeds. The
learning rate and weight decay are chosen once on the whole sample (or
given); the feature extractor is fitted once on the whole sample (it sees
no labels). Confident learning (:mod:`thresher.models.confident_learning`,
the rule of cleanlab's ``find_label_issues`` with its defaults) then flags
the rows whose label is likely wrong.

Outputs (column ``label_issues`` renamed by ``column:`` renames both):

- ``label_issues``: self-confidence, the out-of-fold probability of the
  given label (cleanlab's default ranking); low means likely mislabelled.
  A CCS ``cutoff_score`` (the hard cutoff drops the lowest) or a ``low``
  band reads it.
- ``label_issues_flagged``: 1.0 for a flagged row, else 0.0; a threshold
  filter keeps the clean rows with ``max: 0.5``.

A row of the fitted set gets the values computed at fit time. A row
outside it (the corpus is larger than ``proxy.max_rows``, or a label the
sample lacked) is predicted by the models of its fold, which never trained
on it, and flagged when its margin reaches the cutoff of a cell the fitted
set flagged (see :func:`~thresher.models.confident_learning.flag_by_cutoffs`).
A row without a label, or whose label has fewer than 2 rows in the sample,
scores NaN (the select stage drops it as ``invalid_score``).

References
----------
Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from thresher._params import Constraints, Integral, Interval
from thresher.devices import configure_torch, resolve_device
from thresher.errors import ConfigError, ScorerError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.keys import id_priority, json_digest, seed_material
from thresher.models.confident_learning import find_label_issues, flag_by_cutoffs
from thresher.models.features import FeatureExtractor, take_rows
from thresher.models.proxy import (
    ProxyModel,
    choose_settings,
    label_key,
    round_scores,
    training_sample,
    write_proxy,
)
from thresher.scorers.proxy import ProxyScorer, class_probabilities, struct_or_array

#: Mixed into the run seed for the fold assignment (independent of other seeded hashes).
FOLD_SALT = 0x4C41424C
#: Fewest rows a label needs in the sample to be scored.
MIN_CLASS_ROWS = 2


def assign_folds(ids: pa.Array | pa.ChunkedArray, n_folds: int, seed: int) -> NDArray[np.int64]:
    """Fold of each id, ``0..n_folds-1``, from a seeded hash of the id alone."""
    priority = id_priority(ids, seed_material(seed, FOLD_SALT))
    return (priority % np.uint64(n_folds)).astype(np.int64)


class LabelIssuesScorer(ProxyScorer):
    """Self-confidence of the given label and a confident-learning label-issue flag.

    Parameters
    ----------
    proxy : dict, optional
        Proxy classifier settings (:class:`thresher.models.proxy.ProxyConfig`).
    n_folds : int
        Folds of the out-of-fold predictions (at least 2).
    epoch : int, optional
        Epoch whose checkpoints predict (default: the last, ``proxy.epochs``).
    device : str
        ``"auto"`` (Spark's GPU, else CUDA, else CPU), ``"cpu"`` or ``"cuda:N"``.
    """

    name: ClassVar[str] = "label_issues"
    transient_attributes: ClassVar[tuple[str, ...]] = ("models_", "fitted_", "meta_")
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "n_folds": [Interval(Integral, 2, 100)],
        "epoch": [Interval(Integral, 1, None), None],
    }

    def __init__(
        self,
        proxy: dict[str, Any] | None = None,
        n_folds: int = 5,
        epoch: int | None = None,
        device: str = "auto",
    ) -> None:
        self.proxy = proxy
        self.n_folds = n_folds
        self.epoch = epoch
        self.device = device

    @property
    def input_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.proxy_config.features.input_column, S.LABEL, S.ID)

    def _check_together(self) -> None:
        super()._check_together()
        epochs = self.proxy_config.epochs
        if self.epoch is not None and not 1 <= self.epoch <= epochs:
            raise ConfigError(f"{self.name}.epoch: {self.epoch!r} is not in 1..{epochs}")

    @property
    def chosen_epoch(self) -> int:
        return self.proxy_config.epochs if self.epoch is None else self.epoch

    def output_fields(self, column: str) -> list[pa.Field]:
        return [pa.field(column, pa.float64()), pa.field(f"{column}_flagged", pa.float64())]

    # -- fit ---------------------------------------------------------------------------
    def fit(self, context: FitContext) -> None:
        """Train the fold proxies, predict each fold, flag by confident learning."""
        self.validate_params()
        config = self.proxy_config
        key = json_digest(
            {
                "config": config.model_dump(mode="json"),
                "n_folds": self.n_folds,
                "epoch": self.chosen_epoch,
                "seed": context.seed,
            }
        )
        directory = context.artifact_dir / f"label-issues-{key}"
        self.fit_path_ = str(directory)
        if (directory / "label_issues.json").is_file():
            return
        shutil.rmtree(directory, ignore_errors=True)  # an interrupted fit starts again
        directory.mkdir(parents=True)
        sample = training_sample(context, config)
        keys = [label_key(v) for v in sample.column(S.LABEL).to_pylist()]
        counts = Counter(k for k in keys if k is not None)
        classes = sorted(k for k, c in counts.items() if c >= MIN_CLASS_ROWS)
        if len(classes) < 2:
            raise ScorerError(
                f"label_issues needs at least 2 label classes of {MIN_CLASS_ROWS}+ rows, "
                f"found {classes} in {sample.num_rows} labelled sampled rows"
            )
        index = {label: i for i, label in enumerate(classes)}
        kept = np.asarray([k in index for k in keys])
        sample = sample.filter(pa.array(kept))
        targets = np.asarray([index[k] for k in keys if k in index], dtype=np.int64)
        folds = assign_folds(sample.column(S.ID), self.n_folds, context.seed)
        if np.unique(folds).size < self.n_folds:
            raise ScorerError(
                f"label_issues: {sample.num_rows} labelled rows leave a fold of the "
                f"{self.n_folds} empty; lower n_folds"
            )
        extractor = FeatureExtractor(config.features).fit(sample, context)
        matrix = extractor.transform(sample)
        train_device = str(configure_torch(resolve_device(self.device)))
        settings = choose_settings(
            matrix, targets, len(classes), config, context.seed, train_device
        )
        probs = np.zeros((sample.num_rows, len(classes)))
        for fold in range(self.n_folds):
            train = np.flatnonzero(folds != fold)
            write_proxy(
                directory / f"fold-{fold}",
                sample.take(pa.array(train)),
                extractor,
                take_rows(matrix, train),
                targets[train],
                classes,
                config,
                settings,
                seed_material(context.seed, fold),
                train_device,
            )
            rows = np.flatnonzero(folds == fold)
            model = self._load_fold(directory, fold)
            probs[rows] = _probabilities(model, sample.take(pa.array(rows)))
        issues = find_label_issues(targets, probs)
        self_confidence = probs[np.arange(targets.size), targets]
        pq.write_table(
            pa.table(
                {
                    S.ID: sample.column(S.ID),
                    "label_index": targets,
                    "fold": folds,
                    "self_confidence": self_confidence,
                    "flagged": issues.flagged,
                    "probs": pa.array(list(probs), pa.list_(pa.float64())),
                }
            ),
            directory / "out_of_fold.parquet",
        )
        metadata = {
            "classes": classes,
            "n_folds": self.n_folds,
            "seed": context.seed,
            "epoch": self.chosen_epoch,
            "learning_rate": settings[0],
            "weight_decay": settings[1],
            "holdout_accuracy": settings[3],
            "n_rows": int(targets.size),
            "n_flagged": int(issues.flagged.sum()),
            "out_of_fold_accuracy": float(np.mean(probs.argmax(axis=1) == targets)),
            "thresholds": issues.thresholds.tolist(),
            "confident_joint": issues.confident_joint.tolist(),
            "prune_counts": issues.prune_counts.tolist(),
            "cutoffs": [[None if np.isnan(v) else float(v) for v in r] for r in issues.cutoffs],
        }
        (directory / "label_issues.json").write_text(json.dumps(metadata, indent=2))

    def _load_fold(self, directory: Path, fold: int) -> ProxyModel:
        return ProxyModel.load(
            directory / f"fold-{fold}",
            epochs=[self.chosen_epoch],
            device=resolve_device(self.device),
        )

    # -- scoring -------------------------------------------------------------------------
    def setup(self) -> None:
        if getattr(self, "meta_", None) is not None:
            return
        path = getattr(self, "fit_path_", None)
        if path is None:
            raise ScorerError(f"scorer {self.name!r} is not fitted: call fit() before setup()")
        directory = Path(path)
        self.meta_ = json.loads((directory / "label_issues.json").read_text())
        table = pq.read_table(
            directory / "out_of_fold.parquet",
            columns=[S.ID, "label_index", "self_confidence", "flagged"],
        )
        self.fitted_ = {
            row_id: (label, confidence, flagged)
            for row_id, label, confidence, flagged in zip(
                *(table.column(c).to_pylist() for c in table.column_names), strict=True
            )
        }
        self.models_: dict[int, ProxyModel] = {}

    def _model_of(self, fold: int) -> ProxyModel:
        if fold not in self.models_:
            self.models_[fold] = self._load_fold(Path(self.fit_path_), fold)
        return self.models_[fold]

    def score(self, batch: pa.RecordBatch) -> pa.Array:
        self.setup()
        n = batch.num_rows
        confidence, flagged = np.full(n, np.nan), np.full(n, np.nan)
        index = {label: i for i, label in enumerate(self.meta_["classes"])}
        keys = [
            label_key(v) for v in batch.column(batch.schema.get_field_index(S.LABEL)).to_pylist()
        ]
        labels = np.asarray([index.get(k, -1) if k is not None else -1 for k in keys])
        ids = batch.column(batch.schema.get_field_index(S.ID))
        outside = []
        for row, (row_id, label) in enumerate(zip(ids.to_pylist(), labels, strict=True)):
            known = self.fitted_.get(row_id)
            if known is not None and known[0] == label:
                confidence[row], flagged[row] = known[1], float(known[2])
            elif label >= 0:
                outside.append(row)
        if outside:
            rows = np.asarray(outside)
            folds = assign_folds(
                pc.take(ids, pa.array(rows)), int(self.meta_["n_folds"]), int(self.meta_["seed"])
            )
            cutoffs = np.array(
                [[np.nan if v is None else v for v in r] for r in self.meta_["cutoffs"]]
            )
            for fold in np.unique(folds):
                part = rows[folds == fold]
                probs = _probabilities(self._model_of(int(fold)), batch.take(pa.array(part)))
                confidence[part] = round_scores(probs[np.arange(part.size), labels[part]])
                flagged[part] = flag_by_cutoffs(labels[part], probs, cutoffs).astype(np.float64)
        return struct_or_array([confidence, flagged], self.output_fields(self.name))


def _probabilities(model: ProxyModel, rows: pa.Table | pa.RecordBatch) -> NDArray[np.float64]:
    """Softmax of the loaded checkpoints, averaged over the seeds, at float32 precision."""
    _, logits = model.forward(model.features(rows))
    probs = class_probabilities(logits).detach().cpu().double().numpy().mean(axis=1)
    return round_scores(probs).reshape(probs.shape)
