"""Decontamination: documents per second, agreement with exact string matching, index memory.

On a generated corpus (documents of random words from a 50,000-word
vocabulary) and generated evaluation sets of 10,000 and 100,000 items
(10% of them shorter than 13 words, so several n-gram lengths are tested
per document window), with 2% of the documents contaminated by a span of
13-30 words copied from a random item with case, punctuation and spacing
changed:

1. ``speed``: documents per CPU second (and per wall second) of
   :meth:`NgramIndex.scan` in one thread (the kernel the stage runs per
   shard; compiled before timing), and the time to build the index;
2. ``accuracy``: the contaminated documents and their first set against
   exact matching with Python sets of n-gram strings over a sample of the
   documents (every planted one and random others): false positives, false
   negatives, and the 64-bit hash collisions the byte check rejected (the
   hash-only candidates that were not matches);
3. ``memory``: in a child process that has read the items, the peak RSS
   while building the index (``VmHWM``, reset after reading) and the RSS
   holding it, both over the RSS before the build.

Full scale (20,000 documents of 300 words; a few minutes on 2 cores)::

    python -m benchmarks.decontaminate

Development scale (2,000 documents; sets of 1,000 and 10,000 items)::

    python -m benchmarks.decontaminate --quick

The full-scale output is also written to ``benchmarks/results/decontaminate.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from thresher.contamination import NgramIndex, item_ngrams, normalized_words

VOCABULARY = 50_000
NGRAM = 13
PLANTED = 0.02


@dataclass(frozen=True)
class Scale:
    documents: int
    words: int
    set_sizes: tuple[int, ...]
    reference_documents: int


FULL = Scale(documents=20_000, words=300, set_sizes=(10_000, 100_000), reference_documents=2_000)
QUICK = Scale(documents=2_000, words=300, set_sizes=(1_000, 10_000), reference_documents=500)


def vocabulary() -> np.ndarray:
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = {"".join(rng.choice(letters, size=rng.integers(3, 10))) for _ in range(VOCABULARY * 2)}
    return np.array(sorted(words)[:VOCABULARY])


def eval_items(n: int, seed: int) -> list[str]:
    """Items of 13-80 words, and 10% of 4-12 words (the short-item rule)."""
    rng = np.random.default_rng(seed)
    words = vocabulary()
    lengths = np.where(rng.random(n) < 0.1, rng.integers(4, 13, n), rng.integers(13, 81, n))
    return [" ".join(words[rng.integers(0, VOCABULARY, size=int(k))]) + "?" for k in lengths]


def corpus(scale: Scale, items: list[str], seed: int) -> tuple[list[str], np.ndarray]:
    """Documents, and which of them were planted with an item's span (changed in form)."""
    rng = np.random.default_rng(seed)
    words = vocabulary()
    planted = rng.random(scale.documents) < PLANTED
    documents = []
    for d in range(scale.documents):
        body = list(words[rng.integers(0, VOCABULARY, size=scale.words)])
        if planted[d]:
            item = items[int(rng.integers(0, len(items)))].rstrip("?").split()
            length = min(len(item), int(rng.integers(13, 31)))
            start = int(rng.integers(0, len(item) - length + 1))
            span = item[start : start + length]
            span = [
                w.upper() if i % 3 == 0 else w + ("," if i % 5 == 0 else "")
                for i, w in enumerate(span)
            ]
            at = int(rng.integers(0, scale.words))
            body[at:at] = ["\n  ".join(span[:3]), *span[3:]]
        documents.append(" ".join(body))
    return documents, planted


def exact_matches(items: list[str], documents: list[str]) -> list[bool]:
    """The rule with Python sets of n-gram strings (the reference)."""
    grams: dict[int, set[str]] = {}
    for item in items:
        for gram in item_ngrams(item, NGRAM):
            grams.setdefault(len(gram.split()), set()).add(gram)
    found = []
    for document in documents:
        words = normalized_words(document)
        hit = False
        for length, known in grams.items():
            windows = {" ".join(words[i : i + length]) for i in range(len(words) - length + 1)}
            if windows & known:
                hit = True
                break
        found.append(hit)
    return found


def hash_only_hits(index: NgramIndex, documents: list[str]) -> int:
    """Windows whose 64-bit hash is in the index but whose words are not an indexed n-gram.

    Computed apart from the kernel (Python, over the sample), with the
    kernel's own hash of each window: the collisions the byte check rejects.
    """
    known = set(index.hashes.tolist())
    texts = {index.entry_text(k) for k in range(index.n_entries)}
    collisions = 0
    for document in documents:
        words = normalized_words(document)
        for length in index.lengths.tolist():
            windows = [" ".join(words[i : i + length]) for i in range(len(words) - length + 1)]
            if not windows:
                continue
            hashes = _window_hashes(windows, length, index)
            collisions += sum(
                1 for w, h in zip(windows, hashes, strict=True) if h in known and w not in texts
            )
    return collisions


def _window_hashes(windows: list[str], length: int, index: NgramIndex) -> list[int]:
    one = NgramIndex.build({"w": windows}, ngram=length)  # same kernel, same hash of each window
    built = dict(
        zip((one.entry_text(k) for k in range(one.n_entries)), one.hashes.tolist(), strict=True)
    )
    return [built[w] for w in windows]


_CHILD = """
import json, sys, time
from pathlib import Path
from benchmarks.decontaminate import eval_items
from thresher.contamination import NgramIndex

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

items = eval_items(int(sys.argv[1]), 1)
NgramIndex.build({"warm": ["compiled kernels loaded"]}, ngram=2)  # numba's own memory apart
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from here
before = status("VmRSS")
start = time.perf_counter()
index = NgramIndex.build({"eval": items})
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "before_kib": before, "peak_kib": status("VmHWM"),
                  "held_kib": status("VmRSS"), "index_bytes": index.nbytes,
                  "entries": index.n_entries}))
"""


def measure_memory(n_items: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n_items)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench(scale: Scale) -> list[str]:
    lines = [
        "| eval items | n-grams | lengths | build | docs/CPU s | docs/s (wall) | planted found | "
        "false positives | false negatives | collisions rejected | index | build peak RSS | held RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n_items in scale.set_sizes:
        items = eval_items(n_items, 1)
        documents, planted = corpus(scale, items, 2)
        start = time.perf_counter()
        index = NgramIndex.build({"eval": items})
        build = time.perf_counter() - start
        array = pa.array(documents, pa.large_string())
        index.scan(array.slice(0, 64))  # compiled (cached) before timing
        start, cpu = time.perf_counter(), time.process_time()
        found = np.concatenate(
            [index.scan(array.slice(i, 1024)).contaminated for i in range(0, len(documents), 1024)]
        )
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu
        rng = np.random.default_rng(3)
        sample = sorted(
            set(np.flatnonzero(planted).tolist())
            | set(rng.choice(len(documents), scale.reference_documents, replace=False).tolist())
        )
        reference = exact_matches(items, [documents[i] for i in sample])
        ours = found[sample].tolist()
        false_pos = sum(o and not r for o, r in zip(ours, reference, strict=True))
        false_neg = sum(r and not o for o, r in zip(ours, reference, strict=True))
        collisions = hash_only_hits(index, [documents[i] for i in sample[:200]])
        memory = measure_memory(n_items)
        peak = (memory["peak_kib"] - memory["before_kib"]) / 1024
        held = (memory["held_kib"] - memory["before_kib"]) / 1024
        lines.append(
            f"| {n_items:,} | {index.n_entries:,} | {len(index.lengths)} | {build:.2f} s | "
            f"{len(documents) / cpu_seconds:,.0f} | {len(documents) / seconds:,.0f} | "
            f"{int(found[planted].sum())}/{int(planted.sum())} | "
            f"{false_pos} of {len(sample):,} | {false_neg} of {len(sample):,} | {collisions} | "
            f"{index.nbytes / 1024**2:.1f} MiB | {peak:.0f} MiB | {held:.0f} MiB |"
        )
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decontaminate")
    parser.add_argument("--quick", action="store_true", help="development scale")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    scale = QUICK if quick else FULL
    output = io.StringIO()
    header = [
        f"## Decontamination{' (quick scale)' if quick else ''}",
        "",
        f"Machine: {os.cpu_count()} cores. Command: `python -m benchmarks.decontaminate"
        f"{' --quick' if quick else ''}`. {scale.documents:,} documents of {scale.words} "
        f"random words ({VOCABULARY:,}-word vocabulary), {PLANTED:.0%} planted with a 13-30 "
        "word span of an item (case, commas and line breaks changed); items of 13-80 words, "
        f"10% of 4-12 words; n = {NGRAM}. Exact matching (Python sets of n-gram strings) is "
        f"the reference on every planted document and {scale.reference_documents:,} random "
        "others; collisions are counted over 200 of them.",
        "",
    ]
    header.insert(-1, f"Load average (1 min) at the start: {os.getloadavg()[0]:.1f}.")
    header.insert(-1, "")
    print("\n".join(header), flush=True)
    start = time.perf_counter()
    lines = bench(scale)
    footer = ["", f"Wall time {time.perf_counter() - start:.0f} s.", ""]
    output.write("\n".join(header + lines + footer))
    print("\n".join(footer), flush=True)
    if not quick:
        target = Path(__file__).parent / "results" / "decontaminate.md"
        target.write_text(output.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
