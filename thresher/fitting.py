"""What a model is fitted with: the context a scorer's ``fit`` receives.

It lives below both ``thresher.models`` (which trains the models) and
``thresher.scorers`` (which fits them through the models' trainers), so
that neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa


@dataclass(frozen=True)
class FitContext:
    """What a scorer may use to fit its model, once per run, on the driver.

    ``sample(n, columns, seed)`` returns up to ``n`` ingested rows drawn
    uniformly at random (deterministic for a seed) with the canonical
    columns (``id``, ``text``, ``label``...). ``artifact_dir`` is a local
    directory reserved for this scorer (under the run's ``models/``, or
    this machine's copy of it when the run directory is on an object
    store); what is saved there is reused on resume.
    """

    artifact_dir: Path
    sample: Callable[[int, list[str], int], pa.Table]
    n_rows: int
    seed: int
    device: str = "cpu"
