"""The dataset card (README.md of a run), in the Hugging Face dataset card layout."""

from __future__ import annotations

import json
from typing import Any

import yaml


def _counts_table(rows: list[tuple[str, int]]) -> str:
    lines = ["| | records |", "|---|---:|"]
    lines += [f"| {name} | {value:,} |" for name, value in rows]
    return "\n".join(lines)


def _header(manifest: dict[str, Any]) -> str:
    header = {
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}
        ],
        "tags": ["thresher", "data-pruning"],
        "thresher": {"config_hash": manifest["config_hash"], "seed": manifest["seed"]},
    }
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---"


def _sources(manifest: dict[str, Any]) -> str:
    return "\n".join(
        f"- `{i['path']}` ({i['format']}, {i['rows']:,} records, xxh3 `{i['xxh3_64']}`)"
        for i in manifest["inputs"]
    )


def _scorers(config: dict[str, Any]) -> str:
    lines = []
    for scorer in config["scorers"]:
        params = f" {json.dumps(scorer['params'])}" if scorer["params"] else ""
        lines.append(
            f"- `{scorer.get('column') or scorer['name']}`: scorer `{scorer['name']}`{params}"
        )
    return "\n".join(lines) or "- none"


def _steps(manifest: dict[str, Any]) -> str:
    lines = []
    for number, step in enumerate(manifest["selection_steps"], start=1):
        budget = f" (budget {step['budget']})" if step["budget"] is not None else ""
        lines.append(
            f"{number}. **{step['role']}** `{step['step']}`: {step['rows_in']:,} rows in, "
            f"{step['kept']:,} kept{budget}"
        )
    return "\n".join(lines)


def render_card(manifest: dict[str, Any]) -> str:
    """Markdown card: YAML header pointing at the Parquet files, then what was done and counts."""
    counts = manifest["counts"]
    rows = [
        ("input records", counts["input"]),
        ("quarantined (unusable)", counts["quarantined"]["total"]),
        ("dropped", counts["dropped"]["total"]),
        ("kept", counts["kept"]),
        *[(f"dropped: `{r}`", n) for r, n in counts["dropped"]["by_reason"].items()],
        *[(f"quarantined: `{r}`", n) for r, n in counts["quarantined"]["by_reason"].items()],
    ]
    weights = ""
    if manifest.get("weighted"):
        weights = (
            "\nThe column `importance_weight` holds each row's importance weight from the "
            "selector: use it as a sample weight, so that weighted averages over this subset "
            "estimate averages over the full corpus.\n"
        )
    balance = (
        f"{counts['input']:,} = {counts['kept']:,} + {counts['dropped']['total']:,} + "
        f"{counts['quarantined']['total']:,}"
    )
    return f"""{_header(manifest)}

# Pruned dataset

Selected by thresher from {len(manifest["inputs"])} input shard(s):
{counts["kept"]:,} of {counts["input"]:,} input records kept.

## Source

{_sources(manifest)}

## Method

Scores:

{_scorers(manifest["config"])}

Selection, in order (each step sees the rows the previous one kept):

{_steps(manifest)}

Seed `{manifest["seed"]}`, engine `{manifest["engine"]}`.
{weights}
## Counts

{_counts_table(rows)}

Every input record is kept, dropped (`dropped/`, with its reason) or quarantined
(`quarantine/`, with its reason): {balance}.

## Load it

```python
import pandas as pd
df = pd.read_parquet("data/")
```

## Lineage

Config hash `{manifest["config_hash"]}`. The full configuration, input
fingerprints and package versions are in `manifest.json`.
"""
