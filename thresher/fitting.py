"""What a model is fitted with: the context a scorer's ``fit`` receives.

It lives below both ``thresher.models`` (which trains the models) and
``thresher.scorers`` (which fits them through the models' trainers), so
that neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from thresher.io import schema as S


@dataclass(frozen=True)
class Derived:
    """How to compute a column that another scorer of the run writes, on rows given to it.

    ``compute(table)`` returns one value per row of ``table``, which must
    hold the ``inputs`` columns (ingested columns, or e.g. ``text`` alone
    for documents read from files). ``fingerprint`` changes whenever the
    scorers behind the column change (their names, columns or parameters),
    so a model fitted on the column can tell that it must be fitted again.
    """

    inputs: tuple[str, ...]
    compute: Callable[[pa.Table], pa.Array]
    fingerprint: str


@dataclass(frozen=True)
class FitContext:
    """What a scorer may use to fit its model, once per run, on the driver.

    ``sample(n, columns, seed)`` returns up to ``n`` ingested rows drawn
    uniformly at random (deterministic for a seed) with the canonical
    columns (``id``, ``text``, ``label``...). ``artifact_dir`` is a local
    directory reserved for this scorer (under the run's ``models/``, or
    this machine's copy of it when the run directory is on an object
    store); what is saved there is reused on resume. ``derived`` maps the
    output columns of the run's scorers fitted before this one (those whose
    outputs it reads come first) to how to compute them: a scorer that reads
    another scorer's output (an embedding) computes it on its training rows.
    """

    artifact_dir: Path
    sample: Callable[[int, list[str], int], pa.Table]
    n_rows: int
    seed: int
    device: str = "cpu"
    derived: Mapping[str, Derived] = field(default_factory=dict)

    @classmethod
    def of_table(cls, table: pa.Table, artifact_dir: Path, seed: int = 0) -> FitContext:
        """A context whose ``sample`` draws from ``table`` as the fit stage draws from a run.

        For fitting a scorer on rows in memory (a notebook, a benchmark, a
        test); ``artifact_dir`` is created.
        """

        def sample(n: int, columns: list[str], sample_seed: int) -> pa.Table:
            rng = np.random.default_rng(sample_seed)
            rows = np.sort(rng.choice(table.num_rows, size=min(n, table.num_rows), replace=False))
            wanted = [
                c for c in dict.fromkeys([*columns, S.SHARD, S.ROW]) if c in table.column_names
            ]
            return table.take(pa.array(rows)).select(wanted)

        artifact_dir.mkdir(parents=True, exist_ok=True)
        return cls(artifact_dir=artifact_dir, sample=sample, n_rows=table.num_rows, seed=seed)
