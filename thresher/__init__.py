"""thresher: choose which training examples to keep.

Stream corpus shards through scorers, select a subset from the scores, and
write the pruned Parquet dataset with a manifest and a dataset card.
"""

from __future__ import annotations

__version__ = "0.1.0"
