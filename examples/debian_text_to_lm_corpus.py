"""Build a pretraining-style text corpus from the text on a Debian machine, with planted junk.

The language-model eval (``task: language_model``) trains small LMs on
subsets of this corpus and measures their loss on held-out text. Everything
is read from the machine, nothing is downloaded: the long descriptions of
the Debian package index (``apt-cache dumpavail`` and the index's English
translation files; run ``apt-get update`` once), English manual pages
rendered by ``man``, README and text files under ``/usr/share/doc``, and the
docstrings of Python's standard library. A source missing on the machine
gives no documents.

A share of the pool (``--low-quality-share``, default 20% of the documents)
is planted low-quality text of five kinds, made from the pool's own text:
``boilerplate`` (repeated cookie, legal, navigation or newsletter blocks),
``keyword_list`` (SEO tag lists), ``word_salad`` (a document's words
shuffled), ``truncated`` (5 to 25 words cut mid-sentence) and ``near_copy``
(a document with a few words changed). Clean documents of one domain,
``python_docs`` (standard-library docstrings and Python package
descriptions, about 12% of the pool's clean characters), are also held out
as a target set.

Output (``--out``, default ``examples/lm_corpus``)::

    train/part-00000.parquet ...    id, text, source, kind (clean or the planted kind)
    target/python_docs.parquet      id, text: held-out clean documents of the domain
    planted.parquet                 id, kind, origin: what each planted row was made from
    corpus.json                     documents and characters per source and kind, settings

The same machine, settings and seed give byte-identical files. Run it from
the repository root::

    apt-get update
    python examples/debian_text_to_lm_corpus.py
    python examples/debian_text_to_lm_corpus.py --pool-chars 2000000   # a smaller corpus
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from thresher.examples.lm_corpus import SOURCES, build_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "lm_corpus", help="output directory"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--low-quality-share", type=float, default=0.2, help="planted share of the documents"
    )
    parser.add_argument(
        "--pool-chars", type=int, default=9_000_000, help="characters of clean pool text"
    )
    parser.add_argument("--max-docs", type=int, default=None, help="at most this many clean docs")
    parser.add_argument("--target-docs", type=int, default=400, help="held-out domain documents")
    parser.add_argument(
        "--domain-share", type=float, default=0.12, help="domain share of the clean characters"
    )
    parser.add_argument(
        "--sources", nargs="+", choices=SOURCES, default=list(SOURCES), help="sources to read"
    )
    parser.add_argument("--shard-rows", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=None, help="threads rendering man pages")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        summary = build_corpus(
            args.out,
            sources=args.sources,
            low_quality_share=args.low_quality_share,
            target_docs=args.target_docs,
            pool_chars=args.pool_chars,
            max_docs=args.max_docs,
            domain_share=args.domain_share,
            seed=args.seed,
            shard_rows=args.shard_rows,
            workers=args.workers,
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    train, target = summary["train"], summary["target"]
    print(json.dumps({"train": train, "target": target}, indent=2))
    print(
        f"wrote {train['docs']:,} training documents ({train['characters']:,} characters) and "
        f"{target['docs']:,} target documents to {args.out} "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
