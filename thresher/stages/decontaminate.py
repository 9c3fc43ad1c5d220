"""Decontaminate stage: find the documents that share an n-gram with an evaluation set.

Runs after ingest (it reads the ingested text) and before selection, on
either engine, with the same matches on both (:mod:`thresher.contamination`
holds the rule and the kernel):

1. on the driver, the evaluation sets are read with thresher's own readers
   (any input format, any store: :func:`thresher.io.ingest.ingest_shard`)
   and their content is fingerprinted; the n-gram index is built once from
   them and written to ``decontaminate/result-<key>/index.npz``. Its size
   is that of the evaluation sets, never of the corpus;
2. per shard, where the data is (:meth:`Engine.map_shards`): a worker loads
   the index once per process from that file (the broadcast: the same
   bytes reach a pool process and a Spark executor through the filesystem
   layer, and no task closure carries them), scans the shard's ingested
   text and commits ``decontaminate/result-<key>/shard-NNNNN.parquet``
   (the matched rows: ``id, thresher_shard, thresher_row, set, ngram,
   sets``) in one atomic write;
3. the per-set counts are aggregated where the data is, and
   ``decontaminate/summary.json``, written last, names the result's files:
   readers trust only what it names, and the other results are deleted.

The key is the normalisation rule, ``ngram``, each set's name and text
field and the content digest of each of its files: a re-run with the same
sets reuses the stored result (and a killed run resumes from the shards it
committed), while editing an evaluation file recomputes it. Selection drops
the matched rows first, as ``contaminated`` (detail ``set=<name>;
ngram=<first matched n-gram>``).

References
----------
Brown et al., "Language Models are Few-Shot Learners", 2020, Appendix C.
Soldaini et al., "Dolma: an Open Corpus of Three Trillion Tokens for
Language Model Pretraining Research", 2024.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from thresher.config import DecontaminateConfig, RunConfig, SchemaConfig
from thresher.contamination import RULE, NgramIndex
from thresher.errors import ConfigError
from thresher.io import schema as S
from thresher.io.files import (
    parquet_file,
    read_json_or,
    write_parquet_atomic,
)
from thresher.io.fs import FileEntry, Location
from thresher.io.listing import list_sets
from thresher.io.shards import numbered_shards
from thresher.keys import json_digest
from thresher.run_dir import RunDir, shard_file
from thresher.stages.base import KeyedResult, RunContext, Stage

if TYPE_CHECKING:
    from thresher.engines.base import Engine
    from thresher.progress import StageProgress

SUMMARY_FILE = "summary.json"
INDEX_FILE = "index.npz"
#: The matched rows of one shard.
MATCHES_SCHEMA = pa.schema(
    [
        pa.field(S.ID, pa.string()),
        pa.field(S.SHARD, pa.int32()),
        pa.field(S.ROW, pa.int64()),
        pa.field("set", pa.string()),
        pa.field("ngram", pa.string()),
        pa.field("sets", pa.list_(pa.string())),
    ]
)


def decontaminate_dir(run: RunDir) -> Location:
    return run.root / "decontaminate"


# -- evaluation sets (driver) -------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set as read: its item texts and what identifies its content."""

    name: str
    texts: pa.ChunkedArray
    files: list[dict[str, Any]]
    rows_read: int
    skipped: int


def eval_set_files(config: RunConfig) -> dict[str, list[FileEntry]]:
    """The files of every configured set; ConfigError naming the field of a pattern matching none."""
    sets = {name: spec.paths for name, spec in _section(config).sets.items()}
    return list_sets(sets, config.base)


def read_eval_sets(config: RunConfig) -> list[EvalSet]:
    """Read every configured set with the ingest readers (items without text are skipped)."""
    return read_sets(_section(config), eval_set_files(config), config.base)


def read_sets(
    section: DecontaminateConfig, listed: dict[str, list[FileEntry]], base: Location
) -> list[EvalSet]:
    """Read the listed files of every set (``listed``: :func:`eval_set_files`)."""
    from thresher.io.ingest import ingest_shard

    sets = []
    for name, entries in listed.items():
        spec = section.sets[name]
        schema = SchemaConfig(id=None, text=spec.text, passthrough=[], max_text_bytes=None)
        texts, files, rows_read, skipped = [], [], 0, 0
        for shard in numbered_shards(entries, base, spec.format):
            result = ingest_shard(shard, schema)
            texts.append(result.table.column(S.TEXT).combine_chunks().cast(pa.large_string()))
            files.append({"path": shard.name, **result.content})
            rows_read += result.rows_in
            skipped += result.quarantine.num_rows
        if not sum(len(t) for t in texts):
            raise ConfigError(
                f"decontaminate.sets.{name}.text: none of the {rows_read:,} record(s) of this set "
                f"has a non-empty field {spec.text!r}; set `text` to the field holding each item"
            )
        sets.append(
            EvalSet(name, pa.chunked_array(texts, pa.large_string()), files, rows_read, skipped)
        )
    return sets


def _section(config: RunConfig) -> DecontaminateConfig:
    if config.decontaminate is None:
        raise ConfigError("decontaminate: not configured")
    return config.decontaminate


def decontaminate_key(section: DecontaminateConfig, sets: list[EvalSet]) -> str:
    """What a stored result depends on: the rule, ``ngram``, and each set's name, field, content."""
    return json_digest(
        [
            RULE,
            section.ngram,
            [
                [s.name, section.sets[s.name].text, sorted(f["xxh3_64"] for f in s.files)]
                for s in sets
            ],
        ]
    )


# -- per shard (where the data is) --------------------------------------------------------

_LOADED: dict[str, NgramIndex] = {}


def load_index(location: Location) -> NgramIndex:
    """The index stored at ``location``, read once per process (the latest one only)."""
    index = _LOADED.get(location.uri)
    if index is None:
        _LOADED.clear()
        index = _LOADED[location.uri] = NgramIndex.from_bytes(location.read_bytes())
    return index


def scan_table(index: NgramIndex, table: pa.Table) -> pa.Table:
    """The matched rows of an ingested table (``id``, positions, ``text``), as MATCHES_SCHEMA."""
    matches = index.scan(table.column(S.TEXT))
    rows = np.flatnonzero(matches.contaminated)
    if rows.size == 0:
        return MATCHES_SCHEMA.empty_table()
    picked = table.take(pa.array(rows))
    entries = matches.first_entry[rows]
    names = index.set_names
    return pa.table(
        {
            S.ID: picked.column(S.ID).cast(pa.string()),
            S.SHARD: picked.column(S.SHARD).cast(pa.int32()),
            S.ROW: picked.column(S.ROW).cast(pa.int64()),
            "set": pa.array([names[int(index.entry_set[e])] for e in entries], pa.string()),
            "ngram": pa.array([index.entry_text(int(e)) for e in entries], pa.string()),
            "sets": pa.array(
                [[names[s] for s in np.flatnonzero(matches.matched[r])] for r in rows],
                pa.list_(pa.string()),
            ),
        },
        schema=MATCHES_SCHEMA,
    )


class DecontaminateShard:
    """The per-shard task (picklable): scan ``ingested/shard-N`` and commit its matched rows."""

    def __init__(self, index: Location, result: Location, run: RunDir, batch_size: int) -> None:
        self.index = index
        self.result = result
        self.run = run
        self.batch_size = batch_size

    def __call__(self, shard: int) -> dict[str, Any]:
        target = self.result / shard_file(shard)
        source = parquet_file(self.run.ingested_shard(shard))
        rows = source.metadata.num_rows
        if target.is_file():
            return {"index": shard, "rows": rows, "reused": True}
        index = load_index(self.index)
        columns = [S.ID, S.SHARD, S.ROW, S.TEXT]
        parts = [
            scan_table(index, pa.Table.from_batches([batch]))
            for batch in source.iter_batches(batch_size=self.batch_size, columns=columns)
        ]
        table = pa.concat_tables(parts) if parts else MATCHES_SCHEMA.empty_table()
        write_parquet_atomic(table, target)
        return {"index": shard, "rows": rows, "reused": False}


# -- the stage (driver) -------------------------------------------------------------------


class _SetCounts:
    """Per set: documents whose first match is in it, and documents matching it at all."""

    def __call__(self, table: pa.Table) -> dict[str, list[int]]:
        counts: dict[str, list[int]] = {}
        for name in table.column("set").to_pylist():
            counts.setdefault(name, [0, 0])[0] += 1
        for names in table.column("sets").to_pylist():
            for name in names or []:
                counts.setdefault(name, [0, 0])[1] += 1
        return counts


def _merge_set_counts(parts: list[dict[str, list[int]]]) -> dict[str, list[int]]:
    merged: dict[str, list[int]] = {}
    for part in parts:
        for name, (first, any_) in part.items():
            total = merged.setdefault(name, [0, 0])
            total[0] += int(first)
            total[1] += int(any_)
    return merged


def decontaminate_to_run(
    config: RunConfig,
    engine: Engine,
    shard_indices: list[int],
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """Find the contaminated documents unless an identical result is already stored.

    Returns the summary (also ``decontaminate/summary.json``); ``reused``
    tells whether the stored result was used as it was.
    """
    return decontaminate_into(
        RunDir(config.run_path),
        Decontamination.of(config),
        engine,
        shard_indices,
        progress,
    )


@dataclass(frozen=True)
class Decontamination:
    """What decontaminating needs from a run's config: the section, the sets' files, batch size.

    ``listed`` are the sets' files (:func:`eval_set_files`), listed once per
    run; paths are named relative to ``base`` (the config's directory).
    """

    section: DecontaminateConfig
    listed: dict[str, list[FileEntry]]
    base: Location
    batch_size: int

    @classmethod
    def of(cls, config: RunConfig) -> Decontamination:
        return cls(_section(config), eval_set_files(config), config.base, config.engine.batch_size)


def decontaminate_into(
    run: RunDir,
    plan: Decontamination,
    engine: Engine,
    shard_indices: list[int],
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """:func:`decontaminate_to_run` from the slice of the config it needs."""
    sets = read_sets(plan.section, plan.listed, plan.base)
    key = decontaminate_key(plan.section, sets)
    results = KeyedResult(decontaminate_dir(run))
    stored = results.current(key)
    if stored is not None and sorted(stored.get("shards", [])) == sorted(shard_indices):
        if progress is not None:
            progress.reuse(shards=len(shard_indices), docs=0)
        return {**stored, "reused": True}
    result = results.prefix(key)
    index = _index(result / INDEX_FILE, sets, plan.section.ngram)
    done = {e.location.name for e in result.list_files(recursive=False)}
    pending = [i for i in sorted(shard_indices) if shard_file(i) not in done]
    if progress is not None:
        progress.reuse(shards=len(shard_indices) - len(pending), docs=0)
    engine.map_shards(
        DecontaminateShard(result / INDEX_FILE, result, run, plan.batch_size),
        pending,
        progress,
        on_done=(
            (lambda r: progress.advance(shards=1, docs=int(r["rows"])))
            if progress is not None
            else None
        ),
    )
    files = [result / shard_file(i) for i in sorted(shard_indices)]
    counts = (
        engine.read(files, MATCHES_SCHEMA).aggregate(_SetCounts(), _merge_set_counts)
        if files
        else {}
    )
    summary = _summary(key, index, sets, counts, sorted(shard_indices), result.name, engine.kind)
    results.commit(summary)
    results.retire(result)
    return {**summary, "reused": False}


def _index(location: Location, sets: list[EvalSet], ngram: int) -> NgramIndex:
    """The n-gram index of the evaluation sets: stored beside the result, or built and stored."""
    if location.is_file():
        return NgramIndex.from_bytes(location.read_bytes())
    index = NgramIndex.build({s.name: s.texts for s in sets}, ngram)
    location.write_bytes(index.to_bytes())
    return index


def _summary(
    key: str,
    index: NgramIndex,
    sets: list[EvalSet],
    counts: dict[str, list[int]],
    shards: list[int],
    result_name: str,
    engine: str,
) -> dict[str, Any]:
    """What ``decontaminate/summary.json`` records (and names: the matched-row files)."""
    return {
        "key": key,
        "rule": RULE,
        "ngram": index.ngram,
        "sets": {
            s.name: {
                "files": s.files,
                "items_read": s.rows_read,
                "items_skipped": s.skipped,
                "items": index.items[s.name],
                "short_items": index.short_items[s.name],
                "ngrams": index.ngrams[s.name],
                "documents": int(counts.get(s.name, [0, 0])[0]),
                "matched": int(counts.get(s.name, [0, 0])[1]),
            }
            for s in sets
        },
        "contaminated": int(sum(c[0] for c in counts.values())),
        "index_bytes": index.nbytes,
        "shards": shards,
        "files": [f"{result_name}/{shard_file(i)}" for i in shards],
        "engine": engine,
    }


def contamination_files(run: RunDir) -> list[Location]:
    """The matched-row files the committed summary names (none before the stage ran)."""
    root = decontaminate_dir(run)
    stored = read_json_or(root / SUMMARY_FILE, None)
    if stored is None:
        return []
    return [root / name for name in stored["files"]]


def manifest_section(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the manifest, card and report show: the rule and per-set counts."""
    if summary is None:
        return None
    return {
        "ngram": summary["ngram"],
        "rule": summary["rule"],
        "contaminated": summary["contaminated"],
        "sets": {
            name: {k: v for k, v in info.items() if k != "files"}
            | {"files": [f["path"] for f in info["files"]]}
            for name, info in summary["sets"].items()
        },
    }


@dataclass(frozen=True)
class Decontaminated:
    """The committed decontamination summary and whether it was reused."""

    summary: dict[str, Any]


class DecontaminateStage(Stage):
    """Documents sharing an n-gram with an evaluation set, keyed by the sets' content."""

    name = "decontaminate"
    retries = 1

    def __init__(self, plan: Decontamination | None) -> None:
        self.plan = plan

    def wanted(self) -> bool:
        return self.plan is not None

    def clear(self, ctx: RunContext) -> None:
        decontaminate_dir(ctx.run).delete_tree()  # a result of an earlier run with the section

    def totals(self, ctx: RunContext) -> dict[str, int]:
        return {"shards": len(ctx.result("ingest").stats)}

    def run(self, ctx: RunContext, bar: StageProgress) -> Decontaminated:
        assert self.plan is not None
        indices = ctx.result("ingest").indices
        return Decontaminated(decontaminate_into(ctx.run, self.plan, ctx.engine, indices, bar))

    def describe(self, result: Decontaminated) -> str:
        summary = result.summary
        reused = " (reused)" if summary["reused"] else ""
        return (
            f"decontaminate: {summary['contaminated']} document(s) share a {summary['ngram']}-gram "
            f"with an evaluation set{reused}"
        )
