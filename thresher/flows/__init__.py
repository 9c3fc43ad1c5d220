"""Prefect flows: thin wiring of the stages, with retries and per-shard tasks."""

from thresher.flows.curate import curate

__all__ = ["curate"]
