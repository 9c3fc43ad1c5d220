"""Train, validation and test splits of a labelled data set, with optional label noise.

The input is read and validated by thresher's own ingest (a bad record is
quarantined with a reason, as in a run) and written in the canonical
columns (``id``, ``text`` and/or ``features``, ``label``) as three splits
under ``RUN_DIR/splits/``:

``test.parquet``
    The held-out test split: the ingested ``eval.test.paths``, or the
    ``eval.test.fraction`` of the input rows with the smallest seeded hash of
    their id. Only the final models are evaluated on it.
``validation.parquet``
    The ``eval.validation`` fraction of the remaining rows (smallest hash,
    another salt), for the hyper-parameter search. Never selected from.
``targets/<name>.parquet``
    The language-model task's target sets (``eval.targets``), ingested.
``train/part-NNNNN.parquet``
    The rest: the pool the scorers score and the selectors select from.
    With ``eval.label_noise`` a seeded random ``label_noise`` fraction of its
    labels is replaced by another class, uniformly, before anything is
    scored; ``eval_true_label`` and ``eval_flipped`` record it.

Carving by hash of the id puts a row in the same split whatever the shard
order, and keeps repeated ids together. Rows without a label cannot be
trained or tested on: they are left out and counted (``unlabelled``). The
splits are rebuilt only when their inputs change (input file fingerprints
and the settings that shape them, recorded in ``splits.json``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from numpy.typing import NDArray

from thresher.config import InputConfig, RunConfig, SchemaConfig
from thresher.errors import ConfigError, InputError
from thresher.evaluation.config import EvalConfig
from thresher.io import schema as S
from thresher.io.files import read_json, write_json_atomic
from thresher.io.fs import FileEntry
from thresher.io.ingest import ingest_shard
from thresher.io.listing import list_files
from thresher.io.shards import numbered_shards
from thresher.models.proxy import label_key

TRUE_LABEL = "eval_true_label"
FLIPPED = "eval_flipped"
SPLITS_FORMAT = 1


@dataclass(frozen=True)
class SplitPaths:
    """Where the splits of an eval directory are."""

    root: Path

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def validation(self) -> Path:
        return self.root / "validation.parquet"

    @property
    def test(self) -> Path:
        return self.root / "test.parquet"

    @property
    def record(self) -> Path:
        return self.root / "splits.json"


def canonical_columns(schema: SchemaConfig) -> list[str]:
    """The columns a split keeps: id, text and/or features, label."""
    columns = [S.ID]
    if schema.text is not None:
        columns.append(S.TEXT)
    if schema.features is not None:
        columns.append(S.FEATURES)
    return [*columns, S.LABEL] if schema.label is not None else columns


def hash_order(ids: pa.ChunkedArray | pa.Array, seed: int, salt: str) -> NDArray[np.int64]:
    """Row positions sorted by a seeded 64-bit hash of the id (stable for equal ids)."""
    prefix = f"{salt}\0".encode()
    hashes = np.fromiter(
        (xxhash.xxh64_intdigest(prefix + str(i).encode("utf-8"), seed) for i in ids.to_pylist()),
        dtype=np.uint64,
        count=len(ids),
    )
    return np.argsort(hashes, kind="stable").astype(np.int64)


def carve(table: pa.Table, fraction: float, seed: int, salt: str) -> tuple[pa.Table, pa.Table]:
    """Split ``table`` into (rest, carved): ``round(fraction * n)`` rows by smallest id hash.

    Both parts keep the input order of their rows.
    """
    n_carved = round(fraction * table.num_rows)
    order = hash_order(table.column(S.ID), seed, salt)
    carved = np.zeros(table.num_rows, dtype=bool)
    carved[order[:n_carved]] = True
    return table.filter(pa.array(~carved)), table.filter(pa.array(carved))


def flip_labels(table: pa.Table, fraction: float, seed: int) -> pa.Table:
    """Replace the labels of ``round(fraction * n)`` random rows by another class, uniformly.

    The classes are the distinct labels of ``table`` (at least two needed);
    the label column keeps its type. Adds ``eval_true_label`` and
    ``eval_flipped``.

    Parameters
    ----------
    table : pyarrow.Table
        Canonical rows with a non-null ``label`` column.
    fraction : float
        Fraction of rows whose label is flipped, in [0, 1).
    seed : int
        Seed of the choice of rows and of their new labels.
    """
    labels = table.column(S.LABEL).combine_chunks()
    n = table.num_rows
    flipped = np.zeros(n, dtype=bool)
    noisy = labels
    if fraction > 0 and n:
        classes = pc.unique(labels)
        keys = [str(label_key(v)) for v in classes.to_pylist()]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        classes = classes.take(pa.array(order, pa.int64()))  # a fixed class order
        if len(classes) < 2:
            raise InputError(f"label noise needs at least 2 classes, found {classes.to_pylist()}")
        index_of = {label_key(v): i for i, v in enumerate(classes.to_pylist())}
        codes = np.asarray([index_of[label_key(v)] for v in labels.to_pylist()], dtype=np.int64)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6E6F6973]))  # "nois"
        rows = np.sort(rng.choice(n, size=round(fraction * n), replace=False))
        # a uniform draw among the other classes: shift by 1..C-1
        shift = rng.integers(1, len(classes), size=rows.size)
        codes[rows] = (codes[rows] + shift) % len(classes)
        flipped[rows] = True
        noisy = classes.take(pa.array(codes))
    index = table.schema.get_field_index(S.LABEL)
    table = table.set_column(index, S.LABEL, noisy)
    return table.append_column(TRUE_LABEL, labels).append_column(FLIPPED, pa.array(flipped))


def read_labelled(
    input_config: InputConfig,
    run: RunConfig,
    what: str,
    schema: SchemaConfig | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Ingest every file of ``input_config`` with the run's schema; keep labelled rows.

    Returns the canonical rows (input order) and counts: ``rows_in``,
    ``quarantined`` (by reason), ``unlabelled``, and the files' fingerprints.
    A schema without a label (the language-model task, or ``schema`` given
    for a target set) keeps every ingested row.
    """
    schema = schema or run.schema_
    files = _files(input_config, run, what)
    shards = numbered_shards(files, run.base, input_config.format)
    columns = canonical_columns(schema)
    parts: list[pa.Table] = []
    quarantined: dict[str, int] = {}
    rows_in = 0
    for shard in shards:
        result = ingest_shard(shard, schema)
        rows_in += result.rows_in
        for reason, count in result.quarantine_counts().items():
            quarantined[reason] = quarantined.get(reason, 0) + count
        if schema.label is not None and S.LABEL not in result.table.column_names:
            raise InputError(f"{shard.name}: no label column {schema.label!r}")
        parts.append(result.table.select(columns))
    table = pa.concat_tables(parts, promote_options="permissive")
    counts = {
        "rows_in": rows_in,
        "quarantined": quarantined,
        "unlabelled": 0,
        "files": {f.location.uri: f.fingerprint() for f in files},
    }
    if schema.label is None:
        return table, counts
    labelled = pc.is_valid(table.column(S.LABEL))
    unlabelled = table.num_rows - int(pc.sum(labelled).as_py() or 0)
    counts = {
        "rows_in": rows_in,
        "quarantined": quarantined,
        "unlabelled": unlabelled,
        "files": {f.location.uri: f.fingerprint() for f in files},
    }
    return table.filter(labelled), counts


def _files(input_config: InputConfig, run: RunConfig, what: str) -> list[FileEntry]:
    try:
        return list_files(input_config.paths, run.base)
    except ConfigError as error:
        raise ConfigError(f"{what}: {error}") from None


def splits_key(config: EvalConfig) -> dict[str, Any]:
    """What the splits depend on: input and test files (fingerprints) and the split settings."""
    run = config.run
    test = config.eval.test
    files = run.input_files()
    test_files = [] if test.paths is None else _files(test.input_config(), run, "eval.test.paths")
    return {
        "format": SPLITS_FORMAT,
        "input": {
            f.location.relative_to(run.base)
            if f.location.is_relative_to(run.base)
            else f.location.uri: f.fingerprint()
            for f in files
        },
        "test_input": {f.location.uri: f.fingerprint() for f in test_files},
        "targets": {
            name: {
                "files": {
                    f.location.uri: f.fingerprint()
                    for f in _files(target.input_config(), run, f"eval.targets.{name}")
                },
                "settings": target.model_dump(mode="json"),
            }
            for name, target in sorted(config.eval.targets.items())
        },
        "task": config.eval.task,
        "schema": run.schema_.model_dump(mode="json"),
        "seed": run.seed,
        "test": test.model_dump(mode="json"),
        "validation": config.eval.validation,
        "label_noise": config.eval.label_noise,
        "shard_rows": config.eval.shard_rows,
    }


def prepare_splits(config: EvalConfig) -> tuple[dict[str, Any], bool]:
    """Write (or reuse) ``RUN_DIR/splits``; return its record and whether it was rebuilt."""
    paths = SplitPaths(config.root / "splits")
    key = splits_key(config)
    if paths.record.is_file():
        record = read_json(paths.record)
        if record.get("key") == key:
            return record, False
    run = config.run
    train, counts = read_labelled(run.input, run, "input.paths")
    seed = run.seed
    test_counts: dict[str, Any] = {}
    if config.eval.test.fraction is not None:
        train, test = carve(train, config.eval.test.fraction, seed, "test")
    else:
        test, test_counts = read_labelled(config.eval.test.input_config(), run, "eval.test.paths")
    train, validation = carve(train, config.eval.validation, seed, "validation")
    if train.num_rows == 0 or test.num_rows == 0:
        what = "" if config.eval.language_model else "labelled "
        raise InputError(
            f"eval needs {what}training and test rows; got {train.num_rows} training "
            f"and {test.num_rows} test rows"
        )
    if not config.eval.language_model:
        train = flip_labels(train, config.eval.label_noise, seed)
    targets = {name: read_target(config, name) for name in sorted(config.eval.targets)}
    shared_ids = set(test.column(S.ID).to_pylist()) & set(train.column(S.ID).to_pylist())

    staging = paths.root.with_name(f".splits-{uuid.uuid4().hex[:8]}")
    (staging / "train").mkdir(parents=True)
    try:
        step = config.eval.shard_rows
        for number, start in enumerate(range(0, train.num_rows, step)):
            pq.write_table(
                train.slice(start, step), staging / "train" / f"part-{number:05d}.parquet"
            )
        pq.write_table(validation, staging / "validation.parquet")
        pq.write_table(test, staging / "test.parquet")
        if targets:
            (staging / "targets").mkdir()
        for name, (table, _) in targets.items():
            pq.write_table(table, staging / "targets" / f"{name}.parquet")
        record = {
            "key": key,
            "input": counts,
            "test_input": test_counts or None,
            "rows": {
                "train": train.num_rows,
                "validation": validation.num_rows,
                "test": test.num_rows,
            },
            "label_noise": config.eval.label_noise,
            "flipped": int(np.count_nonzero(train.column(FLIPPED).to_numpy()))
            if FLIPPED in train.column_names
            else 0,
            "targets": {name: counts for name, (_, counts) in targets.items()},
            "target_rows": {name: table.num_rows for name, (table, _) in targets.items()},
            "test_ids_also_in_train": len(shared_ids),
        }
        write_json_atomic(record, staging / "splits.json")
        _replace_directory(staging, paths.root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record, True


def read_target(config: EvalConfig, name: str) -> tuple[pa.Table, dict[str, Any]]:
    """A target set's rows (``id``, ``text``), ingested like the input; refused when empty."""
    target = config.eval.targets[name]
    schema = SchemaConfig(id=target.id, text=target.text, passthrough=[], max_text_bytes=None)
    table, counts = read_labelled(target.input_config(), config.run, f"eval.targets.{name}", schema)
    if table.num_rows == 0:
        raise InputError(f"eval.targets.{name}: no usable row in {target.paths}")
    counts.pop("unlabelled", None)
    return table, counts


def _replace_directory(staging: Path, target: Path) -> None:
    """Put ``staging`` in ``target``'s place (the old copy is renamed aside, then deleted).

    Not atomic: a process killed between the renames leaves no splits, and
    the next eval rebuilds them (the splits are derived data, keyed by
    their inputs).
    """
    retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def read_split(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A split file (or the train directory) as one table, in order."""
    if path.is_dir():
        files = sorted(path.glob("part-*.parquet"))
        return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
    return pq.read_table(path, columns=columns)
