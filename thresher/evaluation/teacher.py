"""The distillation teacher: one full-pool model per eval, trained once, its logits on disk.

With ``eval.model.distill`` set, every subset's model (the student) learns
from the soft predictions of a teacher trained on the whole pool: the rows
the ``full`` reference trains on, with the same (tuned) settings, but its
own seed: ``SeedSequence([run seed, 3]).generate_state(1)[0]`` (code 3
beside the validation split's 1 and the test split's 2 of
:class:`thresher.evaluation.jobs.Seeds`), so that it is not the ``full``
model of any seed. Students read its logits on every pool row (float32, in
score-table order).

The teacher is trained once per eval and stored as
``RUN_DIR/run/eval/teacher/teacher-<key>.safetensors`` (its weights and
``logits``, written atomically), where ``key`` digests what determines it:
the features (and so the splits), the scoring configuration (its filters
decide the rows), the downstream settings other than ``distill`` and the
seed. A resumed eval, another Prefect task or another thread finds the file
and reuses it; within a process the logits are read once. Training is
serialised by a lock, so concurrent jobs never train it twice.

References
----------
Ben-Baruch, Botach, Kviatkovsky, Aggarwal and Medioni, "Distilling the
Knowledge in Data Pruning", ICML 2025, arXiv:2403.07854.
Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531, 2015.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from thresher.errors import RunStateError
from thresher.evaluation.config import EvalConfig, scoring_config
from thresher.evaluation.features import features_dir
from thresher.io.files import read_json
from thresher.models._safe import load_safetensors, safetensors_metadata
from thresher.run_dir import RunDir

#: The seed code of the teacher (the validation split is 1, the test split 2).
TEACHER_CODE = 3
#: Downstream settings that do not change the teacher (the grids only lead to ``lr``/``weight_decay``).
_NOT_TEACHER = {"distill", "lr_grid", "weight_decay_grid"}

_LOGITS: dict[tuple[str, int], NDArray[np.float32]] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Teacher:
    """A trained teacher: its weights, its logits on every pool row, and what to record of it.

    ``record`` holds JSON values (``rows`` trained on, accuracies...).
    """

    weights: dict[str, NDArray[np.float32]]
    logits: NDArray[np.float32]
    record: dict[str, Any]


def teacher_seed(run_seed: int) -> int:
    """The teacher's model seed (initial weights, batch order) for the run seed."""
    return int(np.random.SeedSequence([int(run_seed), TEACHER_CODE]).generate_state(1)[0])


def teacher_key(config: EvalConfig) -> str:
    """A digest of what determines the teacher (the features must have been computed)."""
    features = features_dir(config) / "features.json"
    if not features.is_file():
        raise RunStateError(f"{features} is missing: compute the eval features first")
    model = config.eval.model.model_dump(mode="json", exclude=_NOT_TEACHER)
    scoring = scoring_config(config).config_dict()
    return config.digest(read_json(features)["key"], scoring, model, teacher_seed(config.run.seed))


def teacher_path(config: EvalConfig) -> Path:
    """Where the eval's teacher is stored (``eval/teacher/teacher-<key>.safetensors``)."""
    eval_dir = RunDir(config.root / "run").eval.as_path()
    return eval_dir / "teacher" / f"teacher-{teacher_key(config)}.safetensors"


def ensure_teacher(
    config: EvalConfig, train: Callable[[EvalConfig], Teacher]
) -> tuple[dict[str, Any], bool]:
    """Train and store the teacher unless stored; its record and whether it was trained now.

    ``train(config)`` trains it (:func:`thresher.evaluation.jobs.train_teacher`).
    A teacher stored under another key (an earlier configuration) is removed.
    """
    path = teacher_path(config)
    with _LOCK:
        trained = _ensure(path, config, train)
    return _record(path), trained


def teacher_logits(
    config: EvalConfig, train: Callable[[EvalConfig], Teacher]
) -> NDArray[np.float32]:
    """The teacher's logits on every pool row, shape ``(n_pool, n_classes)`` (read once per process).

    Trains and stores the teacher first when it is not stored (``train`` as
    in :func:`ensure_teacher`).
    """
    path = teacher_path(config)
    with _LOCK:
        _ensure(path, config, train)
        key = (str(path), path.stat().st_mtime_ns)
        if key not in _LOGITS:
            _LOGITS.clear()  # an earlier teacher's logits
            logits = load_safetensors(path, error=RunStateError)["logits"]
            _LOGITS[key] = np.ascontiguousarray(logits, dtype=np.float32)
        return _LOGITS[key]


def _ensure(path: Path, config: EvalConfig, train: Callable[[EvalConfig], Teacher]) -> bool:
    """Train and write the teacher at ``path`` unless it is there (the caller holds the lock)."""
    if path.is_file():
        return False
    teacher = train(config)
    if not np.isfinite(teacher.logits).all():
        raise RunStateError(
            "the distillation teacher's logits are not finite (it diverged); lower "
            "eval.model.lr or give a smaller learning-rate grid"
        )
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {**teacher.weights, "logits": np.ascontiguousarray(teacher.logits, np.float32)}
    key = path.stem.removeprefix("teacher-")
    record = {**teacher.record, "key": key, "seed": teacher_seed(config.run.seed)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(arrays, str(tmp), metadata={"record": json.dumps(record, sort_keys=True)})
    tmp.replace(path)
    for other in path.parent.glob("teacher-*.safetensors"):
        if other != path:  # an earlier configuration's teacher
            other.unlink(missing_ok=True)
    return True


def _record(path: Path) -> dict[str, Any]:
    record = json.loads(safetensors_metadata(path, error=RunStateError).get("record", "{}"))
    return {**record, "file": str(path)}
