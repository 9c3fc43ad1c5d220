"""Dedup stage: from the stored MinHash columns to ``RUN_DIR/dedup/`` (clusters and summary).

Runs after scoring and before selection, on either engine. Its result is
keyed by the dedup configuration and the scorers: a re-run with the same
configuration reuses it, a changed ``dedup`` section recomputes it from the
stored scores (scores are never recomputed for it). The directory is
built under ``_staging/`` and published whole, so ``dedup/`` always holds
one complete result.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from typing import TYPE_CHECKING, Any

from thresher.config import RunConfig
from thresher.dedup.lsh import choose_bands_rows, describe
from thresher.dedup.spec import SUMMARY_FILE, DedupSpec, KeeperKey
from thresher.errors import ConfigError
from thresher.io.files import publish_directory, read_json, write_json_atomic
from thresher.run_dir import RunDir
from thresher.scorers import make_scorer

if TYPE_CHECKING:
    from thresher.engines.base import Engine


def dedup_spec(config: RunConfig) -> DedupSpec:
    """The engine-independent description of the configured dedup (bands and rows resolved)."""
    dedup = config.dedup
    if dedup is None:
        raise ConfigError("dedup: not configured")
    (scorer,) = [s for s in config.scorers if s.output_column == dedup.signature]
    num_perm = int(make_scorer(scorer.name, scorer.params).get_params()["num_perm"])
    if dedup.bands == "auto":
        try:
            lsh = choose_bands_rows(dedup.threshold, num_perm, dedup.min_recall)
        except ValueError as error:
            raise ConfigError(f"dedup: {error}") from None
    else:
        lsh = describe(dedup.threshold, int(dedup.bands), int(dedup.rows))
    keeper = (
        tuple(KeeperKey(k.score, k.order == "desc") for k in dedup.keeper)
        if dedup.keeper is not None
        else (KeeperKey(f"{dedup.signature}_length", descending=True),)
    )
    return DedupSpec(
        signature=dedup.signature,
        num_perm=num_perm,
        threshold=dedup.threshold,
        bands=lsh.bands,
        rows=lsh.rows,
        verify=dedup.verify,
        exact=dedup.exact,
        keeper=keeper,
    )


def dedup_key(config: RunConfig, shard_indices: list[int]) -> str:
    """What a stored dedup result depends on: the dedup section, the scorers, the shards."""
    data = config.config_dict()
    payload = json.dumps(
        [data["dedup"], data["scorers"], data["seed"], sorted(shard_indices)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def dedup_to_run(config: RunConfig, engine: Engine, shard_indices: list[int]) -> dict[str, Any]:
    """Deduplicate the stored scores unless an identical dedup result is already there.

    Returns the summary (also ``dedup/summary.json``); ``reused`` tells
    whether it was computed now.
    """
    run = RunDir(config.run_path)
    spec = dedup_spec(config)
    key = dedup_key(config, shard_indices)
    summary_path = run.dedup / SUMMARY_FILE
    if summary_path.is_file():
        stored: dict[str, Any] = read_json(summary_path)
        if stored.get("key") == key:
            return {**stored, "reused": True}
    staging = run.staging / f"dedup-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        summary = engine.dedup(shard_indices, spec, str(run.root), str(staging))
        summary = {**summary, "key": key, "spec": spec.to_dict()}
        write_json_atomic(summary, staging / SUMMARY_FILE)
        publish_directory(staging, run.dedup)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**summary, "reused": False}


def clear_dedup(config: RunConfig) -> None:
    """Remove a dedup result left by an earlier run when this run has no ``dedup`` section."""
    run = RunDir(config.run_path)
    if config.dedup is None and run.dedup.exists():
        shutil.rmtree(run.dedup)
