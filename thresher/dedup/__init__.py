"""Near-duplicate removal: exact pass by content hash, MinHash LSH, clusters and keepers.

Modules (each imported where it is used; the compiled kernels need numba):

- ``shingles``: normalisation, shingles and the MinHash signature kernel;
- ``columns``: signature and content-hash columns as numpy arrays;
- ``lsh``: the S-curve, the choice of bands and rows, band keys;
- ``graph``: buckets, candidate edges inside them (verified), union-find;
- ``keeper``: the deterministic keeper order;
- ``spec``: what an engine needs (``DedupSpec``) and the clusters table;
- ``local`` / ``spark``: the whole dedup on one machine / as Spark jobs.

The dedup stage (``thresher.stages.dedup``) writes ``RUN_DIR/dedup/``; the
select stage drops every non-keeper with reason ``duplicate`` (``thresher.reasons``).
"""

from __future__ import annotations
