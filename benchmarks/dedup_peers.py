"""Near-duplicate removal against its peers: the same corpora through thresher and datatrove.

Three generated corpora (seeded, deterministic), each with known groups of
related documents:

1. ``planted``: :func:`benchmarks.minhash.make_corpus`: 4 KB documents of
   random words, a third of them in families (a base and 1-3 copies with 0
   to 40 words replaced).
2. ``chains``: chains A ~ B ~ C ~ ... of 600-word documents where each step
   replaces a fresh window of 32-42 words: consecutive documents have exact
   Jaccard 0.86-0.89, two steps apart 0.73-0.79 (below the 0.8 threshold),
   further apart less; plus unrelated documents.
3. ``templated``: pages made of one of a few 300-word templates with 10-40
   unique words inserted at a random place: within a template, pairs run
   from J 0.89 down to 0.75, a large share is above the threshold and chains
   run everywhere (one component holds every page); plus unrelated documents.

Systems, each run in a child process on the same JSONL files:

- ``thresher-keeper`` / ``thresher-components``: the curate flow (public
  API, ``thresher.run``) with a ``minhash`` scorer (word 5-grams, 128
  permutations), ``dedup`` at threshold 0.8 under ``dedup.clusters:
  keeper`` or ``components``, and a selector that keeps every other
  document. A thresher without the ``dedup.clusters`` option (before the
  keeper rule) runs ``components`` without it and reports ``keeper`` as not
  available.
- ``datatrove``: datatrove 0.10.1's MinHash pipeline with the FineWeb
  settings (word 5-grams, 14 buckets x 8 hashes, 64-bit hashes; no
  verification of candidate pairs), local executor. Its clustering step is
  :class:`_ClusterWithoutSelfPairs` (see there).
- ``text-dedup``: reported as not installable when its package is absent.

Measured per corpus and system, against exact Jaccard of word 5-gram
shingle sets under thresher's normalisation (lowercase, Unicode punctuation
removed, whitespace split; :func:`shingle_hashes`), computed only where
needed (pairs within a known group, each dropped document with its keeper):

- removed: documents dropped as duplicates;
- recall: pairs within a group at exact J >= 0.85 of which at most one
  document is kept;
- precision: dropped documents whose exact J with their keeper is >= 0.7
  (thresher names the keeper; for datatrove, the kept document of the
  dropped one's cluster); and how many removed documents are below the
  threshold itself (exact J with their keeper < 0.8);
- largest cluster; documents per second per core (wall time of the whole
  run, input to output, over the cores it was given); peak RSS of the
  child's process tree (sampled from ``/proc``; Prefect's local server is
  left out).

Default scale (15,000 documents per corpus; about 15-25 minutes on 2 cores)::

    python -m benchmarks.dedup_peers [--systems thresher-keeper,datatrove]

CI scale (600 documents per corpus; about a minute)::

    python -m benchmarks.dedup_peers --quick      # or THRESHER_BENCH_QUICK=1

The output is printed; at the default scale it is also written to
``benchmarks/results/dedup_peers.md``. datatrove (and spaCy, its English
word tokenizer) come from the benchmark-only extra ``bench-dedup``
(``pip install -e '.[bench-dedup]'``); thresher never imports them.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

NGRAM = 5
NUM_PERM = 128
THRESHOLD = 0.8
RECALL_JACCARD = 0.85  # pairs at or above must be found
PRECISION_JACCARD = 0.7  # a removal is right when its keeper is at least this similar
SYSTEMS = (
    "thresher-keeper",
    "thresher-keeper-spark",
    "thresher-components",
    "datatrove",
    "text-dedup",
)
FULL_DOCUMENTS = 15_000
QUICK_DOCUMENTS = 600


# -- corpora ---------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Documents with their known groups of related documents (input positions)."""

    name: str
    ids: list[str]
    texts: list[str]
    groups: list[list[int]]
    description: str = ""


def _vocabulary(rng: np.random.Generator, size: int) -> NDArray[np.str_]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return np.array(["".join(rng.choice(letters, size=rng.integers(3, 10))) for _ in range(size)])


def _shuffled(
    name: str, texts: list[str], groups: list[list[int]], rng: np.random.Generator, description: str
) -> Corpus:
    """The corpus in a random order (groups follow their documents); ids by new position."""
    order = rng.permutation(len(texts))
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return Corpus(
        name,
        [f"{name}-{i:06d}" for i in range(len(texts))],
        [texts[i] for i in order],
        [[int(position[i]) for i in group] for group in groups],
        description,
    )


def make_planted(n_documents: int, seed: int = 0) -> Corpus:
    """:func:`benchmarks.minhash.make_corpus`: random 4 KB documents, planted families."""
    from benchmarks.minhash import make_corpus

    corpus = make_corpus(n_documents, seed=seed)
    return Corpus(
        "planted",
        [f"planted-{i:06d}" for i in range(len(corpus.texts))],
        corpus.texts,
        corpus.families,
        "4 KB documents of random words; families of a base and 1-3 copies with 0-40 words replaced",
    )


CHAIN_WORDS = 600
CHAIN_WINDOW = (32, 42)  # words replaced per step (inclusive): J(step) 0.86-0.89, J(2 steps) < 0.8


def make_chains(n_documents: int, seed: int = 0, chain_share: float = 0.5) -> Corpus:
    """Chains of 3-8 documents, each a copy of the previous one with a fresh window replaced.

    The windows of one chain lie in disjoint slots at least 4 words apart, so
    their changed shingles add up: consecutive documents share all but
    ``w + 4`` of 596 shingles (J 0.86-0.89), two steps apart J < 0.8.
    """
    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng, 50_000)

    def words(count: int) -> list[str]:
        return [str(w) for w in vocabulary[rng.integers(0, vocabulary.size, size=count)]]

    start_chain = chain_share / (5.5 - 4.5 * chain_share)  # chains average 5.5 documents
    texts: list[str] = []
    groups: list[list[int]] = []
    while len(texts) < n_documents:
        length = int(rng.integers(3, 9))
        if rng.random() < start_chain:
            document = words(CHAIN_WORDS)
            slot = CHAIN_WORDS // (length - 1)
            chain = [len(texts)]
            texts.append(" ".join(document))
            for step in rng.permutation(length - 1):
                width = int(rng.integers(CHAIN_WINDOW[0], CHAIN_WINDOW[1] + 1))
                low = int(step) * slot + 4
                start = int(rng.integers(low, (int(step) + 1) * slot - 4 - width + 1))
                document = document[:start] + words(width) + document[start + width :]
                chain.append(len(texts))
                texts.append(" ".join(document))
            groups.append(chain)
        else:
            texts.append(" ".join(words(CHAIN_WORDS)))
    texts = texts[:n_documents]
    groups = [[i for i in g if i < n_documents] for g in groups]
    return _shuffled(
        "chains",
        texts,
        [g for g in groups if len(g) >= 2],
        rng,
        f"{CHAIN_WORDS}-word documents; chains of 3-8 where each step replaces a fresh window of "
        f"{CHAIN_WINDOW[0]}-{CHAIN_WINDOW[1]} words (J(step) 0.86-0.89, J(2 steps) < 0.8)",
    )


TEMPLATE_WORDS = 300
UNIQUE_WORDS = (10, 40)  # J within a template from 0.89 (10 + 10 words) down to 0.75 (40 + 40)
TEMPLATE_PAGES = 3_000


def make_templated(n_documents: int, seed: int = 0, templated_share: float = 0.6) -> Corpus:
    """Pages of a few 300-word templates with 10-40 unique words inserted at one random place.

    ``templated_share`` of the documents are pages, about 3,000 per template
    (fewer templates in a small corpus); the rest are unrelated documents of
    300-340 random words.
    """
    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng, 50_000)

    def words(count: int) -> list[str]:
        return [str(w) for w in vocabulary[rng.integers(0, vocabulary.size, size=count)]]

    pages = round(templated_share * n_documents)
    n_templates = max(1, round(pages / TEMPLATE_PAGES))
    bounds = np.linspace(0, pages, n_templates + 1).astype(int)
    texts: list[str] = []
    groups: list[list[int]] = []
    for index in range(n_templates):
        template = words(TEMPLATE_WORDS)
        group = []
        for _ in range(int(bounds[index + 1] - bounds[index])):
            at = int(rng.integers(4, TEMPLATE_WORDS - 4))
            unique = words(int(rng.integers(UNIQUE_WORDS[0], UNIQUE_WORDS[1] + 1)))
            group.append(len(texts))
            texts.append(" ".join(template[:at] + unique + template[at:]))
        groups.append(group)
    while len(texts) < n_documents:
        texts.append(" ".join(words(int(rng.integers(TEMPLATE_WORDS, TEMPLATE_WORDS + 41)))))
    return _shuffled(
        "templated",
        texts,
        [g for g in groups if len(g) >= 2],
        rng,
        f"{n_templates} template(s) of {TEMPLATE_WORDS} words, {pages:,} pages with "
        f"{UNIQUE_WORDS[0]}-{UNIQUE_WORDS[1]} unique words inserted; the rest unrelated",
    )


CORPORA: dict[str, Callable[[int], Corpus]] = {
    "planted": make_planted,
    "chains": make_chains,
    "templated": make_templated,
}


# -- exact Jaccard ---------------------------------------------------------------------------


@functools.cache
def _punctuation_table() -> dict[int, None]:
    """Every code point of Unicode category ``P*`` mapped to nothing (``str.translate``)."""
    return {
        code: None
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)).startswith("P")
    }


def normalised_words(texts: list[str]) -> list[list[str]]:
    """Words after thresher's normalisation: Arrow lowercase, no ``P*`` characters, split."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lowered = pc.utf8_lower(pa.array(texts, pa.large_string())).to_pylist()
    table = _punctuation_table()
    return [text.translate(table).split() for text in lowered]


def shingle_hashes(words: list[str], ngram: int = NGRAM) -> NDArray[np.uint64]:
    """The sorted, distinct xxh3-64 hashes of a document's word n-grams (thresher's shingles).

    A document shorter than ``ngram`` words has one shingle, all its words;
    one without words has none. 64-bit hashes stand for the shingles: a
    collision among a few million shingles has probability below 1e-6.
    """
    import xxhash

    if not words:
        return np.empty(0, np.uint64)
    count = max(1, len(words) - ngram + 1)
    hashes = [
        xxhash.xxh3_64_intdigest(" ".join(words[i : i + ngram]).encode()) for i in range(count)
    ]
    return np.unique(np.array(hashes, np.uint64))


class ShingleSets:
    """Exact Jaccard of word n-gram shingle sets, computed for the documents asked about."""

    def __init__(self, texts: list[str], ngram: int = NGRAM) -> None:
        self.texts = texts
        self.ngram = ngram
        self._sets: dict[int, NDArray[np.uint64]] = {}

    def of(self, positions: list[int]) -> list[NDArray[np.uint64]]:
        """The shingle hash sets of ``positions`` (computed once each)."""
        missing = sorted({p for p in positions if p not in self._sets})
        for start in range(0, len(missing), 2_000):
            chunk = missing[start : start + 2_000]
            for p, words in zip(
                chunk, normalised_words([self.texts[p] for p in chunk]), strict=True
            ):
                self._sets[p] = shingle_hashes(words, self.ngram)
        return [self._sets[p] for p in positions]

    def jaccard(self, a: int, b: int) -> float:
        first, second = self.of([a, b])
        if first.size == 0 and second.size == 0:
            return 1.0
        common = np.intersect1d(first, second, assume_unique=True).size
        return common / (first.size + second.size - common)

    def pairs(
        self, group: list[int]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
        """Every pair ``a < b`` (by position in ``group``) of a group and its exact Jaccard.

        One sparse product of the group's document-by-shingle matrix gives
        all intersections at once (a group of thousands is millions of pairs).
        """
        from scipy import sparse

        sets = self.of(group)
        sizes = np.array([s.size for s in sets], np.int64)
        _, columns = np.unique(np.concatenate(sets), return_inverse=True)
        rows = np.repeat(np.arange(len(group)), sizes)
        matrix = sparse.csr_matrix(
            (np.ones(columns.size, np.int32), (rows, columns)),
            shape=(len(group), columns.max() + 1),
        )
        common = (matrix @ matrix.T).toarray()
        first, second = np.triu_indices(len(group), k=1)
        shared = common[first, second]
        union = sizes[first] + sizes[second] - shared
        members = np.asarray(group, np.int64)
        jaccard = np.where(union > 0, shared / np.maximum(union, 1), 1.0)
        return members[first], members[second], jaccard


# -- one system's outcome and its measures ---------------------------------------------------


@dataclass
class Outcome:
    """What a system did to a corpus, by input position.

    ``keeper[i]`` is the position of the document dropped ``i`` is measured
    against (-1: ``i`` is kept, or no kept document shares its cluster);
    ``cluster[i]`` is its cluster (-1: a singleton).
    """

    kept: NDArray[np.bool_]
    keeper: NDArray[np.int64]
    cluster: NDArray[np.int64]
    wall: float = 0.0
    cores: int = 1
    peak_rss: int = 0
    note: str = ""


def outcome_from_ids(
    ids: list[str], dropped: dict[str, str | None], clusters: dict[str, int], **measures: Any
) -> Outcome:
    """An :class:`Outcome` from ``dropped`` (id -> keeper id or None) and ``clusters`` (id -> cluster)."""
    position = {doc: i for i, doc in enumerate(ids)}
    kept = np.ones(len(ids), bool)
    keeper = np.full(len(ids), -1, np.int64)
    cluster = np.full(len(ids), -1, np.int64)
    for doc, keeper_id in dropped.items():
        kept[position[doc]] = False
        if keeper_id is not None:
            keeper[position[doc]] = position[keeper_id]
    for doc, number in clusters.items():
        cluster[position[doc]] = number
    return Outcome(kept, keeper, cluster, **measures)


def keepers_by_cluster(
    ids: list[str], dropped: set[str], clusters: dict[str, int]
) -> dict[str, str | None]:
    """For systems that name no keeper: each dropped document's keeper is its cluster's kept one."""
    kept_of: dict[int, str] = {}
    for doc in ids:
        number = clusters.get(doc, -1)
        if doc not in dropped and number >= 0:
            kept_of.setdefault(number, doc)
    return {doc: kept_of.get(clusters.get(doc, -1)) for doc in dropped}


@dataclass
class Measures:
    removed: int
    recall: float
    true_pairs: int
    found_pairs: int
    precision: float
    precise: int
    below_threshold: int
    without_keeper: int
    largest_cluster: int


def measure(corpus: Corpus, outcome: Outcome, sets: ShingleSets) -> Measures:
    """Removed, pair recall at exact J >= 0.85, removal precision at exact J >= 0.7, largest cluster."""
    true_pairs = found = 0
    for group in corpus.groups:
        first, second, jaccard = sets.pairs(group)
        must = jaccard >= RECALL_JACCARD
        true_pairs += int(must.sum())
        found += int((~(outcome.kept[first[must]] & outcome.kept[second[must]])).sum())
    dropped = np.flatnonzero(~outcome.kept)
    precise = below = without_keeper = 0
    for doc in dropped.tolist():
        keeper = int(outcome.keeper[doc])
        if keeper < 0:
            without_keeper += 1
            continue
        jaccard = sets.jaccard(doc, keeper)
        precise += jaccard >= PRECISION_JACCARD
        below += jaccard < THRESHOLD
    clustered = outcome.cluster[outcome.cluster >= 0]
    largest = int(np.unique(clustered, return_counts=True)[1].max()) if clustered.size else 1
    return Measures(
        removed=int(dropped.size),
        recall=found / true_pairs if true_pairs else 1.0,
        true_pairs=true_pairs,
        found_pairs=found,
        precision=precise / dropped.size if dropped.size else 1.0,
        precise=precise,
        below_threshold=below,
        without_keeper=without_keeper,
        largest_cluster=largest,
    )


# -- the systems (child side) ----------------------------------------------------------------


def write_jsonl(corpus: Corpus, directory: Path, files: int) -> list[Path]:
    """The corpus as ``files`` JSONL files (``id``, ``text``), in input order."""
    directory.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(corpus.texts), files + 1).astype(int)
    paths = []
    for index in range(files):
        path = directory / f"part-{index:05d}.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for i in range(int(bounds[index]), int(bounds[index + 1])):
                out.write(json.dumps({"id": corpus.ids[i], "text": corpus.texts[i]}) + "\n")
        paths.append(path)
    return paths


def has_cluster_rule() -> bool:
    """Whether this thresher has the ``dedup.clusters`` option (the keeper-centred rule)."""
    from thresher.config import DedupConfig

    return "clusters" in DedupConfig.model_fields


def thresher_config(
    inputs: Path, run_dir: Path, rule: str, cores: int, engine: str = "local"
) -> dict[str, Any]:
    """The curate run: a ``minhash`` scorer, dedup at 0.8 under ``rule``, every other doc kept."""
    dedup: dict[str, Any] = {"threshold": THRESHOLD}
    if has_cluster_rule():
        dedup["clusters"] = rule
    return {
        "run_dir": str(run_dir),
        "seed": 0,
        "input": {"paths": [str(inputs / "*.jsonl")]},
        "schema": {"id": "id", "text": "text"},
        "scorers": [{"name": "minhash", "params": {"ngram": NGRAM, "num_perm": NUM_PERM}}],
        "dedup": dedup,
        "selector": {"name": "random", "budget": 1.0},
        "engine": (
            {"kind": "local", "workers": cores}
            if engine == "local"
            else {
                "kind": "spark",
                "spark": {"master": f"local[{cores}]", "conf": {"spark.ui.enabled": "false"}},
            }
        ),
    }


def run_thresher(job: dict[str, Any], sampler: TreeSampler) -> dict[str, Any]:
    from prefect import flow

    import thresher
    from thresher.dedup.spec import read_clusters
    from thresher.run_dir import RunDir

    rule = job["system"].removeprefix("thresher-").removesuffix("-spark")
    engine = "spark" if job["system"].endswith("-spark") else "local"
    if rule == "keeper" and not has_cluster_rule():
        return {"unavailable": "this thresher has no `dedup.clusters` option yet"}

    @flow(name="warm-up")
    def warm_up() -> None:
        """Start Prefect's temporary server before the clock starts."""

    warm_up()
    sampler.start(exclude_existing=True)  # Prefect's server is not part of the measure
    run_dir = Path(job["work"]) / "run"
    start = time.perf_counter()
    config = thresher_config(Path(job["inputs"]), run_dir, rule, job["cores"], engine)
    thresher.run(config, quiet=True)
    wall = time.perf_counter() - start
    sampler.stop()
    table = read_clusters(RunDir(run_dir), ["id", "cluster", "keeper", "keeper_id"]).to_pylist()
    return {
        "wall": wall,
        "dropped": {r["id"]: r["keeper_id"] for r in table if not r["keeper"]},
        "clusters": {r["id"]: r["cluster"] for r in table},
        "note": "" if has_cluster_rule() else "components: this thresher's only rule",
    }


def xxhash64_text(text: str) -> int:
    """xxh64 of a string's UTF-8 bytes: datatrove's shingle hash, as xxhash < 4 computed it."""
    import xxhash

    return int(xxhash.xxh64_intdigest(text.encode("utf-8")))


def _datatrove_signature_step() -> Any:
    """datatrove's ``MinhashDedupSignature`` hashing shingles with xxhash 4.

    datatrove 0.10.1 passes each shingle as ``str`` to ``xxh64_intdigest``,
    which xxhash 4 refuses ("Strings must be encoded before hashing"); this
    subclass encodes it as UTF-8 first, which is what xxhash 3 did itself:
    the same hash values.
    """
    from datatrove.pipeline.dedup import MinhashDedupSignature

    class SignatureOfEncodedText(MinhashDedupSignature):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._hash_func = xxhash64_text

    return SignatureOfEncodedText


def _datatrove_cluster_step() -> Any:
    """datatrove's ``MinhashDedupCluster`` made safe against its duplicate self-pairs.

    datatrove 0.10.1's bucket step can report a document as a duplicate of
    itself; its clustering step then registers the document without giving
    it a set size and fails with ``KeyError`` in its statistics
    (``set_size[p]``). This subclass drops such pairs from the ``.dups``
    files before the unchanged clustering runs; a self-pair links nothing,
    so the clusters are those datatrove means to build.
    """
    from datatrove.pipeline.dedup.minhash import MinhashDedupCluster

    class ClusterWithoutSelfPairs(MinhashDedupCluster):  # type: ignore[misc]
        removed_self_pairs = 0

        def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Any:
            for name in self.input_folder.list_files(glob_pattern="*.dups"):
                with self.input_folder.open(name, "rb") as f:
                    raw = f.read()
                pairs = np.frombuffer(raw, np.uint32).reshape(-1, 4)
                self_pair = (pairs[:, 0] == pairs[:, 2]) & (pairs[:, 1] == pairs[:, 3])
                if self_pair.any():
                    ClusterWithoutSelfPairs.removed_self_pairs += int(self_pair.sum())
                    with self.input_folder.open(name, "wb") as f:
                        f.write(pairs[~self_pair].tobytes())
            return super().run(data, rank, world_size)

    return ClusterWithoutSelfPairs


def run_datatrove(job: dict[str, Any], sampler: TreeSampler) -> dict[str, Any]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    work, cores = Path(job["work"]), job["cores"]
    files = len(list(Path(job["inputs"]).glob("*.jsonl")))
    config = MinhashConfig(
        hash_config=HashConfig(precision=64), num_buckets=14, hashes_per_bucket=8, n_grams=NGRAM
    )
    signature_step, cluster_step = _datatrove_signature_step(), _datatrove_cluster_step()

    def reader() -> Any:
        return JsonlReader(job["inputs"], glob_pattern="*.jsonl", add_file_path=False)

    def executor(pipeline: list[Any], tasks: int, name: str) -> Any:
        return LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=min(cores, tasks),
            logging_dir=str(work / "logs" / name),
            skip_completed=False,
        )

    stages = [
        executor(
            [reader(), signature_step(output_folder=str(work / "signatures"), config=config)],
            files,
            "signatures",
        ),
        executor(
            [
                MinhashDedupBuckets(
                    input_folder=str(work / "signatures"),
                    output_folder=str(work / "buckets"),
                    config=config,
                )
            ],
            config.num_buckets,
            "buckets",
        ),
        executor(
            [
                cluster_step(
                    input_folder=str(work / "buckets"),
                    output_folder=str(work / "remove"),
                    config=config,
                    save_cluster_id=True,
                )
            ],
            1,
            "clusters",
        ),
        executor(
            [
                reader(),
                MinhashDedupFilter(
                    input_folder=str(work / "remove"),
                    exclusion_writer=JsonlWriter(str(work / "removed"), compression=None),
                    load_cluster_ids=True,
                ),
                JsonlWriter(str(work / "kept"), compression=None),
            ],
            files,
            "filter",
        ),
    ]
    sampler.start(exclude_existing=False)
    start = time.perf_counter()
    for stage in stages:
        stage.run()
    wall = time.perf_counter() - start
    sampler.stop()

    def documents(folder: str) -> list[tuple[str, int]]:
        rows = []
        for path in sorted((work / folder).glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                rows.append((record["id"], int(record["metadata"]["minhash_cluster_id"])))
        return rows

    kept, removed = documents("kept"), documents("removed")
    clusters = {doc: number for doc, number in kept + removed if number >= 0}
    ids = [doc for doc, _ in kept + removed]
    dropped = keepers_by_cluster(ids, {doc for doc, _ in removed}, clusters)
    self_pairs = cluster_step.removed_self_pairs  # counted in the clustering task's process
    return {
        "wall": wall,
        "dropped": dropped,
        "clusters": clusters,
        "note": f"clusters step without self-pairs (seen: {self_pairs})" if self_pairs else "",
    }


def run_text_dedup(job: dict[str, Any], sampler: TreeSampler) -> dict[str, Any]:
    try:
        import text_dedup  # noqa: F401
    except ImportError:
        return {
            "unavailable": "not installable: text-dedup 0.4.0 would downgrade rich (15.0 to "
            "13.9.4) and urllib3 (2.8 to 1.26.20), and pulls datasets, onnxruntime and Sphinx"
        }
    return {"unavailable": "installed, but no runner is written for it yet"}


RUNNERS: dict[str, Callable[[dict[str, Any], TreeSampler], dict[str, Any]]] = {
    "thresher-keeper": run_thresher,
    "thresher-keeper-spark": run_thresher,
    "thresher-components": run_thresher,
    "datatrove": run_datatrove,
    "text-dedup": run_text_dedup,
}


class TreeSampler:
    """Peak resident memory of this process and its descendants, sampled from ``/proc``.

    ``start(exclude_existing=True)`` leaves out the descendants alive at the
    start (Prefect's local server) and theirs.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = 0
        self._excluded: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _processes() -> tuple[dict[int, int], dict[int, int]]:
        parents, rss = {}, {}
        page = os.sysconf("SC_PAGE_SIZE")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * page
        return parents, rss

    def _tree(self) -> tuple[list[int], dict[int, int]]:
        parents, rss = self._processes()
        children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            children.setdefault(parent, []).append(pid)
        tree, frontier = [], [os.getpid()]
        while frontier:
            pid = frontier.pop()
            if pid in self._excluded:
                continue
            tree.append(pid)
            frontier.extend(children.get(pid, []))
        return tree, rss

    def start(self, exclude_existing: bool) -> None:
        if exclude_existing:
            self._excluded = set(self._tree()[0]) - {os.getpid()}
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            tree, rss = self._tree()
            self.peak = max(self.peak, sum(rss.get(pid, 0) for pid in tree))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def child(job_file: str, result_file: str) -> None:
    """Run one system on one corpus and write what it did (the child side of :func:`run_system`)."""
    job = json.loads(Path(job_file).read_text())
    sampler = TreeSampler()
    result = RUNNERS[job["system"]](job, sampler)
    result["tree_peak_rss"] = sampler.peak
    result["self_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(result_file).write_text(json.dumps(result))


# -- the parent side -------------------------------------------------------------------------


@dataclass
class SystemResult:
    system: str
    outcome: Outcome | None = None
    measures: Measures | None = None
    unavailable: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def run_system(system: str, corpus: Corpus, inputs: Path, work: Path, cores: int) -> SystemResult:
    """Run ``system`` on the JSONL files under ``inputs`` in a child process."""
    work.mkdir(parents=True)
    job_file, result_file = work / "job.json", work / "result.json"
    job = {"system": system, "inputs": str(inputs), "work": str(work), "cores": cores}
    job_file.write_text(json.dumps(job))
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
        "LOGURU_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_URL", None)
    log = work / "child.log"
    with log.open("w") as out:
        finished = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.dedup_peers",
                "--child",
                str(job_file),
                str(result_file),
            ],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if finished.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return SystemResult(
            system, unavailable=f"failed ({finished.returncode}): {' / '.join(tail)}"
        )
    result = json.loads(result_file.read_text())
    if "unavailable" in result:
        return SystemResult(system, unavailable=result["unavailable"])
    outcome = outcome_from_ids(
        corpus.ids,
        result["dropped"],
        result["clusters"],
        wall=result["wall"],
        cores=cores,
        peak_rss=result["tree_peak_rss"],
        note=result.get("note", ""),
    )
    return SystemResult(system, outcome, extra={"self_peak_rss": result["self_peak_rss"]})


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def corpus_lines(corpus: Corpus, results: list[SystemResult], seconds: float) -> list[str]:
    in_groups = sum(len(g) for g in corpus.groups)
    true_pairs = next((r.measures.true_pairs for r in results if r.measures), None)
    lines = [
        f"### Corpus `{corpus.name}`: {len(corpus.texts):,} documents",
        "",
        f"{corpus.description}. {len(corpus.groups):,} groups holding {in_groups:,} documents"
        + (
            f"; {true_pairs:,} pairs within groups at exact J >= {RECALL_JACCARD}"
            if true_pairs is not None
            else ""
        )
        + f". Generated in {seconds:.0f} s.",
        "",
        "| system | removed | recall (J >= 0.85 pairs) | precision (J to keeper >= 0.7) "
        "| J to keeper < 0.8 | largest cluster | docs/s per core | wall s | cores | peak RSS (tree) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for result in results:
        if result.unavailable or result.outcome is None or result.measures is None:
            lines.append(f"| {result.system} | {result.unavailable} | | | | | | | | |")
            continue
        o, m = result.outcome, result.measures
        rate = len(corpus.texts) / o.wall / o.cores
        lines.append(
            f"| {result.system} | {m.removed:,} | {m.recall:.4f} ({m.found_pairs:,}) "
            f"| {m.precision:.4f} ({m.precise:,}) | {m.below_threshold:,} | {m.largest_cluster:,} | {rate:,.0f} "
            f"| {o.wall:.1f} | {o.cores} | {_gib(o.peak_rss)} |"
        )
        if m.without_keeper:
            notes.append(
                f"{result.system}: {m.without_keeper:,} removed documents had no kept "
                "document in their cluster (counted as imprecise)."
            )
        if o.note:
            notes.append(f"{result.system}: {o.note}.")
    by_system = {r.system: r.outcome for r in results if r.outcome is not None}
    local, spark = by_system.get("thresher-keeper"), by_system.get("thresher-keeper-spark")
    if local is not None and spark is not None:
        same = bool(
            np.array_equal(local.keeper, spark.keeper)
            and np.array_equal(local.kept, spark.kept)
            and np.array_equal(local.cluster, spark.cluster)
        )
        notes.append(
            "thresher-keeper on both engines: "
            + ("identical clusters and keepers." if same else "the clusters DIFFER.")
        )
    lines.append("")
    if notes:
        lines += [*notes, ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["--child"]:
        child(arguments[1], arguments[2])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dedup_peers")
    parser.add_argument("--quick", action="store_true", help="CI scale")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems")
    parser.add_argument("--corpora", default=",".join(CORPORA), help="comma-separated corpora")
    parser.add_argument("--documents", type=int, default=None, help="documents per corpus")
    args, _ = parser.parse_known_args(arguments)
    quick = args.quick or os.environ.get("THRESHER_BENCH_QUICK") == "1"
    n_documents = args.documents or (QUICK_DOCUMENTS if quick else FULL_DOCUMENTS)
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS] + [
        c for c in args.corpora.split(",") if c not in CORPORA
    ]
    if unknown:
        raise SystemExit(f"unknown system or corpus {unknown[0]!r}")
    cores = os.cpu_count() or 1
    output = io.StringIO()

    def emit(lines: list[str]) -> None:
        text = "\n".join(lines) + "\n"
        print(text, end="", flush=True)
        output.write(text)

    command = " ".join(["python -m benchmarks.dedup_peers", *arguments])
    emit(
        [
            f"## Near-duplicate removal against peers{' (CI scale)' if quick else ''}",
            "",
            f"Machine: {cores} cores; each system runs in a child process given all {cores}. "
            f"Command: `{command}`. Threshold {THRESHOLD}, word {NGRAM}-grams. Recall: pairs "
            f"within a known group at exact Jaccard >= {RECALL_JACCARD} of which at most one "
            f"document is kept. Precision: removed documents whose exact Jaccard with their "
            f"keeper is >= {PRECISION_JACCARD} (datatrove names no keeper: the kept document of "
            "the removed one's cluster). Exact Jaccard of word 5-gram shingle sets after "
            "thresher's normalisation. Wall time covers the whole run, JSONL in, output out; "
            "peak RSS is the child's process tree (Prefect's local server left out).",
            "",
        ]
    )
    with tempfile.TemporaryDirectory(prefix="thresher-bench-dedup-peers-") as directory:
        work = Path(directory)
        for name in args.corpora.split(","):
            start = time.perf_counter()
            corpus = CORPORA[name](n_documents)
            generated = time.perf_counter() - start
            inputs = work / name / "input"
            write_jsonl(corpus, inputs, cores)
            sets = ShingleSets(corpus.texts)
            results = []
            for system in systems:
                result = run_system(system, corpus, inputs, work / name / system, cores)
                if result.outcome is not None:
                    result.measures = measure(corpus, result.outcome, sets)
                results.append(result)
            emit(corpus_lines(corpus, results, generated))
    if not quick:
        target = Path(__file__).parent / "results" / "dedup_peers.md"
        target.write_text(output.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
