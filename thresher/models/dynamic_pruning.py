"""Dynamic data pruning: the model prunes its own training pool by EL2N as it learns.

A static selector chooses a subset once, from scores computed before
training. Dynamic pruning trains the model itself on the whole pool and,
every ``every`` epochs (of the rows it is training on), scores *every* row
of the pool with the model as it is at that moment, by EL2N
(``|| softmax(f(x)) - onehot(y) ||_2``), and keeps the ``keep`` highest (the
hardest, the rows still worth learning from) for the next period; the rows
dropped at one rescoring can come back at the next. Which rows matter
changes as the model learns, and the scores come for free from the model
being trained: no proxy, no scoring pass before training.

The first period trains on the whole pool, as Attendu and Corbeil's
initial fine-tuning phase on the full training set does: EL2N of an
untrained model says nothing ("BERT on a Data Diet" finds that text needs
at least an epoch). Its batches are those of a model trained on the whole
pool with the same seed (:func:`thresher.models.classifier.batch_rows` from
the same generator), so until the first rescoring the two models are the
same model. Training lasts exactly the steps it is given whatever the
subset's size, the fixed-steps protocol every static subset follows;
the last period is cut short at the last step.

EL2N is computed in float64 and rounded to float32 precision, and ties go
to the earlier row: the same rows are kept at any thread count, whatever
order BLAS sums in.

References
----------
Attendu and Corbeil, "NLU on Data Diets: Dynamic Data Subset Selection for
NLP Classification Tasks", SustaiNLP 2023.
Raju, Daruwalla and Lipasti, "Accelerating Deep Learning with Dynamic Data
Pruning", 2021.
Paul, Ganguli and Dziugaite, "Deep Learning on a Data Diet: Finding
Important Examples Early in Training", NeurIPS 2021 (EL2N).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from thresher.models.classifier import (
    PREDICT_ROWS,
    Classifier,
    SGDSettings,
    SoftTargets,
    _tensors,
    batch_rows,
    train_classifier,
)
from thresher.models.features import Matrix, n_rows, take_rows

#: The eval's name of dynamic pruning by EL2N (``eval.selectors``; not a curate selector).
DYNAMIC_EL2N = "dynamic_el2n"


class DynamicParams(BaseModel):
    """Parameters of ``dynamic_el2n``: ``every`` epochs of the current rows between rescorings.

    ``every`` may be a fraction (0.5: rescore twice an epoch); a period is
    at least one step.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: float = Field(default=1.0, gt=0.0, strict=True)


def dynamic_params(params: Mapping[str, Any]) -> DynamicParams:
    """``params`` checked as :class:`DynamicParams`; ValueError naming the bad parameter."""
    try:
        return DynamicParams.model_validate(dict(params))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'][:1]) or 'params'}: {e['msg']}"
            for e in error.errors()
        )
        raise ValueError(
            f"{DYNAMIC_EL2N} params: {problems} (its parameters: "
            f"{', '.join(DynamicParams.model_fields)})"
        ) from None


def period_steps(n: int, batch_size: int, every: float) -> int:
    """Steps in ``every`` epochs of ``n`` rows, batched as :func:`batch_rows` batches (at least one)."""
    per_epoch = n // min(batch_size, n)
    return max(1, round(every * per_epoch))


def el2n(model: Classifier, matrix: Matrix, targets: NDArray[np.int64]) -> NDArray[np.float64]:
    """EL2N of every row under ``model`` as it is now, in float64 rounded to float32 precision."""
    import torch

    exact = Classifier(
        {name: w.detach().to(torch.float64) for name, w in model.weights.items()},
        model.n_classes,
    )
    device = exact.weights["out.weight"].device
    n = n_rows(matrix)
    out = np.empty(n, dtype=np.float64)
    with torch.no_grad():
        for start in range(0, n, PREDICT_ROWS):
            rows = np.arange(start, min(n, start + PREDICT_ROWS))
            logits = exact.logits(_tensors(take_rows(matrix, rows), device))
            labels = torch.from_numpy(np.asarray(targets[rows], dtype=np.int64)).to(device)
            residual = torch.softmax(logits, dim=1) - torch.nn.functional.one_hot(
                labels, model.n_classes
            )
            out[rows] = residual.norm(dim=1).cpu().numpy()
    return out.astype(np.float32).astype(np.float64)


def hardest(scores: NDArray[np.float64], keep: int) -> NDArray[np.int64]:
    """Positions of the ``keep`` highest scores (ties: the earlier row; NaN last), increasing."""
    order = np.lexsort((np.arange(scores.size), -scores))
    return np.sort(order[:keep]).astype(np.int64)


@dataclass(frozen=True)
class Period:
    """``steps`` training steps from step ``start`` on the pool rows ``rows`` (positions, increasing)."""

    start: int
    steps: int
    rows: NDArray[np.int64]


class DynamicSchedule:
    """The batches of dynamically pruned training, made as the model trains (see module docstring).

    Called with the model being trained (``batches`` of
    :func:`thresher.models.classifier.train_classifier`), it yields the row
    positions of each of ``steps`` steps. ``periods`` records each period's
    rows, ``trained`` which rows were in some batch, ``score_seconds`` the
    time spent rescoring.
    """

    def __init__(
        self,
        matrix: Matrix,
        targets: NDArray[np.int64],
        keep: int,
        every: float,
        batch_size: int,
        steps: int,
        seed: int,
    ) -> None:
        n = n_rows(matrix)
        if not 1 <= keep <= n:
            raise ValueError(f"keep must be in 1..{n} (the pool's rows), got {keep}")
        self.matrix = matrix
        self.targets = targets
        self.keep = keep
        self.every = every
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.periods: list[Period] = []
        self.trained = np.zeros(n, dtype=bool)
        self.score_seconds = 0.0

    @property
    def rescorings(self) -> int:
        """How many times the pool was rescored (each starts a period)."""
        return max(0, len(self.periods) - 1)

    def __call__(self, model: Classifier) -> Iterator[NDArray[np.int64]]:
        self.periods = []
        self.trained[:] = False
        self.score_seconds = 0.0
        # the batch order of a whole-pool model of this seed: the first period is that model
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), 1]))
        rows = np.arange(n_rows(self.matrix), dtype=np.int64)
        done = 0
        while done < self.steps:
            length = min(period_steps(rows.size, self.batch_size, self.every), self.steps - done)
            self.periods.append(Period(done, length, rows))
            for batch in batch_rows(rows.size, self.batch_size, length, rng):
                self.trained[rows[batch]] = True
                yield rows[batch]
            done += length
            if done < self.steps:
                started = time.perf_counter()
                rows = hardest(el2n(model, self.matrix, self.targets), self.keep)
                self.score_seconds += time.perf_counter() - started


def train_dynamic(
    matrix: Matrix,
    targets: NDArray[np.int64],
    n_classes: int,
    hidden: int,
    settings: SGDSettings,
    seed: int,
    keep: int,
    every: float,
    *,
    device: str = "cpu",
    soft_targets: SoftTargets | None = None,
) -> tuple[Classifier, DynamicSchedule]:
    """Train a classifier for ``settings.steps`` steps, pruning to the ``keep`` hardest rows.

    Parameters
    ----------
    matrix, targets, n_classes, hidden, settings, seed, device
        As :func:`thresher.models.classifier.train_classifier` (the pool's rows).
    keep : int
        Rows trained on after each rescoring, in ``1 .. n``.
    every : float
        Epochs of the current rows between rescorings (> 0).
    soft_targets : SoftTargets, optional
        A distillation teacher's logits on the pool's rows.

    Returns
    -------
    Classifier, DynamicSchedule
        The model and the record of its periods.
    """
    schedule = DynamicSchedule(
        matrix, targets, keep, every, settings.batch_size, settings.steps, seed
    )
    model = train_classifier(
        matrix,
        targets,
        n_classes,
        hidden,
        settings,
        seed,
        device=device,
        batches=schedule,
        soft_targets=soft_targets,
    )
    return model, schedule
