"""Language identification accuracy on man pages, and docs/s of `language` and `token_count`.

1. ``accuracy``: a multilingual sample built offline from the translated
   manual pages of this machine (``/usr/share/man/<lang>/``, their language
   known from the path; English from ``/usr/share/man/man*``). Each page is
   rendered with ``man -l`` (groff) and cut into paragraphs of body text;
   paragraphs of at least 200 UTF-8 bytes are kept, at most 200 per language
   (seeded). Translated pages often keep passages in English (untranslated
   option descriptions): a paragraph that the English original of the page
   holds word for word is dropped. Some mixed paragraphs remain, so no
   classifier reaches 100%: the share of errors answered ``en`` is shown. Backends: ``py3langid`` (thresher's
   batched kernel over py3langid's model) and ``lingua``.
2. ``throughput``: documents per CPU second (one core; the CPU time of the
   process, threads included) on the sample corpus (:mod:`thresher.examples.sample_corpus`,
   documents of about 1 KB), scoring batches of 1,024 as a worker does:
   ``language`` with each backend, py3langid's own ``classify`` loop (the
   baseline the kernel replaces), ``token_count`` with the reference LM's
   BPE tokenizer (default settings, trained on the sample) and with a
   Hugging Face ``tokenizer.json`` (a byte-level BPE of the same vocabulary
   size trained locally with the ``tokenizers`` package).

Full run (a few minutes)::

    python -m benchmarks.text_scorers

Development scale (fewer documents)::

    python -m benchmarks.text_scorers --quick      # or THRESHER_BENCH_QUICK=1

The full-scale output is written to ``benchmarks/results/text_scorers.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

MAN = Path("/usr/share/man")
MIN_BYTES = 200  # UTF-8 bytes: about 200 Latin or 70 CJK characters
PER_LANGUAGE = 200
RESULTS = Path(__file__).parent / "results" / "text_scorers.md"


# -- the multilingual sample ----------------------------------------------------------------


def _render(path: Path) -> str:
    env = {**os.environ, "MANWIDTH": "2000", "LANG": "C.UTF-8", "MAN_KEEP_FORMATTING": "0"}
    try:
        rendered = subprocess.run(
            ["man", "-l", "-E", "UTF-8", "-P", "cat", str(path)],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        ).stdout.decode("utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        return ""
    return re.sub(r".\x08", "", rendered)  # overstrike (bold, underline)


def _paragraphs(text: str) -> list[str]:
    """Paragraphs of body text (indented lines; section headings and page header dropped)."""
    body = [line if line.startswith(" ") else "" for line in text.splitlines()]
    out = []
    for block in re.split(r"\n\s*\n", "\n".join(body)):
        paragraph = " ".join(block.split())
        if len(paragraph.encode()) >= MIN_BYTES:
            out.append(paragraph)
    return out


def _translated_paragraphs(page: Path) -> list[str]:
    """Paragraphs of a translated page that its English original does not hold word for word."""
    parts = page.relative_to(MAN).parts  # (lang, manN, name)
    original = MAN.joinpath(*parts[1:])
    english = set(_paragraphs(_render(original))) if original.is_file() else set()
    return [p for p in _paragraphs(_render(page)) if p not in english]


def _pages(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("man*/*") if p.is_file())


def build_sample(cache: Path, per_language: int) -> list[dict[str, str]]:
    """Paragraphs with the language of their directory (cached as JSONL)."""
    path = cache / f"manpages-v2-{MIN_BYTES}-{per_language}.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(0)
    sources: dict[str, list[Path]] = {}
    for directory in sorted(MAN.iterdir()):
        if directory.is_dir() and not directory.name.startswith("man"):
            sources.setdefault(directory.name.split("_")[0].split(".")[0], []).extend(
                _pages(directory)
            )
    english = sorted(p for p in MAN.glob("man[1-8]/*") if p.is_file())
    sources["en"] = rng.sample(english, min(400, len(english)))
    rows: list[dict[str, str]] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for language, pages in sorted(sources.items()):
            if language == "en":
                found = (_paragraphs(_render(page)) for page in pages)
            else:
                found = pool.map(_translated_paragraphs, pages)
            paragraphs = sorted({p for page in found for p in page})
            chosen = rng.sample(paragraphs, min(per_language, len(paragraphs)))
            rows += [{"language": language, "text": text} for text in chosen]
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return rows


# -- measurements ---------------------------------------------------------------------------


def _cpu_rate(fn: Any, texts: list[str], batch: int = 1024) -> tuple[float, float, list[Any]]:
    """Documents per CPU second and per wall second of ``fn`` over batches, and its outputs."""
    outputs: list[Any] = []
    fn(texts[:batch])  # warm: models loaded, kernels compiled
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(texts), batch):
        outputs.extend(fn(texts[start : start + batch]))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return len(texts) / cpu, len(texts) / wall, outputs


def _scorer_fn(scorer: Any) -> Any:
    scorer.setup()

    def run(texts: list[str]) -> list[Any]:
        result = scorer.score(pa.record_batch([pa.array(texts, pa.string())], names=["text"]))
        if isinstance(result, pa.StructArray):
            return list(zip(result.field(0).to_pylist(), result.field(1).to_pylist(), strict=True))
        return result.to_pylist()

    return run


def accuracy(rows: list[dict[str, str]], backends: list[str]) -> dict[str, Any]:
    from thresher.scorers import make_scorer

    texts = [r["text"] for r in rows]
    truth = [r["language"] for r in rows]
    out: dict[str, Any] = {"n": len(rows), "per_language": Counter(truth)}
    for backend in backends:
        per_cpu, per_wall, answers = _cpu_rate(
            _scorer_fn(make_scorer("language", {"backend": backend})), texts, batch=256
        )
        codes = [code for code, _ in answers]
        right = [c == t for c, t in zip(codes, truth, strict=True)]
        by_language = {
            language: float(
                np.mean([r for r, t in zip(right, truth, strict=True) if t == language])
            )
            for language in sorted(set(truth))
        }
        wrong = [c for c, r in zip(codes, right, strict=True) if not r]
        out[backend] = {
            "accuracy": float(np.mean(right)),
            "macro_accuracy": float(np.mean(list(by_language.values()))),
            "by_language": by_language,
            "errors_answered_en": (sum(c == "en" for c in wrong) / len(wrong)) if wrong else 0.0,
            "docs_per_cpu_second": per_cpu,
            "docs_per_second": per_wall,
        }
    return out


def throughput(n_documents: int, backends: list[str]) -> dict[str, dict[str, float]]:
    """docs/s per core of every scorer measured on the sample corpus."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from thresher.examples.sample_corpus import generate_records
    from thresher.fitting import FitContext
    from thresher.models.lm_training import LM_DEFAULTS
    from thresher.scorers import make_scorer

    texts = [r["text"] for r in generate_records(n_documents, seed=0)]
    corpus = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    out: dict[str, dict[str, float]] = {}

    for backend in backends:
        per_cpu, per_wall, _ = _cpu_rate(
            _scorer_fn(make_scorer("language", {"backend": backend})), texts
        )
        out[f"language ({backend})"] = {"cpu": per_cpu, "wall": per_wall}
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    per_cpu, per_wall, _ = _cpu_rate(lambda b: [identifier.classify(t) for t in b], texts[:5000])
    out["py3langid `classify`, one call per document (baseline)"] = {
        "cpu": per_cpu,
        "wall": per_wall,
    }

    with tempfile.TemporaryDirectory(prefix="thresher-bench-tokens-") as directory:

        def sample(n: int, columns: list[str], seed: int) -> pa.Table:
            rows = np.sort(np.random.default_rng(seed).choice(corpus.num_rows, n, replace=False))
            return corpus.take(pa.array(rows))

        artifacts = Path(directory) / "models" / "token_count"
        artifacts.mkdir(parents=True)
        context = FitContext(artifact_dir=artifacts, sample=sample, n_rows=corpus.num_rows, seed=0)
        scorer = make_scorer("token_count")
        scorer.fit(context)
        per_cpu, per_wall, counts = _cpu_rate(_scorer_fn(scorer), texts)
        out["token_count (reference LM BPE, vocabulary 4,096)"] = {
            "cpu": per_cpu,
            "wall": per_wall,
            "tokens_per_document": float(np.mean(counts)),
        }

        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=int(LM_DEFAULTS["vocab_size"]),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        hf.train_from_iterator(sample(2000, ["text"], 0).column("text").to_pylist(), trainer)
        path = Path(directory) / "tokenizer.json"
        hf.save(str(path))
        per_cpu, per_wall, counts = _cpu_rate(
            _scorer_fn(make_scorer("token_count", {"tokenizer_path": str(path)})), texts
        )
        out["token_count (Hugging Face tokenizer.json, byte-level BPE 4,096)"] = {
            "cpu": per_cpu,
            "wall": per_wall,
            "tokens_per_document": float(np.mean(counts)),
        }
    return out


def report(
    acc: dict[str, Any], speed: dict[str, dict[str, float]], backends: list[str], n: int
) -> str:
    lines = [
        "# Text scorers: language accuracy and docs/s",
        "",
        f"## Language accuracy: {acc['n']:,} man-page paragraphs, {len(acc['per_language'])} languages",
        "",
        "| backend | accuracy | macro accuracy | errors answered `en` | docs/CPU s |",
        "|---|---:|---:|---:|---:|",
    ]
    for backend in backends:
        a = acc[backend]
        lines.append(
            f"| {backend} | {a['accuracy']:.3f} | {a['macro_accuracy']:.3f} | "
            f"{100 * a['errors_answered_en']:.0f}% | {a['docs_per_cpu_second']:,.0f} |"
        )
    lines += ["", "| language | paragraphs | " + " | ".join(backends) + " |"]
    lines.append("|---|---:|" + "---:|" * len(backends))
    for language in sorted(acc["per_language"]):
        cells = " | ".join(f"{acc[b]['by_language'][language]:.3f}" for b in backends)
        lines.append(f"| {language} | {acc['per_language'][language]} | {cells} |")
    lines += [
        "",
        f"## Throughput on the sample corpus ({n:,} documents of about 1 KB), one core",
        "",
        "| scorer | docs/CPU s | docs/s (wall) |",
        "|---|---:|---:|",
    ]
    for name, values in speed.items():
        extra = (
            f" ({values['tokens_per_document']:.0f} tokens/doc)"
            if "tokens_per_document" in values
            else ""
        )
        lines.append(f"| {name}{extra} | {values['cpu']:,.0f} | {values['wall']:,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "thresher" / "bench")
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    quick = args.quick or bool(os.environ.get("THRESHER_BENCH_QUICK"))
    backends = ["py3langid"]
    try:
        import lingua  # noqa: F401

        backends.append("lingua")
    except ImportError:
        print("lingua-language-detector is not installed: py3langid only", file=sys.stderr)
    rows = build_sample(args.cache, 40 if quick else PER_LANGUAGE)
    acc = accuracy(rows, backends)
    n_documents = 2_000 if quick else 20_000
    speed = throughput(n_documents, backends)
    text = report(acc, speed, backends, n_documents)
    print(text)
    if not quick:
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
