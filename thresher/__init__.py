"""thresher: choose which training examples to keep.

Stream corpus shards through scorers, select a subset from the scores, and
write the pruned Parquet dataset with a manifest, a dataset card and a report.

The Python API mirrors the command line (see :mod:`thresher.api`)::

    import thresher
    run = thresher.run("examples/curate.yaml")      # thresher run CONFIG
    thresher.score(config)                          # thresher score CONFIG
    thresher.select(run.path, budget=0.2)           # thresher select RUN_DIR --budget 0.2
    run = thresher.load_run("runs/sample")          # .scores .selection .manifest ...
    thresher.report(run.path)                       # thresher report RUN_DIR
    result = thresher.evaluate("examples/eval-digits.yaml")  # thresher eval CONFIG

Names are imported on first use, so ``import thresher`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thresher._version import __version__

__all__ = ["Run", "__version__", "evaluate", "load_run", "report", "run", "score", "select"]

_API = {"run", "score", "select", "load_run", "Run", "evaluate", "report"}

if TYPE_CHECKING:
    from thresher.api import Run, evaluate, load_run, report, run, score, select


def __getattr__(name: str) -> Any:
    if name in _API:
        from thresher import api

        return getattr(api, name)
    raise AttributeError(f"module 'thresher' has no attribute {name!r}")
