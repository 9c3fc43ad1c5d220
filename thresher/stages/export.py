"""Export stage: the training hand-off of the new version (shuffled, split, sized, in formats).

With an ``output`` section, after the kept rows are materialised, this
stage reads the version's ``data/`` where the data is, gives every row
copy its place in the seeded order and its split
(:mod:`thresher.export.handoff`), counts each split's rows and bytes to
choose its number of files, and has the engine write each file (one task
per group of files, every format at once). The driver then writes what
spans files (each split's MDS ``index.json``) and returns the counts the
manifest records.

Everything is written inside the new version (``train/``,
``validation/``), which only the version pointer makes visible: a run
killed while exporting leaves every format at the previously published
version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.config import OutputConfig, RunConfig
from thresher.errors import ConfigError
from thresher.export import handoff as H
from thresher.io import schema as S
from thresher.io.files import data_files
from thresher.io.fs import Location
from thresher.io.publish import VERSIONS, Version
from thresher.stages.base import RunContext, Stage
from thresher.stages.materialize import output_names

if TYPE_CHECKING:
    from thresher.engines.base import Engine


@dataclass(frozen=True)
class Exported:
    """The manifest's ``output`` section: what each split holds, in which files and formats."""

    summary: dict[str, Any]


class ExportStage(Stage):
    """Write the training hand-off of the new version (see module docstring)."""

    name = "export"
    retries = 1

    def __init__(self, config: RunConfig) -> None:
        self.output = config.output
        self.config = config

    def wanted(self) -> bool:
        return self.output is not None

    def run(self, ctx: RunContext, bar: Any) -> Exported:
        assert self.output is not None
        version = ctx.result("select").version
        tokenizer = self.tokenizer(ctx) if "megatron" in self.output.formats else None
        with ctx.engine.watch(bar):
            summary = export_version(ctx.engine, version, self.config, self.output, tokenizer)
        documents = sum(s["rows"] for s in summary["splits"].values())
        bar.advance(docs=documents)
        return Exported(summary)

    def tokenizer(self, ctx: RunContext) -> H.DocumentTokenizer:
        """The token formats' tokenizer: ``output.tokenizer_path``, else the token_count scorer's."""
        assert self.output is not None
        if self.output.tokenizer_path is not None:
            location = self.config.resolve(self.output.tokenizer_path)
            return H.DocumentTokenizer.read(location, self.output.eod_token)
        fitted = ctx.results.get("fit")
        for bound in fitted.scorers if fitted is not None else ():
            path = getattr(bound.scorer, "tokenizer_file_", None)
            if bound.scorer.name == "token_count" and path is not None:
                location = self.config.resolve(str(path))
                return H.DocumentTokenizer.read(location, self.output.eod_token)
        raise ConfigError(
            "output.formats: megatron needs the token_count scorer's tokenizer, which this run "
            "did not fit (select-only runs fit nothing); set output.tokenizer_path"
        )

    def describe(self, result: Exported) -> str:
        splits = result.summary["splits"]
        parts = [
            f"{name} {split['rows']:,} rows in {split['files']} files"
            for name, split in splits.items()
        ]
        return f"exported {', '.join(parts) or 'nothing'} as {', '.join(result.summary['formats'])}"


def export_version(
    engine: Engine,
    version: Version,
    config: RunConfig,
    output: OutputConfig,
    tokenizer: H.DocumentTokenizer | None,
) -> dict[str, Any]:
    """Write ``version``'s hand-off from its ``data/``; return the manifest's ``output`` section."""
    names = output_names(config.schema_)
    id_column, text_column = names["id"], names.get("text")
    files = data_files(version.data)
    seed = config.seed if output.seed is None else output.seed
    if not files:  # nothing kept and no columns known: nothing to hand off
        return _finish(version, output, seed, H.FILE_SCHEMA.empty_table(), {}, None)
    data_schema = _data_schema(files)
    keying = H.KeyRows(id_column, seed, output.validation)
    keyed_schema = keying.schema(data_schema)
    keyed = engine.read(files, data_schema).map_batches(keying, keyed_schema).cache()
    sizes = keyed.aggregate(H.split_sizes, H.add_sizes)
    files_of = {
        split: size.files(output.file_rows, output.file_size) for split, size in sizes.items()
    }
    counts = {split: int(files.max()) + 1 for split, files in files_of.items()}
    public = H.public_schema(keyed_schema)
    encodings = None
    if "mds" in output.formats:
        from thresher.export.mds import mds_encodings

        encodings = mds_encodings(public, H.required_columns(public, id_column, text_column))
    writer = H.WriteFiles(
        version.root,
        tuple(output.formats),
        id_column,
        text_column,
        tokenizer,
        encodings,
    )
    filed_schema = pa.schema([*keyed_schema, pa.field(H.FILE, pa.int64())])
    written = (
        keyed.map_batches(H.AssignFiles(files_of), filed_schema)
        .map_groups([H.SPLIT, H.FILE], writer, H.FILE_SCHEMA)
        .to_table(max_rows=max(1, sum(counts.values())))
    )
    keyed.release()
    copies = engine.read(files, _repeat_schema(data_schema)).aggregate(_copies, _total)
    planned = sum(size.rows for size in sizes.values())
    if copies != planned:
        raise AssertionError(f"the hand-off holds {planned} rows for {copies} kept row copies")
    return _finish(version, output, seed, written, counts, writer)


def _repeat_schema(data: pa.Schema) -> pa.Schema:
    """The one column :func:`_copies` reads: ``repeat`` when there, else the first column."""
    return pa.schema([data.field(S.REPEAT) if S.REPEAT in data.names else data.field(0)])


def _total(counts: list[int]) -> int:
    return sum(counts)


def _copies(table: pa.Table) -> int:
    """Row copies a part holds: the sum of ``repeat``, or its rows."""
    if S.REPEAT in table.column_names:
        return int(pc.sum(table.column(S.REPEAT)).as_py() or 0)
    return table.num_rows


def _data_schema(files: list[Any]) -> pa.Schema:
    """The published parts' schema (materialise writes every part with the same columns)."""
    with files[0].open_input_file() as handle:
        return pq.read_schema(handle)


def _finish(
    version: Version,
    output: OutputConfig,
    seed: int,
    written: pa.Table,
    counts: dict[int, int],
    writer: H.WriteFiles | None,
) -> dict[str, Any]:
    """Write each split's MDS index (after every shard) and sum the files' reports."""
    rows = sorted(written.to_pylist(), key=lambda r: (r[H.SPLIT], r[H.FILE]))
    splits: dict[str, Any] = {}
    for split, name in enumerate(H.SPLITS):
        mine = [r for r in rows if r[H.SPLIT] == split]
        if not mine:
            continue
        if len(mine) != counts.get(split, 0):
            raise AssertionError(
                f"{name}: {counts.get(split, 0)} files planned, {len(mine)} written"
            )
        splits[name] = {
            "rows": sum(r["rows"] for r in mine),
            "files": len(mine),
            "file_rows": {"min": min(r["rows"] for r in mine), "max": max(r["rows"] for r in mine)},
            "bytes": {
                f: sum(r[f"{f}_bytes"] for r in mine) for f in output.formats if f in H.FORMATS
            },
            "directory": f"{VERSIONS}/{version.name}/{name}",
        }
        if "megatron" in output.formats:
            splits[name]["tokens"] = sum(r["tokens"] for r in mine)
        if "mds" in output.formats and writer is not None:
            from thresher.export.mds import write_mds_index

            shards = [s for r in mine for s in json.loads(r["mds_shards"])]
            write_mds_index(writer.directory(split, "mds"), shards)
    return {
        "formats": list(output.formats),
        "seed": seed,
        "validation": output.validation,
        "file_rows": output.file_rows,
        "file_size": None if output.file_rows else (output.file_size or H.DEFAULT_FILE_BYTES),
        "tokenizer": None
        if writer is None or writer.tokenizer is None
        else {
            "kind": writer.tokenizer.kind,
            "eod": writer.tokenizer.eod,
            "vocab_size": writer.tokenizer.vocab_size,
        },
        "splits": splits,
    }


#: Where a split's Delta Lake table lives, under the run directory.
DELTA = "delta"


def publish_tables(run_root: Location, version: Version, output: dict[str, Any]) -> dict[str, int]:
    """Publish each split of ``version`` as the next version of its Delta table (``delta`` format).

    Called after the version pointer moved (and again at start-up for a
    table that lags the published version): a table never runs ahead of
    what readers of ``CURRENT`` see. Returns each table's new version.
    """
    from thresher.export.delta import publish_table

    if "delta" not in output.get("formats", []):
        return {}
    published = {}
    for name in output["splits"]:
        files = data_files(version.root / name / "parquet")
        if files:
            published[name] = publish_table(run_root / DELTA / name, files, version.name)
    return published


def lagging_tables(run_root: Location, version: Version, output: dict[str, Any]) -> list[str]:
    """The splits whose Delta table does not hold ``version`` (a run died before publishing it)."""
    from thresher.export.delta import table_state

    if "delta" not in output.get("formats", []):
        return []
    lagging = []
    for name in output["splits"]:
        state = table_state(run_root / DELTA / name)
        if state is None or state[1] != version.name:
            lagging.append(name)
    return lagging
