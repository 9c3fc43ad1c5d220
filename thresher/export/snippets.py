"""The code a trainer runs to load each format of a training hand-off (shown in the card).

Each snippet is complete Python that loads one split of one format with
that format's own library and prints how many rows (or documents) it
holds; the card shows them as written and a test runs them as written.
Paths are relative to the run directory for a local run, URIs otherwise.
"""

from __future__ import annotations

import json
from typing import Any


def _text(value: str) -> str:
    return json.dumps(value)


def loader_snippets(output: dict[str, Any], root: str = "", split: str = "train") -> dict[str, str]:
    """Format -> the snippet that loads ``split`` of the manifest's ``output`` section."""
    found = output.get("splits", {}).get(split)
    if found is None:
        return {}
    directory = f"{root}{found['directory']}"
    snippets = {}
    for fmt in output.get("formats", []):
        where = _text(f"{directory}/{fmt}")
        files = _text(f"{directory}/{fmt}/*.idx")
        if fmt == "parquet":
            snippets[fmt] = (
                "import pyarrow.dataset as ds\n\n"
                f'{split} = ds.dataset({where}, format="parquet")  # files in shuffled order\n'
                f'print({split}.count_rows(), "rows")\n'
            )
        elif fmt == "megatron":
            snippets[fmt] = (
                "import glob\n\n"
                "from megatron.core.datasets.indexed_dataset import IndexedDataset\n\n"
                "# one Megatron-LM prefix per file: --data-path takes them all\n"
                f'prefixes = sorted(p[: -len(".idx")] for p in glob.glob({files}))\n'
                f"{split} = [IndexedDataset(prefix) for prefix in prefixes]\n"
                f'print(sum(len(part) for part in {split}), "documents")\n'
            )
        elif fmt == "mds":
            source = (
                f'remote={where}, local="/tmp/thresher-mds-{split}"' if root else f"local={where}"
            )
            snippets[fmt] = (
                "from streaming import StreamingDataset\n\n"
                f"{split} = StreamingDataset({source}, shuffle=False, batch_size=1)\n"
                f'print(len({split}), "rows")\n'
            )
        elif fmt == "delta":
            table = _text(f"{root}delta/{split}")
            snippets[fmt] = (
                "from deltalake import DeltaTable\n\n"
                f"# one table version per publication: DeltaTable({table}, version=n)\n"
                f"{split} = DeltaTable({table})\n"
                f'print({split}.to_pyarrow_dataset().count_rows(), "rows")\n'
            )
    return snippets
