"""The engines a run config may name, and where each one's class lives.

Kept apart from :mod:`thresher.engines` so that :mod:`thresher.config` checks an
engine name without importing the engines, which themselves read their config
sections.
"""

from __future__ import annotations

#: Engine name -> "module:class"; the module is imported only when the engine is made.
ENGINES = {
    "local": "thresher.engines.local:LocalEngine",
    "spark": "thresher.engines.spark:SparkEngine",
}
