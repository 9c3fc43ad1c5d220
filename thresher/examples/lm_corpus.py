"""A pretraining-style text corpus built offline, with planted low-quality documents.

The language-model eval trains small LMs on subsets of an unlabelled corpus
and measures their loss on held-out text. This module builds such a corpus
from real English text already on a Debian machine, plants low-quality
documents of known kinds into it, and holds out a clean target set of one
domain.

Sources (each document's ``source``; ``id`` is ``<source>:<name>``, stable):

- ``package_description``: the long descriptions of the Debian package
  index (``apt-cache dumpavail``; the long text lives in the index's
  ``Translation-en`` files, read through ``apt-helper cat-file``). A
  ``" ."`` line becomes a blank line; identical descriptions are kept once,
  under the first package name.
- ``man_page``: English manual pages (``/usr/share/man/man[1-8]``, not the
  translated subdirectories) rendered to plain text by ``man`` in a thread
  pool; only as many pages as the pool needs are rendered.
- ``doc_file``: README and other text files under ``/usr/share/doc``
  (changelogs, copyright and licence files left out).
- ``python_docstring``: docstrings of the Python standard library, read with
  ``ast`` (nothing imported). Present on any machine with Python, so a test
  or CI can build a small corpus without Debian's index or man pages.

Text is normalised (Unicode NFC, typographic hyphens and quotes to ASCII,
trailing spaces and runs of blank lines removed); documents shorter than
``MIN_CHARS`` or mostly non-ASCII (another language) are dropped, longer
than ``MAX_CHARS`` are cut at a paragraph boundary, and a text seen before
(in any source) is dropped.

Target domain ``python_docs``: standard-library docstrings and the
descriptions of Python packages (``python3-*``, ``python-*``). It is about
``domain_share`` (default 12%) of the pool's clean characters, so it is a
minority that a good selector should keep; ``target_docs`` further documents
of the domain are held out (never in the pool, and no planted document is
made from them).

Planted documents (``kind``; ``clean`` for the rest), ``low_quality_share``
of the pool's documents, split evenly over the kinds, each made from clean
pool documents with a seeded generator:

- ``boilerplate``: one of a few long templated blocks (cookie notice, legal
  terms, navigation, newsletter) with a short snippet of a pool document;
  the blocks repeat verbatim across documents.
- ``keyword_list``: tags drawn from the pool's vocabulary, SEO style.
- ``word_salad``: the words of a pool document in a shuffled order.
- ``truncated``: 5 to 25 words cut from a pool document, mid-sentence.
- ``near_copy``: a pool document with a few words replaced.

Layout written by :func:`build_corpus`::

    train/part-00000.parquet ...     id, text, source, kind (source is
                                     ``planted`` for planted rows); rows in
                                     a seeded shuffled order
    target/python_docs.parquet       id, text: the held-out clean domain set
    planted.parquet                  id, kind, origin: the pool document each
                                     planted row was made from (null for
                                     keyword lists)
    corpus.json                      counts per source and kind, characters,
                                     the settings and the seed

The same sources, settings and seed give byte-identical files (on the same
machine: another Debian index, set of man pages or Python version is other
text).
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SOURCES = ("package_description", "man_page", "doc_file", "python_docstring")
PLANTED_KINDS = ("boilerplate", "keyword_list", "word_salad", "truncated", "near_copy")
DOMAIN = "python_docs"
MIN_CHARS = 200
MAX_CHARS = 20_000
MIN_ASCII_SHARE = 0.95
# Shares of the pool's clean characters outside the target domain.
SOURCE_WEIGHTS = {"package_description": 0.45, "man_page": 0.40, "doc_file": 0.15}
PYTHON_PACKAGE_PREFIXES = ("python3-", "python-")
MAN_ROOT = Path("/usr/share/man")
DOC_ROOT = Path("/usr/share/doc")

_TRANSLATE = str.maketrans(
    {
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "--",
        "\u2212": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u00a0": " ",
        "\u00ad": "",
        "\t": "    ",
    }
)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
MAN_PER_FAMILY = 25


@dataclass(frozen=True)
class Document:
    """One row of the corpus: ``kind`` is ``clean`` or a planted kind."""

    id: str
    source: str
    text: str
    kind: str = "clean"
    origin: str | None = None

    @property
    def in_domain(self) -> bool:
        """Whether the document belongs to the ``python_docs`` target domain."""
        if self.source == "python_docstring":
            return True
        name = self.id.partition(":")[2]
        return self.source == "package_description" and name.startswith(PYTHON_PACKAGE_PREFIXES)


# --------------------------------------------------------------------------- text


def cap_text(text: str, limit: int = MAX_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters at a paragraph (else line, else word) end."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    for separator in ("\n\n", "\n", " "):
        cut = head.rfind(separator)
        if cut > limit // 2:
            return head[:cut].rstrip()
    return head


def normalise(text: str, min_chars: int = MIN_CHARS) -> str | None:
    """Clean UTF-8 text, or ``None`` for a document too short or mostly non-ASCII."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.translate(_TRANSLATE)
    text = _CONTROL.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    if len(text.strip()) < min_chars:
        return None
    if len(text.encode("ascii", "ignore")) < MIN_ASCII_SHARE * len(text):
        return None
    return cap_text(text)


# ---------------------------------------------------------- package descriptions


def control_stanzas(lines: Iterable[str]) -> Iterator[dict[str, list[str]]]:
    """The fields of each stanza of a Debian control file: first line, then continuation lines."""
    fields: dict[str, list[str]] = {}
    name: str | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            if fields:
                yield fields
            fields, name = {}, None
        elif line[0] in " \t":
            if name is not None:
                fields[name].append(line[1:])
        elif ":" in line:
            name, _, value = line.partition(":")
            fields[name] = [value.strip()]
    if fields:
        yield fields


def long_description(continuation: Sequence[str]) -> str:
    """The text of a description's continuation lines: a ``.`` line is a paragraph break."""
    return "\n".join("" if line.strip() == "." else line for line in continuation)


def _run_lines(command: list[str]) -> list[str]:
    result = subprocess.run(command, capture_output=True, text=True, errors="replace", check=True)
    return result.stdout.splitlines()


def _apt_lists_dir() -> Path:
    try:
        out = _run_lines(["apt-config", "shell", "LISTS", "Dir::State::lists/d"])
    except (OSError, subprocess.CalledProcessError):
        return Path("/var/lib/apt/lists")
    for line in out:
        if line.startswith("LISTS="):
            return Path(line.partition("=")[2].strip("'\""))
    return Path("/var/lib/apt/lists")


def _translation_descriptions() -> dict[str, str]:
    """``Description-md5 -> long description`` from the index's English translation files."""
    helper = Path("/usr/lib/apt/apt-helper")
    found: dict[str, str] = {}
    if not helper.exists():
        return found
    for path in sorted(_apt_lists_dir().glob("*_i18n_Translation-en*")):
        try:
            lines = _run_lines([str(helper), "cat-file", str(path)])
        except (OSError, subprocess.CalledProcessError):
            continue
        for fields in control_stanzas(lines):
            md5 = (fields.get("Description-md5") or [""])[0]
            description = fields.get("Description-en")
            if md5 and description and md5 not in found:
                found[md5] = long_description(description[1:])
    return found


def package_available() -> bool:
    """Whether ``apt-cache`` is installed and its index is not empty and has long descriptions.

    Debian's package lists carry only a summary line; the long descriptions
    come with the English translation files, which an ``apt-get update``
    under ``Acquire::Languages=none`` (a common container setting) leaves out.
    """
    if shutil.which("apt-cache") is None:
        return False
    if not any(_apt_lists_dir().glob("*_i18n_Translation-en*")):
        return False
    try:
        result = subprocess.run(["apt-cache", "stats"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    match = re.search(r"Normal packages:\s*(\d+)", result.stdout)
    return bool(match and int(match.group(1)) > 0)


def package_descriptions() -> list[Document]:
    """One document per distinct long description of the package index, in package-name order.

    ``apt-cache dumpavail`` gives the packages; their long descriptions are
    read from the ``Description`` field's continuation lines where the index
    carries them, else from the translation files by ``Description-md5``.
    """
    if not package_available():
        return []
    translations = _translation_descriptions()
    texts: dict[str, str] = {}
    for fields in control_stanzas(_run_lines(["apt-cache", "dumpavail"])):
        package = (fields.get("Package") or [""])[0]
        description = fields.get("Description") or []
        text = long_description(description[1:]) if len(description) > 1 else None
        if text is None:
            text = translations.get((fields.get("Description-md5") or [""])[0])
        if package and text and package not in texts:
            texts[package] = text
    documents, seen, raw_seen = [], set(), set()
    for package in sorted(texts):
        if texts[package] in raw_seen:
            continue
        raw_seen.add(texts[package])
        text = normalise(texts[package])
        if text is not None and text not in seen:
            seen.add(text)
            documents.append(
                Document(f"package_description:{package}", "package_description", text)
            )
    return documents


# ------------------------------------------------------------------- man pages


def man_page_files(root: Path = MAN_ROOT) -> list[Path]:
    """English manual pages (sections 1 to 8), one per real file, in path order."""
    files, seen = [], set()
    for section in range(1, 9):
        folder = root / f"man{section}"
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            real = path.resolve()
            if path.is_file() and real not in seen:
                seen.add(real)
                files.append(path)
    return files


def man_family(path: Path) -> str:
    """The leading word of a page's name (``git`` for ``git-log.1``): pages of one tool."""
    return re.split(r"[_.\-:]", path.name, maxsplit=1)[0].lower()


def man_page_order(
    files: Sequence[Path], seed: int, per_family: int = MAN_PER_FAMILY
) -> list[Path]:
    """``files`` in a seeded order, at most ``per_family`` pages of one family.

    The cap keeps one tool's hundreds of generated pages (the Google Cloud
    SDK ships thousands, nearly all alike) from filling the pool.
    """
    order = list(files)
    random.Random(f"{seed}:order:man_page").shuffle(order)
    taken: Counter[str] = Counter()
    kept = []
    for path in order:
        family = man_family(path)
        if taken[family] < per_family:
            taken[family] += 1
            kept.append(path)
    return kept


def man_available() -> bool:
    """Whether ``man`` is installed and English manual pages exist."""
    return shutil.which("man") is not None and bool(man_page_files())


def render_man_page(path: Path) -> str | None:
    """The page as plain text (80 columns, no hyphenation, header and footer dropped)."""
    env = {key: value for key, value in os.environ.items() if key != "MAN_KEEP_FORMATTING"}
    env.update(MANWIDTH="80", LC_ALL="C.UTF-8")
    try:
        result = subprocess.run(
            ["man", "--nh", "--nj", "-E", "UTF-8", "-l", str(path)],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    text = re.sub(r".\x08", "", result.stdout.decode("utf-8", errors="replace"))
    lines = [line.strip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines[1:-1])


def _man_id(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    return f"man_page:{path.parent.name}/{name}"


def man_pages(files: Sequence[Path], workers: int | None = None) -> Iterator[Document]:
    """The pages of ``files`` rendered in that order, a batch at a time in a thread pool."""
    workers = workers or os.cpu_count() or 1
    batch = 8 * workers
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(files), batch):
            chunk = files[start : start + batch]
            for path, raw in zip(chunk, pool.map(render_man_page, chunk), strict=True):
                text = normalise(raw) if raw else None
                if text is not None:
                    yield Document(_man_id(path), "man_page", text)


# ------------------------------------------------------------------- doc files

_DOC_SKIP = re.compile(r"changelog|copyright|licen[cs]e|news|history|authors", re.IGNORECASE)
_DOC_TEXT = re.compile(r"^(readme.*|.*\.(txt|md|rst))(\.gz)?$", re.IGNORECASE)


def doc_files(root: Path = DOC_ROOT) -> list[Document]:
    """README and other text files under ``/usr/share/doc``, in path order."""
    if not root.is_dir():
        return []
    documents = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink() or _DOC_SKIP.search(path.name):
            continue
        if not _DOC_TEXT.match(path.name):
            continue
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        if b"\x00" in data:
            continue
        text = normalise(data.decode("utf-8", errors="replace"))
        if text is not None:
            name = str(path.relative_to(root)).removesuffix(".gz")
            documents.append(Document(f"doc_file:{name}", "doc_file", text))
    return documents


# ------------------------------------------------------------ stdlib docstrings

_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def _stdlib_modules() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    modules = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if _STDLIB_SKIP.intersection(parts) or any("-" in part for part in parts):
            continue
        name = ".".join(parts).removesuffix(".__init__")
        modules.append((name, path))
    return modules


def _docstring_documents(module: str, path: Path) -> list[Document]:
    """The module docstring, and one document per top-level class or function with its methods."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    documents = []

    def add(name: str, parts: list[str]) -> None:
        text = normalise("\n\n".join(parts))
        if text is not None:
            documents.append(Document(f"python_docstring:{name}", "python_docstring", text))

    docstring = ast.get_docstring(tree)
    if docstring:
        add(module, [docstring])
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{module}.{node.name}"
            parts = []
            if docstring := ast.get_docstring(node):
                parts.append(f"{name}\n\n{docstring}")
            if isinstance(node, ast.ClassDef):
                methods = [
                    child
                    for child in node.body
                    if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                ]
                for method in methods:
                    if method_doc := ast.get_docstring(method):
                        parts.append(f"{name}.{method.name}\n\n{method_doc}")
            if parts:
                add(name, parts)
    return documents


@lru_cache(maxsize=1)
def _all_stdlib_documents() -> tuple[Document, ...]:
    documents: list[Document] = []
    for module, path in _stdlib_modules():
        documents.extend(_docstring_documents(module, path))
    return tuple(documents)


def stdlib_documents(limit: int | None = None, seed: int = 0) -> list[Document]:
    """Docstring documents of this Python's standard library (``limit`` of them, seeded choice).

    Needs nothing but Python; the text depends on the Python version.
    """
    documents = list(_all_stdlib_documents())
    if limit is not None and limit < len(documents):
        chosen = random.Random(f"{seed}:stdlib").sample(range(len(documents)), limit)
        documents = [documents[i] for i in sorted(chosen)]
    return documents


# -------------------------------------------------------------------- planting

BOILERPLATE_BLOCKS = (
    "We use cookies and similar technologies to provide the best experience on our website, "
    "to personalise content and advertising, to provide social media features and to analyse "
    "our traffic. We also share information about your use of our site with our social media, "
    "advertising and analytics partners who may combine it with other information that you have "
    "provided to them or that they have collected from your use of their services. By clicking "
    '"Accept all cookies" you agree to the storing of cookies on your device. You can change your '
    "preferences at any time by visiting the Cookie Settings page. Accept all cookies | Reject "
    "non-essential cookies | Manage preferences",
    "Home | Products | Solutions | Pricing | Resources | Blog | Support | Contact us | Sign in | "
    "Create account\nSearch this site\nYou are here: Home > Knowledge base > Articles\n"
    "Related articles | Most popular | Recently updated | Tags | Archive\n"
    "Share this page: Facebook | Twitter | LinkedIn | Email | Print\n"
    "Was this article helpful? Yes | No\nBack to top",
    "Copyright (c) All rights reserved. The content of this website is provided for general "
    "information purposes only and does not constitute professional advice. While we endeavour "
    "to keep the information up to date and correct, we make no representations or warranties of "
    "any kind, express or implied, about the completeness, accuracy, reliability, suitability or "
    "availability of the website or the information, products, services or related graphics "
    "contained on the website for any purpose. Any reliance you place on such information is "
    "therefore strictly at your own risk. Terms of use | Privacy policy | Imprint | Accessibility",
    "Subscribe to our newsletter! Get the latest news, exclusive offers and updates delivered "
    "straight to your inbox. Enter your email address below and click Subscribe. We respect your "
    "privacy and will never share your email address with third parties. You can unsubscribe at "
    "any time by clicking the link in the footer of our emails. Join over 100,000 happy "
    "subscribers today! Follow us on social media for daily tips and tricks. Download our free "
    "app for iOS and Android. Limited time offer: sign up now and save 20% on your first order.",
)
_STOPWORD_TEXT = (
    "the and for with that this from are was were which into also when then than there their "
    "they them these those have has had not but can may will would should could used use "
    "using its been being such each other more most some any all one two only over under "
    "about after before between both does doing how what where who why you your our out via "
    "per see"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z][a-z0-9+\-]{2,}")


def vocabulary(texts: Iterable[str], size: int = 3000) -> list[str]:
    """The ``size`` most frequent words of ``texts`` (ties by word), stopwords left out."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[:size]]


def _snippet(rng: random.Random, text: str, low: int, high: int) -> str:
    words = text.split()
    count = min(len(words), rng.randint(low, high))
    start = rng.randint(0, len(words) - count)
    return " ".join(words[start : start + count])


def plant_boilerplate(rng: random.Random, origin: Document, number: int) -> str:
    """Block ``number`` (round robin) with a short snippet of ``origin`` before or after it."""
    block = BOILERPLATE_BLOCKS[number % len(BOILERPLATE_BLOCKS)]
    snippet = _snippet(rng, origin.text, 10, 40)
    return f"{snippet}\n\n{block}" if rng.random() < 0.5 else f"{block}\n\n{snippet}"


def plant_keyword_list(rng: random.Random, vocab: Sequence[str]) -> str:
    """Keywords of the corpus vocabulary, comma, bar or newline separated."""
    words = [rng.choice(vocab) for _ in range(rng.randint(20, 80))]
    separator = rng.choice((", ", "\n", " | ", ", "))
    prefix = rng.choice(("", "Tags: ", "Keywords: ", "Related searches: "))
    return prefix + separator.join(words)


def plant_word_salad(rng: random.Random, origin: Document) -> str:
    """The words of ``origin`` in a shuffled order."""
    words = origin.text.split()
    rng.shuffle(words)
    return " ".join(words)


def plant_truncated(rng: random.Random, origin: Document) -> str:
    """5 to 25 consecutive words of ``origin``, final punctuation removed."""
    return _snippet(rng, origin.text, 5, 25).rstrip(".!?:;,")


def plant_near_copy(rng: random.Random, origin: Document, vocab: Sequence[str]) -> str:
    """``origin`` with 1 to 8 words (about 2%) replaced by vocabulary words, layout kept."""
    spans = [match.span() for match in re.finditer(r"\S+", origin.text)]
    count = max(1, min(8, round(0.02 * len(spans))))
    positions = sorted(rng.sample(range(len(spans)), min(count, len(spans))))
    pieces, last = [], 0
    for position in positions:
        start, end = spans[position]
        old = origin.text[start:end]
        new = rng.choice(vocab)
        while new == old:
            new = rng.choice(vocab)
        pieces += [origin.text[last:start], new]
        last = end
    pieces.append(origin.text[last:])
    return "".join(pieces)


def plant(
    pool: Sequence[Document], counts: dict[str, int], seed: int, vocab_size: int = 3000
) -> list[Document]:
    """``counts[kind]`` planted documents of each kind, made from ``pool`` (distinct texts)."""
    vocab = vocabulary((doc.text for doc in pool), vocab_size)
    seen = {doc.text for doc in pool}
    longer = [doc for doc in pool if len(doc.text.split()) >= 30] or list(pool)
    planted: list[Document] = []
    for kind in PLANTED_KINDS:
        rng = random.Random(f"{seed}:plant:{kind}")
        made = 0
        while made < counts.get(kind, 0):
            origin: Document | None = rng.choice(longer)
            assert origin is not None
            if kind == "boilerplate":
                text = plant_boilerplate(rng, origin, made)
            elif kind == "keyword_list":
                text, origin = plant_keyword_list(rng, vocab), None
            elif kind == "word_salad":
                text = plant_word_salad(rng, origin)
            elif kind == "truncated":
                text = plant_truncated(rng, origin)
            else:
                text = plant_near_copy(rng, origin, vocab)
            if text in seen:
                continue
            seen.add(text)
            origin_id = origin.id if origin is not None else None
            planted.append(Document(f"planted:{kind}:{made:05d}", "planted", text, kind, origin_id))
            made += 1
    return planted


def planted_counts(n_clean: int, share: float) -> dict[str, int]:
    """Planted documents per kind so that they are ``share`` of the pool, split evenly."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"low_quality_share must be in [0, 1), got {share}")
    total = round(n_clean * share / (1.0 - share))
    base, extra = divmod(total, len(PLANTED_KINDS))
    return {kind: base + (i < extra) for i, kind in enumerate(PLANTED_KINDS)}


# ------------------------------------------------------------------- selection


def _fill(
    groups: dict[str, Iterator[Document]],
    shares: dict[str, float],
    max_chars: int,
    max_docs: int | None,
) -> list[Document]:
    """Documents from each group's stream in proportion to ``shares`` until a budget is spent.

    A group that runs dry gives its part to the others; the split is
    recomputed over the groups still active each round.
    """
    taken: list[Document] = []
    active = sorted(name for name in groups if shares.get(name, 0.0) > 0)
    doc_budget = float("inf") if max_docs is None else max_docs
    while active:
        chars = max_chars - sum(len(doc.text) for doc in taken)
        docs = doc_budget - len(taken)
        if chars <= 0 or docs <= 0:
            break
        total = sum(shares[name] for name in active)
        for name in list(active):
            want_chars, want_docs = chars * shares[name] / total, docs * shares[name] / total
            got_chars = got_docs = 0
            while got_chars < want_chars and got_docs < want_docs:
                doc = next(groups[name], None)
                if doc is None:
                    active.remove(name)
                    break
                taken.append(doc)
                got_chars += len(doc.text)
                got_docs += 1
    return taken


def _shuffled(documents: Sequence[Document], seed: int, label: str) -> Iterator[Document]:
    order = list(documents)
    random.Random(f"{seed}:order:{label}").shuffle(order)
    return iter(order)


def _deduplicated(documents: Iterator[Document], seen: set[str]) -> Iterator[Document]:
    for doc in documents:
        if doc.text not in seen:
            seen.add(doc.text)
            yield doc


def _load_sources(sources: Sequence[str]) -> tuple[dict[str, list[Document]], list[Path]]:
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown sources {unknown}; choose from {list(SOURCES)}")
    eager: dict[str, list[Document]] = {}
    if "package_description" in sources:
        eager["package_description"] = package_descriptions()
    if "doc_file" in sources:
        eager["doc_file"] = doc_files()
    if "python_docstring" in sources:
        eager["python_docstring"] = stdlib_documents()
    man_files = man_page_files() if "man_page" in sources and shutil.which("man") else []
    return eager, man_files


def _table(documents: Sequence[Document], columns: Sequence[str]) -> pa.Table:
    return pa.table({column: [getattr(doc, column) for doc in documents] for column in columns})


def _summary(documents: Sequence[Document]) -> dict[str, Any]:
    by_source: dict[str, dict[str, int]] = {}
    by_kind: dict[str, dict[str, int]] = {}
    for doc in documents:
        for table, key in ((by_source, doc.source), (by_kind, doc.kind)):
            entry = table.setdefault(key, {"docs": 0, "characters": 0})
            entry["docs"] += 1
            entry["characters"] += len(doc.text)
    return {
        "docs": len(documents),
        "characters": sum(len(doc.text) for doc in documents),
        "by_source": dict(sorted(by_source.items())),
        "by_kind": dict(sorted(by_kind.items())),
    }


def build_corpus(
    out_dir: Path | str,
    *,
    sources: Sequence[str] = SOURCES,
    low_quality_share: float = 0.2,
    target_docs: int = 400,
    pool_chars: int = 9_000_000,
    max_docs: int | None = None,
    domain_share: float = 0.12,
    seed: int = 0,
    shard_rows: int = 2000,
    workers: int | None = None,
) -> dict[str, Any]:
    """Build the corpus under ``out_dir``; return the summary written to ``corpus.json``.

    Parameters
    ----------
    out_dir
        Output folder (``train/``, ``target/``, ``planted.parquet``,
        ``corpus.json``); stale shards there are removed.
    sources
        Which of :data:`SOURCES` to read; one missing on this machine (no
        package index, no man pages) gives no documents.
    low_quality_share
        Planted documents' share of the pool's documents, split evenly over
        :data:`PLANTED_KINDS`.
    target_docs
        Clean documents of the ``python_docs`` domain held out as the target.
    pool_chars, max_docs
        Budget of the pool's clean documents: characters, and at most this
        many documents (``None``: no limit). Planted documents come on top.
    domain_share
        Share of the clean characters (and documents, under ``max_docs``)
        drawn from the target domain; the rest is split over the other
        sources by :data:`SOURCE_WEIGHTS`.
    seed
        Seeds every choice; the same inputs and seed give byte-identical files.
    shard_rows
        Rows per ``train/part-NNNNN.parquet`` file.
    workers
        Threads rendering man pages (default: the number of CPUs).
    """
    if target_docs < 0 or pool_chars <= 0 or shard_rows <= 0:
        raise ValueError("target_docs must be >= 0, pool_chars and shard_rows > 0")
    eager, man_files = _load_sources(sources)

    seen: set[str] = set()
    eager_docs = [doc for name in SOURCES for doc in eager.get(name, [])]
    eager_docs = list(_deduplicated(iter(eager_docs), seen))
    kept = {doc.id for doc in eager_docs}
    domain = sorted((doc for doc in eager_docs if doc.in_domain), key=lambda doc: doc.id)
    if target_docs > len(domain):
        raise ValueError(f"{target_docs} target documents asked, {len(domain)} in the domain")
    held = set(random.Random(f"{seed}:target").sample(range(len(domain)), target_docs))
    target = [doc for i, doc in enumerate(domain) if i in held]
    domain = [doc for i, doc in enumerate(domain) if i not in held]

    groups: dict[str, Iterator[Document]] = {DOMAIN: _shuffled(domain, seed, DOMAIN)}
    shares = {DOMAIN: domain_share if domain else 0.0}
    present = [
        name for name in SOURCE_WEIGHTS if (name == "man_page" and man_files) or eager.get(name)
    ]
    weights = sum(SOURCE_WEIGHTS[name] for name in present)
    for name in present:
        if name == "man_page":
            files = man_page_order(man_files, seed)
            groups[name] = _deduplicated(man_pages(files, workers), seen)
        else:
            outside = [doc for doc in eager[name] if doc.id in kept and not doc.in_domain]
            groups[name] = _shuffled(outside, seed, name)
        shares[name] = SOURCE_WEIGHTS[name] / weights * (1.0 - domain_share)
    if all(shares[name] == 0 for name in shares if name != DOMAIN) and domain:
        shares[DOMAIN] = 1.0
    pool = _fill(groups, shares, pool_chars, max_docs)
    if not pool:
        raise ValueError(f"no document found in sources {list(sources)}")

    planted = plant(pool, planted_counts(len(pool), low_quality_share), seed)
    rows = pool + planted
    random.Random(f"{seed}:rows").shuffle(rows)

    out = Path(out_dir)
    for folder in (out / "train", out / "target"):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.parquet"):
            stale.unlink()
    columns = ("id", "text", "source", "kind")
    for number, start in enumerate(range(0, len(rows), shard_rows)):
        shard = _table(rows[start : start + shard_rows], columns)
        pq.write_table(shard, out / "train" / f"part-{number:05d}.parquet")
    pq.write_table(_table(target, ("id", "text")), out / "target" / f"{DOMAIN}.parquet")
    planted_sorted = sorted(planted, key=lambda doc: doc.id)
    pq.write_table(_table(planted_sorted, ("id", "kind", "origin")), out / "planted.parquet")

    summary = {
        "seed": seed,
        "sources": list(sources),
        "low_quality_share": low_quality_share,
        "pool_chars": pool_chars,
        "max_docs": max_docs,
        "domain_share": domain_share,
        "python": sys.version.split()[0],
        "target": {"domain": DOMAIN, **_summary(target)},
        "train": {
            **_summary(rows),
            "clean_by_source": _summary(pool)["by_source"],
            "domain_characters": sum(len(doc.text) for doc in pool if doc.in_domain),
            "shards": (len(rows) + shard_rows - 1) // shard_rows,
        },
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
