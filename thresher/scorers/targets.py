"""Target sets of the proxy scorers: corpus rows by id, or labelled records from a file.

A scorer that measures usefulness for a target task (``influence`` on a
target, ``mimic``'s reference model) takes its target as ``target_ids``
(ids of corpus rows), or ``target_file``: a text file of ids (one per
line), or a Parquet / JSONL file of records with the label and the
proxy's input column (``text`` or ``features``; rename with
``target_columns: {label: my_label, text: body}``). The functions here
check those parameters, read the rows, key them for a cache, and map
their labels to the proxy's classes, with messages that name the scorer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from thresher.errors import ConfigError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.models.proxy import ProxyModel

#: File names read as records; any other target file is a list of ids.
RECORD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")


def check_target_params(
    owner: str,
    target_ids: list[str] | None,
    target_file: str | None,
    target_columns: dict[str, str] | None,
) -> None:
    """One source at most, and ``target_columns`` naming known roles (ConfigError otherwise)."""
    if target_ids is not None and target_file is not None:
        raise ConfigError(f"{owner}: give target_ids or target_file, not both")
    unknown = sorted(set(target_columns or {}) - {S.LABEL, S.TEXT, S.FEATURES})
    if unknown:
        raise ConfigError(
            f"{owner}.target_columns: unknown role(s) {unknown}; use label, text, features"
        )


def target_spec(
    target_ids: list[str] | None, target_file: str | None, target_columns: dict[str, str] | None
) -> dict[str, Any]:
    """What identifies a target set in a cache key (a file by its bytes' SHA-256 too)."""
    spec: dict[str, Any] = {"ids": target_ids, "file": target_file, "columns": target_columns}
    if target_file is not None and Path(target_file).is_file():
        spec["file_sha256"] = hashlib.sha256(Path(target_file).read_bytes()).hexdigest()
    return spec


def target_table(
    owner: str,
    context: FitContext,
    column: str,
    target_ids: list[str] | None,
    target_file: str | None,
    target_columns: dict[str, str] | None,
) -> pa.Table:
    """The target rows with canonical columns ``label`` and the proxy's input ``column``."""
    ids = target_ids
    if target_file is not None:
        path = Path(target_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"{owner}.target_file: {path} does not exist")
        if path.name.endswith(RECORD_SUFFIXES):
            return _records(owner, path, column, target_columns or {})
        lines = path.read_text(encoding="utf-8").splitlines()
        ids = [line.strip() for line in lines if line.strip()]
        if not ids:
            raise ConfigError(f"{owner}.target_file: {path} holds no id")
    if ids is None:
        raise ConfigError(f"{owner}: no target set (give target_ids or target_file)")
    corpus = context.sample(context.n_rows, [S.ID, S.LABEL, column], context.seed)
    wanted = pa.array(sorted(set(ids)), pa.string())
    found = corpus.filter(pc.is_in(corpus.column(S.ID), value_set=wanted))
    missing = sorted(set(ids) - set(found.column(S.ID).to_pylist()))
    if missing:
        raise ConfigError(
            f"{owner}: {len(missing)} target id(s) are not in the ingested corpus, "
            f"e.g. {missing[:10]}"
        )
    return found


def target_labels(owner: str, model: ProxyModel, table: pa.Table) -> NDArray[np.int64]:
    """Class index of each target row; ConfigError when a label is not a proxy class."""
    labels = model.label_indices(table.column(S.LABEL))
    values = table.column(S.LABEL).to_pylist()
    unseen = sorted({str(v) for v, i in zip(values, labels, strict=True) if i < 0})
    if unseen:
        raise ConfigError(
            f"{owner}: target label(s) {unseen[:10]} are not among the proxy's classes "
            f"{model.classes}"
        )
    return labels


def _records(owner: str, path: Path, column: str, renames: dict[str, str]) -> pa.Table:
    """Target records from Parquet or JSONL, with canonical column names."""
    if path.name.endswith(".parquet"):
        table = pq.read_table(path)
    else:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            try:
                rows = [json.loads(line) for line in handle if line.strip()]
            except json.JSONDecodeError as error:
                raise ConfigError(
                    f"{owner}.target_file: {path}: invalid JSON line ({error})"
                ) from None
        table = pa.Table.from_pylist(rows)
    out = {}
    for role in (S.LABEL, column):
        source = renames.get(role, role)
        if source not in table.column_names:
            raise ConfigError(
                f"{owner}.target_file: {path} has no column {source!r} for the {role} "
                f"(columns: {table.column_names}; map it with target_columns)"
            )
        out[role] = table.column(source)
    if column == S.FEATURES:
        out[S.FEATURES] = pc.cast(out[S.FEATURES], pa.list_(pa.float32()))
    if table.num_rows == 0:
        raise ConfigError(f"{owner}.target_file: {path} holds no record")
    return pa.table(out)
