"""Scorer speed: the perplexity scorer's overhead, and documents per second of every scorer.

1. ``overhead``: tokens per second of the perplexity scorer (``score()`` on
   Arrow batches: tokenise, cut into windows, batch by padded length,
   forward, per-token NLL and EL2N) against the bare torch forward pass of
   the same model over the same pre-tokenised batches, in the same run.
   Target: ``score()`` takes under 1.5x the bare forward pass.
2. ``throughput``: documents per second of ``score()`` for every registered
   scorer (generic over the registry), each fitted first on the ingested
   sample corpus as a run would (fit time reported apart). One process,
   torch capped to the machine's cores; model-based scorers use their
   default settings at full scale.

Full scale (the 20k-document sample corpus, default model sizes; the
overhead part times 5k documents; under 10 minutes on 2 quiet cores, most
of it training and running the reference LM; 7.6 minutes measured)::

    python -m benchmarks.scorers

Development scale (2k documents, tiny models; a minute or two)::

    python -m benchmarks.scorers --quick      # or THRESHER_BENCH_QUICK=1

One part only: ``--only overhead`` or ``--only throughput``; some scorers
only: ``--scorers perplexity,fasttext_quality``. The full-scale output is
also written to ``benchmarks/results/scorers.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import traceback
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Scale:
    documents: int
    shards: int
    lm: dict[str, Any]  # overrides of the reference LM defaults
    proxy: dict[str, Any] | None  # overrides for proxy-based scorers (None: their defaults)
    overhead_documents: int  # documents timed in the overhead part (a ratio needs few)


FULL = Scale(20_000, 10, {}, None, 5_000)
QUICK = Scale(
    2_000,
    4,
    {"d_model": 64, "n_layers": 2, "n_heads": 2, "context_length": 128, "steps": 60},
    {"hidden": 16, "epochs": 2, "n_seeds": 2, "max_rows": 1000},
    2_000,
)
BATCH_ROWS = 1024


@dataclass
class Corpus:
    root: Path
    run: Any  # thresher.run_dir.RunDir
    shard_rows: dict[int, int]

    def context(self, column: str, seed: int = 0) -> Any:
        from thresher.stages.fit import fit_context

        return fit_context(self.run, self.shard_rows, column, seed)

    def batches(self, columns: list[str]) -> list[pa.RecordBatch]:
        from thresher.io.files import parquet_file

        out = []
        for index in sorted(self.shard_rows):
            source = parquet_file(self.run.ingested_shard(index))
            present = [c for c in columns if c in source.schema_arrow.names]
            out += list(source.iter_batches(batch_size=BATCH_ROWS, columns=present))
        return out


def build_corpus(directory: Path, scale: Scale) -> Corpus:
    """Write the sample corpus and ingest it into a run directory (local stages)."""
    from thresher.config import SchemaConfig
    from thresher.examples.sample_corpus import write_sample_corpus
    from thresher.io.shards import ShardRegistry, numbered_shards
    from thresher.run_dir import RunDir
    from thresher.stages.ingest import ingest_to_run

    corpus = directory / "corpus"
    write_sample_corpus(corpus, n_documents=scale.documents, n_shards=scale.shards, seed=0)
    run = RunDir(directory / "run")
    shards = numbered_shards(sorted(corpus.glob("shard-*")), corpus)
    registry = ShardRegistry(run.shard_registry)  # fitting samples in input order, as a run does
    registry.record(shards)
    registry.save()
    schema = SchemaConfig(label="topic")
    stats = [ingest_to_run(s, schema, run) for s in shards]
    return Corpus(corpus, run, {s["index"]: s["ingested"] for s in stats})


# -- 1. perplexity overhead ------------------------------------------------------------
def bench_overhead(corpus: Corpus, scale: Scale) -> list[str]:
    import torch

    from thresher.models.lm import ReferenceLM
    from thresher.models.lm_training import fit_reference_lm
    from thresher.scorers.perplexity import PerplexityScorer

    started = time.perf_counter()
    lm_dir = fit_reference_lm(corpus.context("perplexity"), **scale.lm)
    fit_seconds = time.perf_counter() - started
    scorer = PerplexityScorer(model_path=str(lm_dir), token_el2n=True, flag_lm_train=True)
    scorer.fit(corpus.context("perplexity-overhead"))
    scorer.setup()
    batches = []
    for batch in corpus.batches(list(scorer.input_columns)):
        if sum(b.num_rows for b in batches) >= scale.overhead_documents:
            break
        batches.append(batch)

    # Reference: the same model's forward pass over the same batches, tokenised beforehand.
    lm = ReferenceLM.load(lm_dir, device="auto")
    texts = [t for b in batches for t in b.column(0).to_pylist()]
    pieces = lm._score_pieces(texts, scorer.max_tokens)
    prepared = [ids for _, ids in lm._batches(pieces, scorer.batch_tokens)]
    n_tokens = sum(len(p.targets) for p in pieces)
    model = lm.backend.model  # type: ignore[attr-defined]

    def bare() -> None:
        with torch.inference_mode():
            for ids in prepared:
                model(ids.to(lm.device))
        if lm.device.type == "cuda":
            torch.cuda.synchronize(lm.device)

    def through_score() -> None:
        for batch in batches:
            scorer.score(batch)
        if lm.device.type == "cuda":
            torch.cuda.synchronize(lm.device)

    bare()  # warm-up (allocator, kernels)
    bare_seconds = _best_of(bare, 2)
    score_seconds = _best_of(through_score, 2)
    ratio = score_seconds / bare_seconds
    return [
        "### Perplexity scorer overhead",
        "",
        f"Reference LM: {_lm_summary(lm_dir)}; trained in {fit_seconds:.1f} s on {lm.device}.",
        f"{len(texts):,} documents, {n_tokens:,} scored tokens (max_tokens={scorer.max_tokens}, "
        f"batch_tokens={scorer.batch_tokens}), device {lm.device}, torch threads {torch.get_num_threads()}.",
        "",
        "| path | seconds | tokens/s |",
        "|---|---:|---:|",
        f"| bare forward (pre-tokenised batches) | {bare_seconds:.2f} | {n_tokens / bare_seconds:,.0f} |",
        f"| `PerplexityScorer.score()` | {score_seconds:.2f} | {n_tokens / score_seconds:,.0f} |",
        "",
        f"Overhead ratio score()/bare = **{ratio:.2f}x** (target < 1.5x): "
        f"{'PASS' if ratio < 1.5 else 'FAIL'}.",
    ]


def _lm_summary(lm_dir: Path) -> str:
    import json

    record = json.loads((lm_dir / "config.json").read_text())
    model = record["model"]
    ppl = record.get("validation_perplexity")
    return (
        f"{record['n_parameters'] / 1e6:.2f}M parameters (d_model {model['d_model']}, "
        f"{model['n_layers']} layers, vocab {model['vocab_size']}), "
        f"{record['params']['steps']} steps on {record['n_train_documents']} documents, "
        f"validation perplexity {ppl:.2f}"
        if ppl
        else f"{record['n_parameters'] / 1e6:.2f}M parameters"
    )


def _best_of(function: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


# -- 2. documents per second of every scorer ---------------------------------------------
def scorer_params(name: str, corpus: Corpus, scale: Scale) -> dict[str, Any]:
    """Parameters a scorer needs on the sample corpus (data sources), plus quick-scale sizes."""
    from thresher.scorers import SCORERS

    params: dict[str, Any] = {}
    if name == "fasttext_quality":
        params["positive_files"] = [str(corpus.root / "_reference_clean.txt")]
    accepted = set(SCORERS[name](**params).get_params())
    if "lm" in accepted and scale.lm:
        params["lm"] = dict(scale.lm)
    if "proxy" in accepted and scale.proxy is not None:
        params["proxy"] = dict(scale.proxy)
    return params


def bench_throughput(corpus: Corpus, scale: Scale, names: list[str] | None) -> list[str]:
    from thresher.scorers import SCORERS, make_scorer
    from thresher.stages.score import BoundScorer, input_columns

    rows = [
        "### Documents per second of each scorer",
        "",
        f"{sum(corpus.shard_rows.values()):,} ingested documents in batches of {BATCH_ROWS}; "
        "`score()` in one process after `fit` (and `setup`).",
        "",
        "| scorer | params | fit s | score s | documents/s |",
        "|---|---|---:|---:|---:|",
    ]
    n_documents = sum(corpus.shard_rows.values())
    for name in sorted(SCORERS):
        if names and name not in names:
            continue
        params = scorer_params(name, corpus, scale)
        shown = ", ".join(f"{k}" for k in params) or "defaults"
        try:
            scorer = make_scorer(name, params)
            started = time.perf_counter()
            if scorer.requires_fit:
                scorer.fit(corpus.context(name))
            scorer.setup()
            fit_seconds = time.perf_counter() - started
            columns = input_columns([BoundScorer(name, scorer)], has_label=True)
            batches = corpus.batches(columns)
            views = [
                pa.RecordBatch.from_arrays(
                    [b.column(b.schema.get_field_index(c)) for c in scorer.input_columns],
                    names=list(scorer.input_columns),
                )
                for b in batches
            ]
            started = time.perf_counter()
            for view in views:
                scorer.score(view)
            seconds = time.perf_counter() - started
            rows.append(
                f"| `{name}` | {shown} | {fit_seconds:.1f} | {seconds:.2f} | "
                f"{n_documents / seconds:,.0f} |"
            )
        except Exception as error:  # report and go on: one scorer must not hide the others
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            rows.append(f"| `{name}` | {shown} | - | - | failed: {first_line[:120]} |")
            traceback.print_exc(file=sys.stderr)
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scorers")
    parser.add_argument("--quick", action="store_true", help="development scale")
    parser.add_argument("--only", choices=["overhead", "throughput"])
    parser.add_argument("--scorers", help="comma-separated registry names (throughput part)")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    scale = QUICK if quick else FULL
    names = args.scorers.split(",") if args.scorers else None
    output = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="thresher-bench-scorers-") as directory:
        corpus = build_corpus(Path(directory), scale)
        sections = [
            f"## Scorers{' (quick scale)' if quick else ''}",
            "",
            f"Machine: {os.cpu_count()} cores; sample corpus of {scale.documents:,} documents; "
            "wall seconds of one run.",
            "",
        ]
        print("\n".join(sections), flush=True)
        output.write("\n".join(sections) + "\n")
        parts = []
        if args.only in (None, "overhead"):
            parts.append(lambda: bench_overhead(corpus, scale))
        if args.only in (None, "throughput"):
            parts.append(lambda: bench_throughput(corpus, scale, names))
        for part in parts:
            with redirect_stdout(sys.stderr):  # keep library chatter off the report
                lines = part()
            text = "\n".join(lines) + "\n"
            print(text, flush=True)
            output.write(text + "\n")
    if not quick and args.only is None and names is None:
        target = Path(__file__).parent / "results" / "scorers.md"
        target.write_text(output.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
