"""The Spark engine's config section (``engine.spark``), apart from the engine: no pyspark here.

Config validation imports this module through the engine registry
(:mod:`thresher.engines.registry`) to check a run config's ``engine.spark``
section; the engine itself (:mod:`thresher.engines.spark`) is imported only
when a run uses it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SparkConfig(BaseModel):
    """Spark session settings.

    ``master`` is ``local[N]`` or a cluster URL (``spark://``, ``k8s://``).
    Left out, it is the master given to ``spark-submit`` when thresher runs
    under it (``infra/spark/thresher-submit``), else ``local[*]``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    master: str | None = None
    app_name: str = "thresher"
    conf: dict[str, str] = Field(default_factory=dict)
