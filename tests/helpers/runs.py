"""Reading what a run published, the way a user of the dataset would."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.dataset as ds

from thresher.io.fs import Location
from thresher.runs import load_run


def kept_ids(run_dir: Path | str | Location, id_column: str = "id") -> list[str]:
    """The ids of the published dataset, sorted (read through the version pointer)."""
    table = load_run(run_dir).data
    return sorted(table.column(id_column).to_pylist())


def local_kept_ids(run_dir: Path, id_column: str = "id") -> list[str]:
    """The ids under the local ``RUN_DIR/data`` link, as ``pd.read_parquet("data/")`` sees them."""
    table = ds.dataset(run_dir / "data", format="parquet").to_table(columns=[id_column])
    return sorted(table.column(id_column).to_pylist())


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
