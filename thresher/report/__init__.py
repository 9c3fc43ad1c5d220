"""What people read after a run: the HTML report and the dataset card.

- :mod:`thresher.report.data` gathers what the report shows from a run
  directory, :mod:`thresher.report.sampling` reads the big tables in
  bounded memory, :mod:`thresher.report.plots` draws the figures and
  :mod:`thresher.report.html` renders the page (``report.html``);
- :mod:`thresher.report.card` writes the dataset card (``README.md``).

This package is also the public ``thresher.report(run_dir)`` function:
calling the module writes the report and returns its path (a package and
a function cannot share the name ``thresher.report`` otherwise, because
importing a submodule binds the package to that name).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any


def write_report(run_dir: str | Path, output: str | Path | None = None, **options: Any) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``output``); see :func:`thresher.report.html.write_report`."""
    from thresher.report import html

    return html.write_report(run_dir, output, **options)


class _CallableModule(types.ModuleType):
    def __call__(
        self, run_dir: str | Path, output: str | Path | None = None, **options: Any
    ) -> Path:
        """Write the report of ``run_dir`` and return its path (``thresher.report(run_dir)``)."""
        return write_report(run_dir, output, **options)


sys.modules[__name__].__class__ = _CallableModule
