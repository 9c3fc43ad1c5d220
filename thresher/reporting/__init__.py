"""What people read after a run: the HTML report and the dataset card.

- :mod:`thresher.reporting.data` gathers what the report shows from a run
  directory's statistics, :mod:`thresher.reporting.sampling` reads the few
  example documents, :mod:`thresher.reporting.plots` draws the figures and
  :mod:`thresher.reporting.html` renders the page (``report.html``);
- :mod:`thresher.reporting.card` writes the dataset card (``README.md``);
- :mod:`thresher.reporting.console` prints ``thresher inspect``.

``thresher.report(run_dir)`` (:func:`thresher.api.report`) writes the report.
"""
