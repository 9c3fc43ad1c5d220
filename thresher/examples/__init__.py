"""Data for the demo, the examples, the tests and the benchmarks (nothing a run imports).

- :mod:`thresher.examples.sample_corpus`: a seeded synthetic corpus with known
  planted defects; ``python -m thresher.examples.sample_corpus OUT_DIR``.
"""
