"""An eval directory's outputs as tables: what :func:`thresher.evaluate` returns."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from thresher.errors import RunStateError
from thresher.io.files import read_json
from thresher.run_dir import RunDir


class Evaluation:
    """The outputs of ``thresher eval`` in an eval directory (read lazily).

    Attributes
    ----------
    path : Path
        The eval directory (the config's ``run_dir``).
    run_path : Path
        The scoring run (``path / "run"``), a thresher run directory whose
        ``eval/`` holds the files below and whose report shows the curve.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_path = path / "run"
        self.dir = RunDir(self.run_path).eval.as_path()
        if not (self.dir / "results.parquet").is_file():
            raise RunStateError(f"{path} holds no eval results (run thresher eval first)")

    def __repr__(self) -> str:
        return f"Evaluation({str(self.path)!r})"

    @cached_property
    def results(self) -> pd.DataFrame:
        """One row per trained model: ``selector, prune_rate, fraction_kept, seed,
        label_noise, accuracy`` and extra columns (``n_kept``, ``flipped_kept``, ``params``,
        ``distill_alpha`` and ``distill_temperature``: None when not distilled...)."""
        return pq.read_table(self.dir / "results.parquet").to_pandas()

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Mean and std over seeds, paired difference against random, per selector and rate."""
        return pd.read_csv(self.dir / "summary.csv")

    @cached_property
    def search(self) -> pd.DataFrame | None:
        """Validation accuracy of every searched candidate (None when nothing was searched)."""
        path = self.dir / "search.parquet"
        return pq.read_table(path).to_pandas() if path.is_file() else None

    @cached_property
    def record(self) -> dict[str, Any]:
        """``eval.json``: splits, chosen parameters, best selector per rate, timings."""
        return dict(read_json(self.dir / "eval.json"))

    @property
    def best(self) -> pd.DataFrame:
        """Per pruning rate: the best selector (mean accuracy) and its margin over random."""
        from thresher.evaluation.summary import best_by_rate

        return best_by_rate(self.summary)

    @property
    def curve(self) -> Path:
        """The pruning-curve plot (SVG)."""
        return self.dir / "pruning_curve.svg"

    @property
    def report(self) -> Path:
        """The scoring run's report, with the pruning curve."""
        return self.run_path / "report.html"

    @property
    def run(self) -> Any:
        """The scoring run as a :class:`thresher.api.Run` (scores, report...)."""
        from thresher.runs import load_run

        return load_run(self.run_path)


def load_evaluation(path: str | Path) -> Evaluation:
    """Open an eval directory (read only)."""
    return Evaluation(Path(path).expanduser().resolve())
