"""DSIR against the authors' reference package, in the same run, on one corpus.

The corpus is the sample-corpus generator (:mod:`thresher.examples.sample_corpus`)
scaled up to ``--documents`` documents (1,000,000 by default) in JSONL
shards of 10,000 (the reference package reads JSONL), written once to a
cache directory. The target set is 10,000 other documents of one topic
(``science``). Both methods select 10% of the corpus with the same
features: unigrams and bigrams of NLTK's ``WordPunctTokenizer`` words,
lowercased, hashed into 10,000 buckets.

- **reference**: ``data_selection.HashedNgramDSIR`` (``pip install
  data-selection``) with ``num_proc=1`` (one core), ``ngrams=2``,
  ``num_buckets=10000``, ``tokenizer="wordpunct"``, ``min_example_length=0``
  (thresher has no built-in length filter; a ``threshold`` on
  ``word_count`` is its equivalent), the raw model fitted on its default
  token count (here: the whole corpus): ``fit_importance_estimator``,
  ``compute_importance_weights``, ``resample`` (which writes the selected
  documents);
- **thresher**: the ``dsir`` scorer (raw model fitted on a uniform sample of
  ``n_documents`` = 100,000 rows, its default) and the ``dsir`` selector on
  one core: read the JSONL shards (pyarrow), fit, score every shard, Gumbel
  top-k, write the selected rows (Parquet). The scoring pass is also timed
  with two worker processes.

Quality: the paper's KL reduction, ``KL(target || random) - KL(target ||
selection)``, where each distribution is the add-one smoothed hashed
n-gram distribution of a set of documents and ``random`` a uniform random
selection of the same size. It is computed with the reference package's own
featurizer (SHA-256 buckets) on up to ``--eval-sample`` documents drawn
from each set, and with thresher's featurizer on whole sets. Target: the
KL reduction of thresher within 2% of the reference's; wall time at most
1.2x the reference's on one core.

Full scale (the reference takes about an hour on one core of the 2-core machine)::

    nice -n 10 python -m benchmarks.dsir

Development scale (50,000 documents)::

    python -m benchmarks.dsir --quick      # or THRESHER_BENCH_QUICK=1

The full-scale output is written to ``benchmarks/results/dsir.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHARD_DOCUMENTS = 10_000
FULL_DOCUMENTS = 1_000_000
QUICK_DOCUMENTS = 50_000
N_TARGET = 10_000
TARGET_TOPIC = "science"
N_BUCKETS = 10_000
NGRAMS = 2
RESULTS = Path(__file__).parent / "results" / "dsir.md"


# -- corpus -------------------------------------------------------------------------------


def _write_shard(out: Path, shard: int) -> None:
    from thresher.examples.sample_corpus import generate_records

    records = generate_records(SHARD_DOCUMENTS, 100_003 + shard)
    lines = [
        json.dumps(
            {"id": f"s{shard:05d}-{r['id']}", "text": r["text"], "topic": r["topic"]},
            ensure_ascii=False,
        )
        for r in records
    ]
    tmp = out / f".shard-{shard:05d}.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.rename(out / f"shard-{shard:05d}.jsonl")


def ensure_corpus(cache: Path, n_documents: int) -> tuple[list[Path], Path]:
    """The JSONL shards and the target file, generated once under ``cache``."""
    from thresher.examples.sample_corpus import clean_document

    out = cache / f"dsir-corpus-{n_documents}"
    n_shards = max(1, -(-n_documents // SHARD_DOCUMENTS))
    done = out / "_COMPLETE"
    if not done.is_file():
        out.mkdir(parents=True, exist_ok=True)
        missing = [s for s in range(n_shards) if not (out / f"shard-{s:05d}.jsonl").is_file()]
        started = time.perf_counter()
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes=os.cpu_count() or 1) as pool:
            pool.starmap(_write_shard, [(out, shard) for shard in missing])
        rng = random.Random(12345)
        target = [json.dumps({"text": clean_document(rng, TARGET_TOPIC)}) for _ in range(N_TARGET)]
        (out / "target.jsonl").write_text("\n".join(target) + "\n", encoding="utf-8")
        done.write_text(json.dumps({"documents": n_shards * SHARD_DOCUMENTS}))
        print(
            f"generated {n_shards} shards in {time.perf_counter() - started:.0f} s under {out}",
            file=sys.stderr,
        )
    return [out / f"shard-{s:05d}.jsonl" for s in range(n_shards)], out / "target.jsonl"


def _read_shard(path: Path) -> Any:
    import pyarrow.json as pj

    return pj.read_json(path).select(["id", "text", "topic"])


class _Clock:
    """Wall and CPU seconds of a block (CPU: this process and its finished children)."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu() - self.cpu


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# -- the two methods ---------------------------------------------------------------------


def run_reference(files: list[Path], target: Path, k: int, work: Path) -> dict[str, Any]:
    """The authors' package on one core; returns timings and the selected ids."""
    from data_selection import HashedNgramDSIR

    np.random.seed(0)  # resample draws its Gumbel noise from numpy's global generator
    timings: dict[str, float] = {}
    with _Clock() as total:
        dsir = HashedNgramDSIR(
            raw_datasets=[str(f) for f in files],
            target_datasets=[str(target)],
            cache_dir=str(work / "cache"),
            num_proc=1,
            ngrams=NGRAMS,
            num_buckets=N_BUCKETS,
            tokenizer="wordpunct",
            min_example_length=0,
        )
        with _Clock() as clock:
            dsir.fit_importance_estimator(num_tokens_to_fit="auto")
        timings["fit"] = clock.wall
        with _Clock() as clock:
            dsir.compute_importance_weights()
        timings["weights"] = clock.wall
        with _Clock() as clock:
            dsir.resample(out_dir=str(work / "out"), num_to_sample=k, cache_dir=str(work / "tmp"))
        timings["resample"] = clock.wall
    ids = []
    for path in sorted((work / "out").glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            ids += [json.loads(line)["id"] for line in handle if line.strip()]
    return {"wall": total.wall, "cpu": total.cpu, "stages": timings, "ids": ids}


def _score_files(args: tuple[str, list[str]]) -> list[Any]:
    import pickle

    scorer_bytes, names = args
    scorer = pickle.loads(bytes.fromhex(scorer_bytes))
    scorer.setup()
    out = []
    for name in names:
        table = _read_shard(Path(name))
        out.append(scorer.score(table.select(["text"]).to_batches()[0]))
    return out


def run_thresher(files: list[Path], target: Path, k: int, work: Path) -> dict[str, Any]:
    """thresher's dsir scorer and selector on one core; returns timings and the selected ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thresher.fitting import FitContext
    from thresher.scorers import make_scorer
    from thresher.selectors import make_selector

    timings: dict[str, float] = {}
    with _Clock() as total:
        with _Clock() as clock:
            corpus = pa.concat_tables([_read_shard(f) for f in files]).combine_chunks()
        timings["read"] = clock.wall

        def sample(n: int, columns: list[str], seed: int) -> pa.Table:
            rows = np.random.default_rng(seed).choice(
                corpus.num_rows, min(n, corpus.num_rows), replace=False
            )
            return corpus.take(pa.array(np.sort(rows))).select(columns)

        (work / "models").mkdir(parents=True)
        context = FitContext(
            artifact_dir=work / "models", sample=sample, n_rows=corpus.num_rows, seed=0
        )
        scorer = make_scorer(
            "dsir", {"target_files": [str(target)], "n_buckets": N_BUCKETS, "ngrams": NGRAMS}
        )
        with _Clock() as clock:
            scorer.fit(context)
        timings["fit"] = clock.wall
        with _Clock() as clock:
            scorer.setup()
            texts = corpus.column("text")
            step = SHARD_DOCUMENTS
            weights = np.concatenate(
                [
                    scorer.score(
                        pa.record_batch([texts.slice(i, step).combine_chunks()], names=["text"])
                    ).to_numpy()
                    for i in range(0, corpus.num_rows, step)
                ]
            )
        timings["score"] = clock.wall
        with _Clock() as clock:
            scores = pa.table({"id": corpus.column("id"), "dsir": weights})
            chosen = make_selector("dsir").select(scores, budget=k, random_state=0).indices
        timings["select"] = clock.wall
        with _Clock() as clock:
            pq.write_table(corpus.take(pa.array(chosen)), work / "selected.parquet")
        timings["write"] = clock.wall
    ids = corpus.column("id").take(pa.array(chosen)).to_pylist()

    # the scoring pass again with two worker processes (one per core)
    import pickle

    payload = pickle.dumps(scorer).hex()
    halves = [[str(f) for f in files[0::2]], [str(f) for f in files[1::2]]]
    context2 = multiprocessing.get_context("spawn")
    with context2.Pool(processes=2) as pool:
        pool.map(_score_files, [(payload, halves[0][:1]), (payload, halves[1][:1])])  # warm
        with _Clock() as clock:
            pool.map(_score_files, [(payload, h) for h in halves])
    return {
        "wall": total.wall,
        "cpu": total.cpu,
        "stages": timings,
        "ids": ids,
        "score_2_processes": clock.wall,
        "corpus": corpus,
    }


# -- quality -------------------------------------------------------------------------------


def _reference_counts(texts: list[str]) -> np.ndarray:
    from data_selection.hashed_ngram_dsir import get_ngram_counts, wpt

    counts = np.zeros(N_BUCKETS, dtype=np.int64)
    for text in texts:
        get_ngram_counts(
            text, n=NGRAMS, num_buckets=N_BUCKETS, counts=counts, tokenizer=wpt.tokenize
        )
    return counts


def _kl(target: np.ndarray, other: np.ndarray) -> float:
    from thresher.models.hashed_ngrams import smoothed_log_probabilities

    log_p, log_q = smoothed_log_probabilities(target), smoothed_log_probabilities(other)
    return float(np.sum(np.exp(log_p) * (log_p - log_q)))


def quality(
    corpus: Any, target: Path, selections: dict[str, list[str]], eval_sample: int
) -> dict[str, Any]:
    """KL reduction of each selection against a random one of the same size, with both featurizers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from thresher.models.hashed_ngrams import bucket_counts
    from thresher.scorers.dsir import read_documents

    targets = read_documents([str(target)])
    rng = np.random.default_rng(1)
    k = len(next(iter(selections.values())))
    sets = {
        "random": corpus.column("id")
        .take(pa.array(np.sort(rng.choice(corpus.num_rows, k, replace=False))))
        .to_pylist()
    }
    sets.update(selections)
    texts = {}
    for name, ids in sets.items():
        mask = pc.is_in(corpus.column("id"), value_set=pa.array(ids))
        texts[name] = corpus.filter(mask)
    out: dict[str, Any] = {}
    thr_target = bucket_counts(pa.array(targets))
    ref_target = _reference_counts(targets[:eval_sample])
    kl = {"thresher_features": {}, "reference_features": {}}
    for name, table in texts.items():
        kl["thresher_features"][name] = _kl(thr_target, bucket_counts(table.column("text")))
        n = min(eval_sample, table.num_rows)
        rows = np.sort(np.random.default_rng(2).choice(table.num_rows, n, replace=False))
        sample_texts = table.column("text").take(pa.array(rows)).to_pylist()
        kl["reference_features"][name] = _kl(ref_target, _reference_counts(sample_texts))
        topics = table.column("topic").to_pylist()
        out.setdefault("target_topic_share", {})[name] = sum(
            t == TARGET_TOPIC for t in topics
        ) / len(topics)
    out["kl"] = kl
    out["kl_reduction"] = {
        features: {name: values["random"] - values[name] for name in selections}
        for features, values in kl.items()
    }
    out["overlap"] = len(set(selections["thresher"]) & set(selections["reference"])) / k
    return out


# -- report --------------------------------------------------------------------------------


def report(
    n_documents: int, k: int, reference: dict[str, Any], ours: dict[str, Any], q: dict[str, Any]
) -> str:
    ratio = ours["wall"] / reference["wall"]
    red = q["kl_reduction"]
    lines = [
        f"# DSIR: thresher against the reference package ({n_documents:,} documents, k = {k:,})",
        "",
        "| | wall s (1 core) | CPU s | stages (wall s) |",
        "|---|---:|---:|---|",
        f"| reference `HashedNgramDSIR` | {reference['wall']:.1f} | {reference['cpu']:.1f} | "
        + ", ".join(f"{s} {v:.1f}" for s, v in reference["stages"].items())
        + " |",
        f"| thresher `dsir` | {ours['wall']:.1f} | {ours['cpu']:.1f} | "
        + ", ".join(f"{s} {v:.1f}" for s, v in ours["stages"].items())
        + " |",
        "",
        f"thresher / reference wall time, one core: **{ratio:.3f}x** "
        f"({reference['wall'] / ours['wall']:.1f}x faster). thresher's scoring pass alone: "
        f"{ours['stages']['score']:.1f} s on one core, {ours['score_2_processes']:.1f} s "
        "(reading and scoring the shards) with two processes.",
        "",
        "| selection | target-topic share | KL to target (thresher features) | KL reduction | "
        "KL to target (reference features) | KL reduction |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("random", "reference", "thresher"):
        lines.append(
            f"| {name} | {q['target_topic_share'][name]:.3f} | "
            f"{q['kl']['thresher_features'][name]:.4f} | "
            f"{red['thresher_features'].get(name, 0.0):.4f} | "
            f"{q['kl']['reference_features'][name]:.4f} | "
            f"{red['reference_features'].get(name, 0.0):.4f} |"
        )
    for features in ("reference_features", "thresher_features"):
        ours_red, ref_red = red[features]["thresher"], red[features]["reference"]
        lines.append("")
        lines.append(
            f"KL reduction, {features.replace('_', ' ')}: thresher / reference = "
            f"**{ours_red / ref_red:.4f}** ({100 * (ours_red - ref_red) / ref_red:+.2f}%)."
        )
    lines += ["", f"Selected documents in common: {100 * q['overlap']:.1f}%."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--eval-sample", type=int, default=20_000)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "thresher" / "bench")
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    quick = args.quick or bool(os.environ.get("THRESHER_BENCH_QUICK"))
    n_documents = args.documents or (QUICK_DOCUMENTS if quick else FULL_DOCUMENTS)
    files, target = ensure_corpus(args.cache, n_documents)
    n_rows = len(files) * SHARD_DOCUMENTS
    k = round(args.fraction * n_rows)
    work = Path(tempfile.mkdtemp(prefix="thresher-dsir-bench-"))
    try:
        print(f"thresher on {n_rows:,} documents...", file=sys.stderr, flush=True)
        ours = run_thresher(files, target, k, work / "thresher")
        print(f"thresher: {ours['wall']:.1f} s; reference...", file=sys.stderr, flush=True)
        reference = run_reference(files, target, k, work / "reference")
        print(f"reference: {reference['wall']:.1f} s; quality...", file=sys.stderr, flush=True)
        q = quality(
            ours["corpus"],
            target,
            {"reference": reference["ids"], "thresher": ours["ids"]},
            args.eval_sample,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(n_rows, k, reference, ours, q)
    print(text)
    if n_documents == FULL_DOCUMENTS:
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
