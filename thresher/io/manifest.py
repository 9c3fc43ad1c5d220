"""manifest.json: what a training team needs to trust a pruned dataset.

It records the configuration (secrets redacted: :mod:`thresher.redact`) and
its hash, each input file's fingerprint, package versions, the seed, time
per stage, and counts per stage and reason
that must reconcile: ``input = kept + dropped + quarantined``. With a
``token_count`` column (or a sum budget on another column), ``counts.tokens``
gives the kept and ingested sums and the requested total, read from the
sums the selection stage's executors wrote (``stats.json``), never from rows.
When the selector sets repeat counts (``repeated``: each kept row is used
``repeat`` times, :data:`thresher.io.schema.REPEAT`), ``counts.kept_repeated``
is the kept rows times their repeat, ``counts.tokens.kept`` counts each kept
row's tokens ``repeat`` times (what the budget counts) and
``counts.tokens.kept_unique`` counts them once; ``counts.kept`` stays the
number of distinct kept rows (one row each in the dataset, with its
``repeat`` column). A selector with a mixture adds ``mixture`` (its
step's details: requested and achieved share, repeats and shortfall per
group, :mod:`thresher.stages.mixture`). ``input``
counts the records read; a damaged file skipped under
``input.on_unreadable: skip`` is listed in ``skipped_inputs`` with its error
and the records read before the damage (which count in ``input``).
"""

from __future__ import annotations

import platform
from collections import Counter
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from thresher.io.schema import TOKEN_COLUMN
from thresher.redact import redact_uris

_PACKAGES = (
    "thresher",
    "pyarrow",
    "pyspark",
    "prefect",
    "numpy",
    "pandas",
    "torch",
    "faiss-cpu",
    "datasketch",
    "fasttext-community",
    "pydantic",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_counts(
    shards: list[dict[str, Any]], selection: dict[str, Any], written: int
) -> dict[str, Any]:
    """Counts per stage and reason; ``reconciles`` is the invariant every run must meet."""
    quarantined: Counter[str] = Counter()
    for shard in shards:
        quarantined.update(shard["quarantined_by_reason"])
    n_input = sum(s["rows_in"] for s in shards)
    n_quarantined = sum(quarantined.values())
    kept, dropped = selection["kept"], selection["dropped"]
    tokens = token_counts(selection)
    return {
        **({"tokens": tokens} if tokens is not None else {}),
        "input": n_input,
        "quarantined": {"total": n_quarantined, "by_reason": dict(sorted(quarantined.items()))},
        "ingested": selection["ingested"],
        "dropped": {"total": dropped, "by_reason": selection["dropped_by_reason"]},
        "kept": kept,
        **({"kept_repeated": selection["kept_repeated"]} if selection.get("repeated") else {}),
        "written": written,
        "reconciles": n_input == kept + dropped + n_quarantined and written == kept,
        "skipped_inputs": sum(1 for s in shards if s.get("unreadable")),
    }


def token_counts(selection: dict[str, Any]) -> dict[str, Any] | None:
    """Kept and ingested sums of the budget's column (else ``token_count``), and the request.

    ``{"column", "kept", "ingested", "requested"}`` (``requested`` None for a
    row budget; ``kept`` counts each kept row ``repeat`` times, and
    ``kept_unique`` counts it once when the selector sets repeat counts),
    from the selection summary's per-shard sums; None when the run has no
    such column.
    """
    budget = selection.get("budget")
    column = budget["sum"] if isinstance(budget, dict) else TOKEN_COLUMN
    sums = (selection.get("sums") or {}).get(column)
    if sums is None:
        return None
    return {
        "column": column,
        "kept": sums["kept"],
        **({"kept_unique": sums["kept_unique"]} if "kept_unique" in sums else {}),
        "ingested": sums["ingested"],
        "requested": budget["total"] if isinstance(budget, dict) else None,
    }


def skipped_inputs(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The damaged input files a run skipped: name, error and the records read before it."""
    return [
        {
            "path": redact_uris(s["name"]),
            "error": redact_uris(str(s["unreadable"]["error"])),
            "rows_read": s["rows_in"],
        }
        for s in sorted(shards, key=lambda s: s["name"])
        if s.get("unreadable")
    ]


def _mixture(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"mixture": ...}``: the selector's requested and achieved shares per group, if it mixes."""
    details = (steps[-1].get("details") or {}) if steps else {}
    mixture = details.get("mixture") if isinstance(details, dict) else None
    return {"mixture": mixture} if mixture is not None else {}


def build_manifest(
    config: dict[str, Any],
    config_hash: str,
    seed: int,
    engine: str,
    shards: list[dict[str, Any]],
    selection: dict[str, Any],
    written: int,
    timings: dict[str, float],
    version: str,
    added_by: dict[str, str] | None = None,
    decontamination: dict[str, Any] | None = None,
    redactions: dict[str, Any] | None = None,
    output: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a published version (see module docstring).

    ``config`` is the configuration as recorded (secrets redacted:
    ``RunConfig.recorded_dict``), ``config_hash`` its hash and ``seed`` the
    run's seed.
    ``added_by`` maps a shard's name to the run that first ingested it (a
    corpus that grows between runs); ``decontamination`` is the rule and
    the per-evaluation-set counts of the decontaminate stage, when it ran;
    ``redactions`` what the published text was redacted of (the counts
    column, the placeholders, the total per kind, the documents with at
    least one), when the config asks for redaction; ``output`` the
    training hand-off's splits, files and formats, when the config asks
    for one.
    """
    counts = build_counts(shards, selection, written)
    return {
        "thresher_manifest_version": 2,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": version,
        "data": f"versions/{version}/data/",
        "config": config,
        "config_hash": config_hash,
        "seed": seed,
        "engine": engine,
        "inputs": [
            {
                "index": s["index"],
                "path": redact_uris(s["name"]),
                "format": s["format"],
                "fingerprint": s.get("fingerprint"),
                "content": s.get("content"),
                "added_by": (added_by or {}).get(s["name"]),
                "rows": s["rows_in"],
                "ingested": s["ingested"],
                "quarantined": s["quarantined"],
                **(
                    {
                        "unreadable": {
                            **s["unreadable"],
                            "error": redact_uris(str(s["unreadable"]["error"])),
                        }
                    }
                    if s.get("unreadable")
                    else {}
                ),
            }
            for s in sorted(shards, key=lambda s: s["name"])
        ],
        "skipped_inputs": skipped_inputs(shards),
        "versions": package_versions(),
        "counts": counts,
        "selection_steps": selection["steps"],
        "weighted": selection["weighted"],
        "repeated": bool(selection.get("repeated")),
        **_mixture(selection["steps"]),
        "seconds_per_stage": {k: round(v, 3) for k, v in timings.items()},
        **({"decontamination": decontamination} if decontamination is not None else {}),
        **({"redactions": redactions} if redactions is not None else {}),
        **({"output": output} if output is not None else {}),
    }
