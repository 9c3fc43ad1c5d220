"""A run config resolved once: what every stage of a run is built from.

The config (:class:`~thresher.config.RunConfig`) stays pure data: parsed,
checked, recorded. A :class:`Plan` is made from it once per run and holds
what the stages need, built once: the run directory, the keys earlier
results depend on, the selector steps (each selector instantiated once,
with its budget), the dedup spec, the evaluation sets' section. Each stage
is handed the slice it uses (:func:`thresher.flows.curate.stages_for`), not
the whole config.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from thresher.config import RunConfig, SelectorConfig
from thresher.keys import json_digest
from thresher.run_dir import RunDir

if TYPE_CHECKING:
    from thresher.dedup.spec import DedupSpec
    from thresher.selectors import Selector

#: A selection step: its config (name, params, budget, partitions) and its selector.
Step = tuple[SelectorConfig, "Selector"]


def run_keys(config: RunConfig) -> dict[str, str]:
    """What earlier results in a run directory depend on (see RunDir.prepare).

    Inputs are not among them: they are checked shard by shard, by name and
    fingerprint, so a corpus may grow and a run directory may move.
    """
    data = config.config_dict()
    # A cap refuses a shard, it never changes an ingested row: not part of the key.
    schema = {k: v for k, v in data["schema"].items() if k != "max_passthrough_columns"}
    return {
        "schema": json_digest([schema, data["input"]["format"]]),
        "scorers": json_digest([data["scorers"], data["seed"]]),
    }


@dataclass(frozen=True)
class Plan:
    """A config resolved for one run (see module docstring)."""

    config: RunConfig

    @cached_property
    def run(self) -> RunDir:
        return RunDir(self.config.run_path)

    @cached_property
    def keys(self) -> dict[str, str]:
        return run_keys(self.config)

    @cached_property
    def steps(self) -> tuple[Step, ...]:
        """The filters, then the selector, each with its selector built once."""
        from thresher.selectors import make_selector

        configured = [*self.config.filters, self.config.selector]
        return tuple((step, make_selector(step.name, step.params)) for step in configured)

    @cached_property
    def dedup(self) -> DedupSpec | None:
        from thresher.stages.dedup import dedup_spec

        return dedup_spec(self.config) if self.config.dedup is not None else None

    @property
    def weighted(self) -> bool:
        """Whether the final selector defines importance weights (a column of the dataset)."""
        return bool(self.steps[-1][1].defines_weights)

    def where(self, number: int) -> str:
        """A step's field in the config: ``filters[i]`` or ``selector``."""
        return "selector" if number == len(self.config.filters) else f"filters[{number}]"

    def recorded(self) -> dict[str, Any]:
        """The config as recorded in the run directory and the manifest (secrets redacted)."""
        return self.config.recorded_dict()
