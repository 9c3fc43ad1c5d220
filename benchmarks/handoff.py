"""The training hand-off (export stage): tokenize-and-write speed, output sizes, shuffle cost.

``export_version`` runs directly on a generated version whose ``data/``
holds Parquet parts as materialise writes them (``id``, ``text`` and
passthrough columns), on the local engine (one process, one core) and on
Spark ``local[2]``, each engine in a child process of its own:

1. **Tokenize and write.** ``formats: [megatron]`` with thresher's
   byte-level BPE and with a Hugging Face ``tokenizers`` BPE, both trained
   here on a sample (vocabulary ~8k, nothing downloaded): tokens per second
   per core of the whole export (read, shuffle keys, split, tokenize, write
   ``.bin``/``.idx``) against the tokenizer alone on the same texts
   (``DocumentTokenizer.documents`` in batches of 1,024, one core). The
   Hugging Face tokenizer runs with ``TOKENIZERS_PARALLELISM=false`` in
   both, so that one process is one core.
2. **Output size** of each format (Parquet, Megatron ``.bin`` + ``.idx``,
   MDS) against the ``data/`` Parquet bytes of the same rows (local engine).
3. **Global shuffle cost.** ``formats: [parquet]`` (seeded shuffle,
   validation split, files cut by key buckets) against the same engine
   reading ``data/`` and writing it back as Parquet unshuffled
   (``engine.read(files, schema).write(directory)``), same run, same
   machine: seconds and their ratio.

Each engine first exports a 2,000-document version once per tokenizer
(not timed), so that its workers are started and the tokenizers loaded.
Documents are 40-80 words drawn with Zipf-like frequencies from a 20,000-word
vocabulary (text built with numpy). The record run::

    python -m benchmarks.handoff --docs 1000000

tokenizes ``--token-docs`` documents (default 200,000: the pure-Python BPE
would take most of the time budget at 1M on 2 cores) and shuffles all of
them; it writes ``benchmarks/results/handoff.md``. The smoke run::

    python -m benchmarks.handoff --docs 20000      # or --quick

prints the same tables (``--out`` writes them anywhere).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "handoff.md"
RECORD_DOCS = 1_000_000
QUICK_DOCS = 20_000
VOCAB_WORDS = 20_000
TOKENIZER_VOCAB = 8192
TRAIN_SAMPLE = 20_000
CHUNK_DOCS = 25_000
WARM_DOCS = 2_000  # the warm-up version's documents (workers started, tokenizers loaded)
BATCH = 1024  # texts per tokenizer call, as the Megatron writer batches them
SEED = 11
VALIDATION = 0.01
SOURCES = ("web", "books", "code", "wiki")
EOD = "<|endoftext|>"
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "4g",
    "spark.sql.session.timeZone": "UTC",
}


# -- the corpus -----------------------------------------------------------------------------


def _vocabulary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct lowercase words: their bytes each followed by a space, offsets and lengths."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    words: set[bytes] = set()
    while len(words) < VOCAB_WORDS:
        length = int(rng.integers(2, 11))
        words.add(letters[rng.integers(0, 26, size=length)].tobytes())
    ordered = sorted(words, key=lambda w: (len(w), w))  # short words are the frequent ones
    lengths = np.array([len(w) for w in ordered], dtype=np.int64)
    buffer = np.frombuffer(b"".join(w + b" " for w in ordered), dtype=np.uint8)
    starts = np.cumsum(lengths + 1) - (lengths + 1)
    return buffer, starts, lengths


def _zipf(n: int) -> np.ndarray:
    """Zipf-Mandelbrot word probabilities (exponent 1.1, shift 2.7): a few words dominate."""
    weights = 1.0 / (np.arange(n) + 2.7) ** 1.1
    return weights / weights.sum()


def generate_texts(n: int, rng: np.random.Generator, vocabulary: Any) -> pa.Array:
    """``n`` documents of 40-80 words, each ending with a full stop (a string array)."""
    buffer, starts, lengths = vocabulary
    words_per_doc = rng.integers(40, 81, size=n)
    cumulative = np.cumsum(_zipf(lengths.size))
    words = np.minimum(
        np.searchsorted(cumulative, rng.random(int(words_per_doc.sum()))), lengths.size - 1
    )
    width = lengths[words] + 1
    ends = np.cumsum(width)
    source = np.repeat(starts[words] - (ends - width), width) + np.arange(int(ends[-1]))
    data = buffer[source]
    doc_ends = ends[np.cumsum(words_per_doc) - 1]
    data[doc_ends - 1] = ord(".")
    offsets = np.concatenate([[0], doc_ends]).astype(np.int32)
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes())
    )


def write_version(root: Path, n: int, parts: int, seed: int = SEED) -> Any:
    """A version directory whose ``data/`` holds ``parts`` Parquet parts of ``n`` rows."""
    from thresher.io.fs import Location
    from thresher.io.publish import Version
    from thresher.io.sink import ParquetSink
    from thresher.stages.materialize import part_name

    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng)
    version = Version("v-000001-0000beef", Location.of(str(root)))
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    for index, (first, last) in enumerate(itertools.pairwise(bounds)):
        with ParquetSink(version.data / part_name(index)) as sink:
            for start in range(int(first), int(last), CHUNK_DOCS):
                stop = min(start + CHUNK_DOCS, int(last))
                texts = generate_texts(stop - start, rng, vocabulary)
                rows = stop - start
                sink.write(
                    pa.table(
                        {
                            "id": [f"doc-{i:09d}" for i in range(start, stop)],
                            "text": texts,
                            "source": pa.array(np.array(SOURCES)[rng.integers(0, 4, size=rows)]),
                            "quality": rng.random(rows),
                            "words": pc.add(pc.count_substring(texts, " "), 1).cast(pa.int64()),
                        }
                    )
                )
    return version


def data_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "data").glob("*.parquet"))


# -- tokenizers -----------------------------------------------------------------------------


def train_tokenizers(
    version_root: Path, directory: Path
) -> tuple[dict[str, Path], dict[str, float]]:
    """thresher's BPE and a Hugging Face BPE trained on the first documents (no download).

    Returns each tokenizer's JSON file and its training seconds.
    """
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from thresher.models.tokenizer import BPETokenizer

    first = sorted((version_root / "data").glob("*.parquet"))[0]
    sample = pq.read_table(first, columns=["text"]).column("text").to_pylist()[:TRAIN_SAMPLE]
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"thresher": directory / "thresher-bpe.json", "hf": directory / "hf-bpe.json"}
    seconds = {}
    start = time.perf_counter()
    BPETokenizer.train(sample, vocab_size=TOKENIZER_VOCAB).save(paths["thresher"])
    seconds["thresher"] = time.perf_counter() - start
    start = time.perf_counter()
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=[EOD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(sample, trainer)
    hf.save(str(paths["hf"]))
    seconds["hf"] = time.perf_counter() - start
    return paths, seconds


def tokenizer_alone(tokenizer: Any, texts: list[str]) -> tuple[float, int]:
    """Seconds and tokens of ``DocumentTokenizer.documents`` over ``texts`` in batches, one core."""
    tokenizer.documents(texts[:BATCH])  # load the tokenizer outside the measurement
    tokens = 0
    start = time.perf_counter()
    for first in range(0, len(texts), BATCH):
        tokens += sum(len(d) for d in tokenizer.documents(texts[first : first + BATCH]))
    return time.perf_counter() - start, tokens


# -- one engine, in a child process ---------------------------------------------------------


def _config(
    kind: str, work: Path, formats: list[str], file_rows: int, tokenizer: Path | None
) -> Any:
    from thresher.config import parse_config

    engine: dict[str, Any] = {"kind": "local", "workers": 1}
    if kind == "spark":
        engine = {"kind": "spark", "spark": {"master": "local[2]", "conf": SPARK_CONF}}
    output: dict[str, Any] = {"formats": formats, "file_rows": file_rows, "validation": VALIDATION}
    if tokenizer is not None:
        output["tokenizer_path"] = str(tokenizer)
    data = {
        "run_dir": str(work / "run"),
        "seed": SEED,
        "input": {"paths": [str(work / "in" / "*.parquet")]},
        "schema": {"id": "id", "text": "text"},
        "engine": engine,
        "output": output,
    }
    return parse_config(data, base_dir=work)


def _fresh(root: Path) -> None:
    """Remove an earlier export's splits from the version at ``root`` (the next writes anew)."""
    for split in ("train", "validation"):
        shutil.rmtree(root / split, ignore_errors=True)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_engine(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """Every measurement of one engine (the child side of :func:`measure_engine`)."""
    from benchmarks.curate_1m import _tree_rss_split
    from thresher.engines import make_engine
    from thresher.export.handoff import DocumentTokenizer
    from thresher.io.files import data_files
    from thresher.io.fs import Location
    from thresher.io.publish import Version
    from thresher.stages.export import _data_schema, export_version

    work = Path(job["work"])
    peak = {"tree": 0, "jvm": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            tree, jvm = _tree_rss_split(os.getpid())
            peak["tree"], peak["jvm"] = max(peak["tree"], tree), max(peak["jvm"], jvm)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    full = Version("v-000001-0000beef", Location.of(job["full"]))
    small = Version("v-000001-0000beef", Location.of(job["small"]))
    paths = {name: Path(p) for name, p in job["tokenizers"].items()}
    engine: Any = make_engine(_config(kind, work, ["parquet"], job["file_rows"], None))
    if kind == "spark":
        engine.spark.range(10).count()  # start the session outside the measurements
    out: dict[str, Any] = {"engine": kind, "cores": engine.parallelism}

    def export(
        version: Any, formats: list[str], tokenizer: str | None, rows: int
    ) -> dict[str, Any]:
        path = paths[tokenizer] if tokenizer else None
        config = _config(kind, work, formats, rows, path)
        document = DocumentTokenizer.read(Location.of(str(path))) if path else None
        _fresh(Path(version.root.path))
        seconds, summary = _timed(
            lambda: export_version(engine, version, config, config.output, document)
        )
        splits = summary["splits"].values()
        return {
            "seconds": seconds,
            "rows": sum(s["rows"] for s in splits),
            "files": sum(s["files"] for s in splits),
            "tokens": sum(s.get("tokens", 0) for s in splits),
            "bytes": {f: sum(s["bytes"][f] for s in splits) for f in formats},
        }

    # Warm up on a tiny version: the engine's workers start and load both tokenizers.
    warm = Version("v-000001-0000beef", Location.of(job["warm"]))
    for name in paths:
        export(warm, ["parquet", "megatron"], name, 100)
    _fresh(Path(job["warm"]))
    small_rows = max(1, job["token_docs"] // 16)
    if kind == "local":  # the tokenizers alone, one core, on the texts the export tokenizes
        texts = _texts(Path(job["small"]))
        out["alone"] = {}
        for name, path in paths.items():
            seconds, tokens = tokenizer_alone(DocumentTokenizer.read(Location.of(str(path))), texts)
            out["alone"][name] = {"seconds": seconds, "tokens": tokens}
        del texts
    out["megatron"] = {name: export(small, ["megatron"], name, small_rows) for name in paths}
    if kind == "local":  # sizes: every format once, on the same rows
        out["sizes"] = export(small, ["parquet", "mds"], None, small_rows)
        out["data_bytes"] = data_bytes(Path(job["small"]))
    _fresh(Path(job["small"]))

    files = data_files(full.data)
    schema = _data_schema(files)
    reference = work / f"reference-{kind}"
    shutil.rmtree(reference, ignore_errors=True)
    seconds, written = _timed(lambda: engine.read(files, schema).write(Location.of(str(reference))))
    out["reference"] = {"seconds": seconds, "files": len(written)}
    shutil.rmtree(reference, ignore_errors=True)
    out["shuffle"] = export(full, ["parquet"], None, job["file_rows"])
    _fresh(Path(job["full"]))
    engine.close()
    stop.set()
    sampler.join()
    out["peak"] = {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
        "tree": peak["tree"],
        "jvm": peak["jvm"],
    }
    return out


def measure_engine(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`run_engine` in a fresh child process (its own memory, its own JVM)."""
    job_file = Path(job["work"]) / f"job-{kind}.json"
    result_file = Path(job["work"]) / f"result-{kind}.json"
    job_file.write_text(json.dumps(job))
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    command = [
        sys.executable,
        "-m",
        "benchmarks.handoff",
        "--child",
        kind,
        str(job_file),
        str(result_file),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["wall"] = time.perf_counter() - start
    return result


# -- the report -----------------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def report(results: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    """The benchmark's Markdown tables."""
    local = next((r for r in results if r["engine"] == "local"), None)
    docs, token_docs = setup["docs"], setup["token_docs"]
    lines = [
        f"## The training hand-off at {docs:,} documents",
        "",
        f"Machine: {setup['cores']} cores, {setup['memory']}; load average before / after: "
        f"{setup['load_before']} / {setup['load_after']}. Command: `{setup['command']}`. "
        f"Total wall time {setup['wall']:.0f} s.",
        "",
        f"Corpus: {docs:,} documents of 40-80 words (Zipf-like over {VOCAB_WORDS:,} words, mean "
        f"{setup['mean_chars']:.0f} characters), `id`, `text`, `source`, `quality`, `words`; "
        f"`data/` {_mib(setup['full_bytes'])} in {setup['parts']} zstd Parquet parts. "
        f"Tokenized: the first {token_docs:,} documents ({_mib(setup['small_bytes'])} of "
        f"`data/`). Export: validation {VALIDATION}, files of {setup['file_rows']:,} rows "
        f"(tokenized set: {max(1, token_docs // 16):,}). Tokenizers trained on "
        f"{min(TRAIN_SAMPLE, token_docs):,} documents: thresher BPE "
        f"({setup['vocab']['thresher']:,} ids) in {setup['train']['thresher']:.1f} s, Hugging "
        f"Face `tokenizers` BPE ({setup['vocab']['hf']:,} ids) in {setup['train']['hf']:.1f} s.",
        "",
        "### 1. Tokenize and write (`formats: [megatron]`), tokens per second per core",
        "",
        "| tokenizer | engine (cores) | tokens | tokenizer alone, 1 core | export wall | "
        "export per core | export / alone |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in (("thresher", "thresher BPE"), ("hf", "HF tokenizers BPE")):
        alone = local["alone"][name] if local else None
        rate = alone["tokens"] / alone["seconds"] if alone else None
        for r in results:
            m = r["megatron"][name]
            per_core = m["tokens"] / m["seconds"] / r["cores"]
            lines.append(
                f"| {label} | {r['engine']} ({r['cores']}) | {m['tokens']:,} | "
                + (f"{rate:,.0f} /s" if rate else "-")
                + f" | {m['seconds']:.1f} s | {per_core:,.0f} /s | "
                + (f"{per_core / rate:.0%}" if rate else "-")
                + " |"
            )
    lines += [
        "",
        "Per core: the export's tokens over its wall time and the engine's cores (local: the "
        "export runs in one process; Spark: `local[2]`). The tokenizer alone is "
        "`DocumentTokenizer.documents` on batches of 1,024 texts already in memory.",
        "",
    ]
    if local is not None:
        sizes, base = local["sizes"]["bytes"], local["data_bytes"]
        megatron = {n: local["megatron"][n]["bytes"]["megatron"] for n in ("thresher", "hf")}
        lines += [
            f"### 2. Output size ({token_docs:,} documents, local engine)",
            "",
            "| format | bytes | vs `data/` Parquet |",
            "|---|---:|---:|",
            f"| `data/` Parquet (zstd, 5 columns) | {_mib(base)} | 1.00x |",
            f"| parquet | {_mib(sizes['parquet'])} | {sizes['parquet'] / base:.2f}x |",
            f"| megatron .bin + .idx (thresher BPE) | {_mib(megatron['thresher'])} | "
            f"{megatron['thresher'] / base:.2f}x |",
            f"| megatron .bin + .idx (HF BPE) | {_mib(megatron['hf'])} | "
            f"{megatron['hf'] / base:.2f}x |",
            f"| mds (uncompressed) | {_mib(sizes['mds'])} | {sizes['mds'] / base:.2f}x |",
            "",
            f"Parquet + MDS export in {local['sizes']['seconds']:.1f} s.",
            "",
        ]
    lines += [
        f"### 3. Global shuffle cost ({docs:,} documents, `formats: [parquet]`)",
        "",
        "| engine (cores) | read + write back, unshuffled | export (shuffle, split, sized files) "
        "| export / reference | files |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        ref, shuffle = r["reference"], r["shuffle"]
        lines.append(
            f"| {r['engine']} ({r['cores']}) | {ref['seconds']:.1f} s | {shuffle['seconds']:.1f} s | "
            f"{shuffle['seconds'] / ref['seconds']:.2f}x | {shuffle['files']} |"
        )
    lines += [
        "",
        "### Memory and wall time per engine (each in a child process)",
        "",
        "| engine | child wall | driver peak RSS (self) | children peak RSS | "
        "process tree peak (sampled) | JVM peak (sampled) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p = r["peak"]
        lines.append(
            f"| {r['engine']} | {r['wall']:.0f} s | {_gib(p['self'])} | {_gib(p['children'])} | "
            f"{_gib(p['tree'])} | {_gib(p['jvm'])} |"
        )
    lines.append("")
    return "\n".join(lines)


def _vocab_size(path: Path) -> int:
    from thresher.export.handoff import DocumentTokenizer
    from thresher.io.fs import Location

    return DocumentTokenizer.read(Location.of(str(path))).vocab_size


def _texts(version_root: Path) -> list[str]:
    """Every text of a version's ``data/``, parts in name order."""
    import pyarrow.parquet as pq

    texts: list[str] = []
    for part in sorted((version_root / "data").glob("*.parquet")):
        texts += pq.read_table(part, columns=["text"]).column("text").to_pylist()
    return texts


def _memory() -> str:
    try:
        return _gib(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) + " memory"
    except (ValueError, OSError):
        return "memory unknown"


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run the benchmark; return its measurements (``engines`` and ``setup``) and print them."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["--child"]:
        kind, job_file, result_file = arguments[1:4]
        result = run_engine(kind, json.loads(Path(job_file).read_text()))
        Path(result_file).write_text(json.dumps(result))
        return None
    parser = argparse.ArgumentParser(prog="python -m benchmarks.handoff")
    parser.add_argument("--docs", type=int, default=RECORD_DOCS)
    parser.add_argument("--quick", action="store_true", help=f"--docs {QUICK_DOCS:,}")
    parser.add_argument("--token-docs", type=int, default=200_000)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument(
        "--out", default=None, help="Markdown file (default: results/handoff.md at 1M)"
    )
    args = parser.parse_args(arguments)
    docs = QUICK_DOCS if args.quick else args.docs
    token_docs = min(args.token_docs, docs)
    engines = [e for e in args.engines.split(",") if e]
    cores = os.cpu_count() or 1
    before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thresher-bench-handoff-") as directory:
        work = Path(directory)
        full = work / "full"
        write_version(full, docs, args.parts)
        small = full
        if token_docs < docs:
            small = work / "small"
            write_version(small, token_docs, max(1, args.parts * token_docs // docs))
        write_version(work / "warm", WARM_DOCS, 2, seed=SEED + 1)
        paths, train = train_tokenizers(small, work / "tokenizers")
        vocab = {name: _vocab_size(path) for name, path in paths.items()}
        job = {
            "work": str(work),
            "full": str(full),
            "small": str(small),
            "warm": str(work / "warm"),
            "tokenizers": {k: str(v) for k, v in paths.items()},
            "file_rows": max(1, docs // 16),
            "token_docs": token_docs,
        }
        results = [measure_engine(kind, job) for kind in engines]
        mean_chars = float(np.mean([len(t) for t in _texts(small)]))
        setup = {
            "docs": docs,
            "token_docs": token_docs,
            "parts": args.parts,
            "file_rows": job["file_rows"],
            "full_bytes": data_bytes(full),
            "small_bytes": data_bytes(small),
            "mean_chars": mean_chars,
            "cores": cores,
            "memory": _memory(),
            "vocab": vocab,
            "train": train,
        }
    setup["load_before"] = before
    setup["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    setup["wall"] = time.perf_counter() - started
    setup["command"] = "python -m benchmarks.handoff " + " ".join(arguments)
    text = report(results, setup)
    print(text)
    out = Path(args.out) if args.out else (RESULTS if docs >= RECORD_DOCS else None)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    return {"engines": results, "setup": setup}


if __name__ == "__main__":
    main()
