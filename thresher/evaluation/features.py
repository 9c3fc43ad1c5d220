"""Feature vectors and class indices of the three splits, computed once per eval.

The downstream model reads the same document features as the proxy models
(:class:`thresher.models.features.FeatureExtractor`): the ``features``
column standardised with statistics of the training pool (no labels, no
test rows), hashed word n-grams, or reference-LM embeddings (the LM is
trained on the scoring run's corpus, shared with the scorers that ask for
the same LM). The training pool's rows are read from the scoring run's
ingested shards in input order (the order of its score table), so that a
selection's row positions index the feature matrix directly.

Matrices are saved as safetensors under ``RUN_DIR/run/eval/_features/``
(dense: ``matrix``; hashed n-grams: CSR arrays) with the class indices
(``targets``, -1 for a label the training pool does not have), and loaded
once per process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.errors import RunStateError
from thresher.evaluation.config import EvalConfig, scoring_config
from thresher.evaluation.splits import FLIPPED, SplitPaths, read_split
from thresher.io import schema as S
from thresher.io.files import read_json, read_parquet, read_schema, write_json_atomic
from thresher.io.shards import input_order, order_ranks
from thresher.keys import row_key
from thresher.models._safe import load_safetensors, safetensors_metadata
from thresher.models.features import FeatureConfig, FeatureExtractor, Matrix, SparseRows
from thresher.models.proxy import label_key
from thresher.run_dir import RunDir
from thresher.stages.fit import fit_context

SPLIT_NAMES = ("train", "validation", "test")
_LOADED: dict[tuple[str, int], SplitData] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class SplitData:
    """One split as the downstream model sees it.

    Attributes
    ----------
    matrix : ndarray of float32, shape (n, d), or SparseRows
        Feature vectors.
    targets : ndarray of int64, shape (n,)
        Class index of each row (-1: a class the training pool lacks).
    flipped : ndarray of bool, shape (n,)
        Rows whose label was flipped by the label-noise option (train only).
    positions : ndarray of int64, shape (n,), or None
        The row key (:func:`thresher.keys.row_key`) of each training-pool row
        in the scoring run (None for validation and test).
    """

    matrix: Matrix
    targets: NDArray[np.int64]
    flipped: NDArray[np.bool_]
    positions: NDArray[np.int64] | None = None


def feature_config(config: EvalConfig) -> FeatureConfig:
    """The downstream features: as configured, else ``features`` when the schema has them."""
    if config.eval.model.features is not None:
        return config.eval.model.features
    if config.run.schema_.features is not None:
        return FeatureConfig(source="features")
    return FeatureConfig(source="hashed_ngrams")


def features_dir(config: EvalConfig) -> Path:
    return RunDir(config.root / "run").eval.as_path() / "_features"


def pool_table(run: RunDir, columns: list[str]) -> pa.Table:
    """The scoring run's ingested rows in input order: the score table's order."""
    stats = run.stored_ingest_stats()
    if not stats:
        raise RunStateError(f"{run.root} holds no ingested shard; score the training pool first")
    parts = []
    ranks = order_ranks(run.shard_names())
    for stat in stats:
        path = run.ingested_shard(int(stat["index"]))
        available = read_schema(path).names
        table = read_parquet(path, columns=[c for c in columns if c in available])
        order = input_order(table, ranks)
        parts.append(table.append_column(S.ORDER, pa.array(order)))
    table = pa.concat_tables(parts, promote_options="permissive")
    return table.sort_by(S.ORDER).drop_columns([S.ORDER])


def build_features(config: EvalConfig, splits_key: dict[str, Any]) -> dict[str, Any]:
    """Compute (or reuse) the three splits' feature files; return their record."""
    out = features_dir(config)
    source = feature_config(config)
    key = config.digest(splits_key, source.model_dump(mode="json"), config.run.seed)
    record_path = out / "features.json"
    if record_path.is_file() and read_json(record_path).get("key") == key:
        return dict(read_json(record_path))
    run = RunDir(config.root / "run")
    column = source.input_column
    pool = pool_table(run, [S.ID, S.LABEL, column, FLIPPED, S.SHARD, S.ROW])
    classes = sorted(
        key for key in {label_key(v) for v in pool.column(S.LABEL).to_pylist()} if key is not None
    )
    extractor = FeatureExtractor(source, device="cpu")
    shard_rows = {int(s["index"]): int(s["ingested"]) for s in run.stored_ingest_stats()}
    context = fit_context(
        run, shard_rows, "eval_features", scoring_config(config).seed, n_rows=pool.num_rows
    )
    extractor.fit(pool, context)
    paths = SplitPaths(config.root / "splits")
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    width = 0
    for name, table in (
        ("train", pool),
        ("validation", read_split(paths.validation)),
        ("test", read_split(paths.test)),
    ):
        rows[name] = table.num_rows
        matrix = extractor.transform(table)
        width = matrix.dim if isinstance(matrix, SparseRows) else int(matrix.shape[1])
        _save(out / f"{name}.safetensors", matrix, table, classes)
    record = {
        "key": key,
        "source": source.model_dump(mode="json"),
        "classes": classes,
        "rows": rows,
        "width": width,
    }
    write_json_atomic(record, record_path)
    return record


def _save(path: Path, matrix: Matrix, table: pa.Table, classes: list[str]) -> None:
    from safetensors.numpy import save_file

    index = {label: i for i, label in enumerate(classes)}
    keys = [label_key(v) for v in table.column(S.LABEL).to_pylist()]
    targets = np.asarray([-1 if k is None else index.get(k, -1) for k in keys], dtype=np.int64)
    flipped = (
        np.asarray(table.column(FLIPPED).to_numpy(zero_copy_only=False), dtype=np.uint8)
        if FLIPPED in table.column_names
        else np.zeros(table.num_rows, dtype=np.uint8)
    )
    arrays: dict[str, NDArray[Any]] = {"targets": targets, "flipped": flipped}
    metadata = {"kind": "dense"}
    if isinstance(matrix, SparseRows):
        arrays.update(indptr=matrix.indptr, indices=matrix.indices, values=matrix.values)
        metadata = {"kind": "sparse", "dim": str(matrix.dim)}
    else:
        arrays["matrix"] = np.ascontiguousarray(matrix, dtype=np.float32)
    if S.SHARD in table.column_names:
        arrays["shard"] = table.column(S.SHARD).to_numpy().astype(np.int64)
        arrays["row"] = table.column(S.ROW).to_numpy().astype(np.int64)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(arrays, str(tmp), metadata=metadata)
    tmp.replace(path)


def load_split(config: EvalConfig, name: str) -> SplitData:
    """A split's features, targets and flip flags (cached per process)."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {name!r}")
    path = features_dir(config) / f"{name}.safetensors"
    if not path.is_file():
        raise RunStateError(f"{path} is missing: compute the eval features first")
    cache_key = (str(path), path.stat().st_mtime_ns)
    with _LOCK:
        if cache_key not in _LOADED:
            if len(_LOADED) >= 6:  # an earlier eval's splits: free them
                _LOADED.clear()
            _LOADED[cache_key] = _read(path)
        return _LOADED[cache_key]


def _read(path: Path) -> SplitData:
    metadata = safetensors_metadata(path)
    arrays = load_safetensors(path)
    matrix: Matrix
    if metadata.get("kind") == "sparse":
        matrix = SparseRows(
            arrays["indptr"].astype(np.int64),
            arrays["indices"].astype(np.int64),
            arrays["values"].astype(np.float32),
            int(metadata["dim"]),
        )
    else:
        matrix = arrays["matrix"].astype(np.float32, copy=False)
    positions = None
    if "shard" in arrays:
        positions = row_key(arrays["shard"], arrays["row"])
    return SplitData(
        matrix, arrays["targets"].astype(np.int64), arrays["flipped"].astype(bool), positions
    )
