"""Bad input, end to end: every class of bad record through the real `curate` flow, on both engines.

One corpus carries every row-level class (one shard or a few rows each), so
that one run per engine checks them all; each test below looks at one class
in that run's outputs. Damaged files (stopping the run, or skipped under
``input.on_unreadable: skip``), an empty corpus and configurations that
would write outside the run directory get their own runs. Every completed
run must reconcile: ``input = kept + dropped + quarantined``.

(A model path holding an arbitrary pickle is covered with the model
scorers, and HTML in documents with the report.)
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from thresher.config import SchemaConfig, parse_config
from thresher.engines.local import LocalEngine
from thresher.errors import ConfigError, InputError, RunStateError
from thresher.io import ingest as ingest_module
from thresher.io.ingest import ingest_shard
from thresher.io.shards import Shard
from thresher.run_dir import RunDir
from thresher.runs import load_run

pytestmark = pytest.mark.usefixtures("prefect_server")

ENGINES = ["local", pytest.param("spark", marks=pytest.mark.spark)]
BIG = 5 * 1024 * 1024  # a large document that must flow through intact
HUGE = 20 * 1024 * 1024  # a 20 MB document, over the configured limit
LIMIT = 10 * 1024 * 1024


def _sentence(i: int) -> str:
    return f"Document number {i} tells a short story about a quiet harbour and its boats."


def _jsonl(path: Path, lines: list[bytes], gz: bool = False) -> None:
    payload = b"".join(line + b"\n" for line in lines)
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def write_bad_corpus(out: Path) -> dict[str, Any]:
    """Write one shard per case; return what each case should produce."""
    out.mkdir(parents=True)
    # a: Parquet, url as string, float ratings; null text, blank text, null id.
    rows = [
        {"id": f"a{i}", "text": _sentence(i), "rating": float(i), "url": f"https://a/{i}"}
        for i in range(20)
    ]
    rows += [
        {"id": "a-null-text", "text": None, "rating": 1.0, "url": None},
        {"id": "a-blank-text", "text": " \n\t ", "rating": 1.0, "url": None},
        {"id": None, "text": "A document without an id.", "rating": 1.0, "url": None},
    ]
    pq.write_table(pa.Table.from_pylist(rows), out / "a-good.parquet")
    # b: Parquet whose text column is binary, one value not UTF-8.
    pq.write_table(
        pa.table(
            {
                "id": ["b0", "b1"],
                "text": pa.array([_sentence(100).encode(), b"caf\xe9 \xff\xfe"], pa.binary()),
                "rating": [2.0, 2.0],
            }
        ),
        out / "b-binary-text.parquet",
    )
    # c: JSONL, url as integers (drift against a), broken lines, NaN/inf ratings.
    lines = [
        json.dumps({"id": f"c{i}", "text": _sentence(200 + i), "rating": 3.5, "url": 1000 + i})
        for i in range(15)
    ]
    lines = [line.encode() for line in lines]
    lines += [
        b'{"id": "c-cut", "text": "this line was cut',
        b'{"id": "c-utf8", "text": "caf\xe9 au lait \xff"}',
        b'["an", "array", "not", "an", "object"]',
        b'{"id": "c-number", "text": 42}',
        b'{"id": "c-nan", "text": "A rating that is not a number.", "rating": NaN}',
        b'{"id": "c-inf", "text": "A rating that is infinite.", "rating": Infinity}',
        b'{"id": "c-ninf", "text": "A rating that is minus infinity.", "rating": -Infinity}',
        b'{"id": "c-null", "text": "A rating that is missing.", "rating": null}',
    ]
    _jsonl(out / "c-lines.jsonl", lines)
    # d: gzipped JSONL with an extra column, integer ratings, and ids seen in a.
    records = [
        {"id": f"d{i}", "text": _sentence(300 + i), "rating": 4, "lang": "en"} for i in range(8)
    ]
    records += [
        {"id": "a0", "text": "A second document with the id a0.", "rating": 4, "lang": "fr"},
        {"id": "a1", "text": "A second document with the id a1.", "rating": 4, "lang": "de"},
    ]
    _jsonl(out / "d-extra.jsonl.gz", [json.dumps(r).encode() for r in records], gz=True)
    # e: no text column at all.
    pq.write_table(
        pa.table({"id": [f"e{i}" for i in range(5)], "body": ["x"] * 5, "rating": [1.0] * 5}),
        out / "e-no-text-column.parquet",
    )
    # f, g: shards without records.
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
        out / "f-zero-rows.parquet",
    )
    (out / "g-empty.jsonl").write_bytes(b"")
    (out / "g-blank-lines.jsonl").write_bytes(b"\n  \n\n")
    # h: a 20 MB document (over the limit), a 5 MB one (kept), and a small one.
    big_text = ("All work and no play makes a long document. " * (BIG // 45 + 1))[:BIG]
    huge_text = "z" * HUGE
    _jsonl(
        out / "h-huge.jsonl",
        [
            json.dumps({"id": "h-huge", "text": huge_text, "rating": 5.0}).encode(),
            json.dumps({"id": "h-big", "text": big_text, "rating": 5.0}).encode(),
            json.dumps({"id": "h-small", "text": _sentence(400), "rating": 5.0}).encode(),
        ],
    )
    # i: JSONL with a byte-order mark, a lone-surrogate escape and a valid surrogate pair.
    _jsonl(
        out / "i-unicode.jsonl",
        [
            b"\xef\xbb\xbf"
            + json.dumps({"id": "i-bom", "text": _sentence(500), "rating": 1.0}).encode(),
            b'{"id": "i-lone", "text": "A lone surrogate \\ud800 in crawled text."}',
            b'{"id": "i-key", "text": "A lone surrogate in a key.", "k\\udfff": 1}',
            b'{"id": "i-pair", "text": "A valid pair \\ud83d\\ude00 is an emoji.", "rating": 1.0}',
        ],
    )
    # j: every Arrow string encoding of text and id (dictionary, large, view, binary).
    encodings = [
        ("dictionary", lambda a: a.dictionary_encode()),
        ("large", lambda a: a.cast(pa.large_string())),
        ("view", lambda a: a.cast(pa.string_view())),
        ("binary", lambda a: a.cast(pa.binary())),
    ]
    columns: dict[str, Any] = {}
    for name, encode in encodings:
        part = pa.table(
            {
                "id": encode(pa.array([f"j-{name}-{i}" for i in range(3)])),
                "text": encode(pa.array([_sentence(600 + i) for i in range(3)])),
                "rating": pa.array([6.0] * 3),
                "source": encode(pa.array(["web", "books", "web"])),
            }
        )
        pq.write_table(part, out / f"j-{name}.parquet")
        columns[name] = part
    # k: a text column of numbers (quarantined, ids kept) and one id of a nested type.
    pq.write_table(
        pa.table({"id": ["k0", "k1"], "text": [7, 8], "rating": [1.0, 1.0]}),
        out / "k-numbers.parquet",
    )
    _jsonl(
        out / "k-nested-id.jsonl",
        [
            json.dumps({"id": {"nested": 1}, "text": _sentence(700), "rating": 1.0}).encode(),
            json.dumps({"id": "k-fine", "text": _sentence(701), "rating": 1.0}).encode(),
        ],
    )
    # l: CSV with a byte-order mark, a quoted newline, and a row with too many fields.
    (out / "l-table.csv").write_bytes(
        b"\xef\xbb\xbfid,text,rating\n"
        + f"l0,{_sentence(800)},2.5\n".encode()
        + b'l1,"Two lines\nin one field.",2.5\n'
        + b"l2,too,many,fields\n"
        + f"l3,{_sentence(803)},2.5\n".encode()
    )
    return {"big_text": big_text}


EXPECTED_QUARANTINE = {
    "c-lines.jsonl": {
        "malformed_json": 2,  # the cut line and the array
        "invalid_utf8": 1,
        "text_not_string": 1,
    },
    "a-good.parquet": {"missing_text": 1, "empty_text": 1, "missing_id": 1},
    "b-binary-text.parquet": {"invalid_utf8": 1},
    "e-no-text-column.parquet": {"missing_text_column": 5},
    "h-huge.jsonl": {"text_too_long": 1},
    "i-unicode.jsonl": {"invalid_utf8": 2},
    "k-numbers.parquet": {"text_not_string": 2},
    "k-nested-id.jsonl": {"invalid_id": 1},
    "l-table.csv": {"malformed_row": 1},
}
INPUT_RECORDS = 23 + 2 + 23 + 10 + 5 + 0 + 0 + 0 + 3 + 4 + 4 * 3 + 2 + 2 + 4
INVALID_SCORES = {"c-nan", "c-inf", "c-ninf", "c-null"}
DUPLICATES = {"a0", "a1"}  # their second occurrence, in shard d


def kept_table(run_dir: Path) -> pa.Table:
    return ds.dataset(run_dir / "data", format="parquet").to_table()


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bad") / "corpus"
    return out, write_bad_corpus(out)


def bad_config(corpus: Path, run_dir: Path, engine: str, **overrides: Any) -> Any:
    data: dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": 5,
        "input": {"paths": [str(corpus / "*")]},
        "schema": {"id": "id", "text": "text", "label": "rating", "max_text_bytes": LIMIT},
        "scorers": [{"name": "word_count"}, {"name": "alpha_fraction"}],
        "filters": [{"name": "threshold", "params": {"score": "label", "min": 0.0}}],
        "selector": {"name": "random", "budget": 1_000_000},
        "engine": {"kind": engine, "workers": 1, "batch_size": 16},
    }
    data.update(overrides)
    return parse_config(data, base_dir=run_dir.parent)


@pytest.fixture(scope="module")
def bad_runs(
    bad_corpus: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], tuple[Path, dict[str, Any]]]:
    """Run the bad corpus through `curate` once per engine (on first use); return (run dir, manifest)."""
    from thresher.flows.curate import curate

    done: dict[str, tuple[Path, dict[str, Any]]] = {}

    def run(engine: str) -> tuple[Path, dict[str, Any]]:
        if engine not in done:
            run_dir = tmp_path_factory.mktemp(f"bad-{engine}") / "run"
            done[engine] = run_dir, curate(bad_config(bad_corpus[0], run_dir, engine))
        return done[engine]

    return run


@pytest.fixture(params=ENGINES)
def bad_run(
    request: pytest.FixtureRequest, bad_runs: Callable[[str], tuple[Path, dict[str, Any]]]
) -> tuple[str, Path, dict[str, Any]]:
    """(engine, run directory, manifest) of the bad corpus on each engine."""
    if request.param == "spark":
        request.getfixturevalue("spark")
    return (request.param, *bad_runs(request.param))


def _quarantine(run_dir: Path) -> list[dict[str, Any]]:
    return load_run(run_dir).quarantine.to_pylist()


def _dropped(run_dir: Path) -> dict[str, dict[str, Any]]:
    rows = load_run(run_dir).dropped.to_pylist()
    return {row["id"]: row for row in rows}


def test_manifest_reconciles_and_counts_every_case(
    bad_run: tuple[str, Path, dict[str, Any]],
) -> None:
    _, run_dir, manifest = bad_run
    counts = manifest["counts"]
    quarantined = sum(sum(c.values()) for c in EXPECTED_QUARANTINE.values())
    assert counts["input"] == INPUT_RECORDS
    assert counts["reconciles"]
    assert counts["quarantined"]["total"] == quarantined == len(_quarantine(run_dir))
    assert counts["dropped"]["by_reason"] == {
        "duplicate_id": len(DUPLICATES),
        "invalid_score": len(INVALID_SCORES),
    }
    assert counts["kept"] == INPUT_RECORDS - quarantined - len(DUPLICATES) - len(INVALID_SCORES)
    assert counts["kept"] == kept_table(run_dir).num_rows == counts["written"]
    by_shard = {item["path"].split("/")[-1]: item for item in manifest["inputs"]}
    for name, reasons in EXPECTED_QUARANTINE.items():
        assert by_shard[name]["quarantined"] == sum(reasons.values()), name


def test_each_bad_row_is_quarantined_with_its_reason(
    bad_run: tuple[str, Path, dict[str, Any]],
) -> None:
    _, run_dir, _ = bad_run
    found: dict[str, dict[str, int]] = {}
    for row in _quarantine(run_dir):
        shard = found.setdefault(Path(row["shard"]).name, {})
        shard[row["reason"]] = shard.get(row["reason"], 0) + 1
    assert found == EXPECTED_QUARANTINE
    rows = _quarantine(run_dir)
    missing_column = [r for r in rows if r["reason"] == "missing_text_column"]
    assert all("'text'" in r["detail"] and "body" in r["detail"] for r in missing_column)
    utf8 = {r["shard"].split("/")[-1]: r for r in rows if r["reason"] == "invalid_utf8"}
    assert "caf" in utf8["c-lines.jsonl"]["raw"]  # shown with the bad bytes escaped
    assert {r["row"] for r in rows if Path(r["shard"]).name == "c-lines.jsonl"} == {15, 16, 17, 18}


def test_every_quarantine_row_whose_id_was_readable_keeps_it(
    bad_run: tuple[str, Path, dict[str, Any]],
) -> None:
    _, run_dir, _ = bad_run
    rows = _quarantine(run_dir)
    by_id = {r["id"]: r for r in rows if r["id"] is not None}
    assert {"k0", "k1", "i-lone", "i-key", "a-null-text", "a-blank-text"} <= set(by_id)
    assert {r["id"] for r in rows if r["reason"] == "missing_text_column"} == {
        f"e{i}" for i in range(5)
    }
    assert "'text'" in by_id["i-lone"]["detail"] and "surrogate" in by_id["i-lone"]["detail"]
    assert "surrogate" in by_id["i-key"]["detail"]
    (nested,) = [r for r in rows if r["reason"] == "invalid_id"]
    assert "not a string or a number" in nested["detail"]
    (malformed,) = [r for r in rows if r["reason"] == "malformed_row"]
    assert malformed["raw"] == "l2,too,many,fields"


def test_text_in_any_encoding_is_read_and_kept(bad_run: tuple[str, Path, dict[str, Any]]) -> None:
    _, run_dir, _ = bad_run
    rows = {row["id"]: row for row in kept_table(run_dir).to_pylist()}
    for name in ("dictionary", "large", "view", "binary"):
        for i in range(3):
            row = rows[f"j-{name}-{i}"]
            assert row["text"] == _sentence(600 + i), name
            assert row["source"] == ["web", "books", "web"][i], name
    assert rows["i-bom"]["text"] == _sentence(500)  # the byte-order mark is not its first row's end
    assert rows["i-pair"]["text"] == "A valid pair \U0001f600 is an emoji."
    assert rows["k-fine"]["text"] == _sentence(701)
    assert rows["l0"]["rating"] == 2.5 and rows["l1"]["text"] == "Two lines\nin one field."
    assert "l3" in rows


def test_a_20_mb_document_is_quarantined_and_a_5_mb_one_kept_intact(
    bad_run: tuple[str, Path, dict[str, Any]], bad_corpus: tuple[Path, dict[str, Any]]
) -> None:
    _, run_dir, _ = bad_run
    (huge,) = [r for r in _quarantine(run_dir) if r["reason"] == "text_too_long"]
    assert f"{HUGE:,} bytes" in huge["detail"] and "max_text_bytes" in huge["detail"]
    assert len(huge["raw"]) <= ingest_module.RAW_PREVIEW_CHARS + 1  # a preview, not 20 MB
    data = kept_table(run_dir)
    (big,) = data.filter(pa.compute.equal(data.column("id"), "h-big")).column("text").to_pylist()
    assert big == bad_corpus[1]["big_text"]


def test_duplicate_ids_across_shards_keep_the_first(
    bad_run: tuple[str, Path, dict[str, Any]],
) -> None:
    _, run_dir, _ = bad_run
    dropped = _dropped(run_dir)
    for duplicate in DUPLICATES:
        assert dropped[duplicate]["reason"] == "duplicate_id"
        assert "a-good.parquet row" in dropped[duplicate]["detail"]  # names the first shard
    data = kept_table(run_dir).to_pylist()
    kept = {row["id"]: row for row in data}
    assert len(kept) == len(data)  # no id twice
    assert kept["a0"]["text"] == _sentence(0)


def test_nan_and_infinite_scores_are_dropped_as_invalid(
    bad_run: tuple[str, Path, dict[str, Any]],
) -> None:
    _, run_dir, _ = bad_run
    dropped = _dropped(run_dir)
    invalid = {i for i, row in dropped.items() if row["reason"] == "invalid_score"}
    assert invalid == INVALID_SCORES
    assert all("NaN or infinite" in dropped[i]["detail"] for i in invalid)


def test_schema_drift_gives_one_schema(bad_run: tuple[str, Path, dict[str, Any]]) -> None:
    engine, run_dir, _ = bad_run
    files = sorted((run_dir / "data").glob("*.parquet"))
    schemas = {str(pq.read_schema(f).remove_metadata()) for f in files}
    data = kept_table(run_dir)
    assert data.schema.field("url").type == pa.string()
    assert data.schema.field("rating").type == pa.float64()
    assert "lang" in data.column_names  # the extra column of one shard
    rows = {row["id"]: row for row in data.to_pylist()}
    assert rows["c3"]["url"] == "1003" and rows["a3"]["url"] == "https://a/3"
    assert rows["d2"]["lang"] == "en" and rows["a2"]["lang"] is None
    assert rows["d2"]["rating"] == 4.0
    if engine == "local":
        assert len(schemas) == 1, schemas  # every part file has every column


def test_budget_larger_than_the_corpus_keeps_everything_valid(
    bad_run: tuple[str, Path, dict[str, Any]],
) -> None:
    _, run_dir, _ = bad_run
    steps = json.loads(RunDir(run_dir).published().steps.read_text())
    assert steps[-1]["budget"] == 1_000_000
    assert steps[-1]["kept"] == steps[-1]["rows_in"] > 0


def test_zero_row_shards_count_as_empty(bad_run: tuple[str, Path, dict[str, Any]]) -> None:
    _, _, manifest = bad_run
    by_shard = {item["path"].split("/")[-1]: item for item in manifest["inputs"]}
    for name in ("f-zero-rows.parquet", "g-empty.jsonl", "g-blank-lines.jsonl"):
        assert (by_shard[name]["rows"], by_shard[name]["ingested"]) == (0, 0)


@pytest.mark.spark
def test_engines_keep_the_same_rows(
    bad_runs: Callable[[str], tuple[Path, dict[str, Any]]], spark: Any
) -> None:
    tables = [
        kept_table(bad_runs(engine)[0]).select(["id", "text", "rating", "url", "lang"])
        for engine in ("local", "spark")
    ]
    local, on_spark = (t.sort_by("id").to_pylist() for t in tables)
    assert local == on_spark


# -- runs that stop, or have nothing to do ------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_truncated_parquet_stops_the_run_naming_the_file(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from thresher.flows.curate import curate

    if engine == "spark":
        request.getfixturevalue("spark")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    table = pa.table({"id": ["x", "y"], "text": [_sentence(1), _sentence(2)]})
    pq.write_table(table, corpus / "good.parquet")
    pq.write_table(table, corpus / "cut.parquet")
    payload = (corpus / "cut.parquet").read_bytes()
    (corpus / "cut.parquet").write_bytes(payload[: len(payload) // 2])
    config = bad_config(
        corpus,
        tmp_path / "run",
        engine,
        schema={"id": "id", "text": "text"},
        filters=[],
        selector={"name": "random", "budget": 1.0},
    )
    with pytest.raises(InputError, match=r"cut\.parquet: unreadable Parquet file"):
        curate(config)
    assert not (tmp_path / "run" / "data").exists()
    assert not (tmp_path / "run" / "manifest.json").exists()


def _damaged_corpus(corpus: Path) -> int:
    """A good shard, a cut gzip shard, a zero-byte Parquet file; return the cut shard's full lines."""
    corpus.mkdir()
    table = pa.table({"id": ["x", "y"], "text": [_sentence(1), _sentence(2)]})
    pq.write_table(table, corpus / "good.parquet")
    (corpus / "zero.parquet").write_bytes(b"")
    lines = [json.dumps({"id": f"z{i}", "text": _sentence(i) * 20}).encode() for i in range(3000)]
    _jsonl(corpus / "cut.jsonl.gz", lines, gz=True)
    payload = (corpus / "cut.jsonl.gz").read_bytes()
    (corpus / "cut.jsonl.gz").write_bytes(payload[: len(payload) * 2 // 3])
    return len(lines)


@pytest.mark.parametrize("engine", ENGINES)
def test_skipped_damaged_files_are_listed_and_their_readable_rows_kept(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from thresher.flows.curate import curate

    if engine == "spark":
        request.getfixturevalue("spark")
    total = _damaged_corpus(tmp_path / "corpus")
    config = bad_config(
        tmp_path / "corpus",
        tmp_path / "run",
        engine,
        # two of the three files are damaged: past the default loss limit, which this
        # test does not exercise (test_cli.py does)
        input={
            "paths": [str(tmp_path / "corpus" / "*")],
            "on_unreadable": "skip",
            "max_quarantined_fraction": 1.0,
        },
        schema={"id": "id", "text": "text"},
        filters=[],
        selector={"name": "random", "budget": 1.0},
    )
    manifest = curate(config)
    skipped = {item["path"].split("/")[-1]: item for item in manifest["skipped_inputs"]}
    assert set(skipped) == {"cut.jsonl.gz", "zero.parquet"}
    recovered = skipped["cut.jsonl.gz"]["rows_read"]
    assert 0 < recovered < total and "EOFError" in skipped["cut.jsonl.gz"]["error"]
    assert skipped["zero.parquet"]["rows_read"] == 0
    counts = manifest["counts"]
    assert counts["reconciles"] and counts["skipped_inputs"] == 2
    assert counts["input"] == 2 + recovered == counts["kept"]
    kept = set(kept_table(tmp_path / "run").column("id").to_pylist())
    assert {f"z{i}" for i in range(recovered)} <= kept
    card = (tmp_path / "run" / "README.md").read_text()
    assert "damaged and skipped" in card and "`corpus/cut.jsonl.gz`" in card
    report = (tmp_path / "run" / "report.html").read_text()
    assert "Damaged inputs, skipped" in report and "zero.parquet" in report


def test_a_repaired_file_that_was_skipped_is_read_again(tmp_path: Path) -> None:
    from thresher.flows.curate import curate

    _damaged_corpus(tmp_path / "corpus")
    config = bad_config(
        tmp_path / "corpus",
        tmp_path / "run",
        "local",
        # two of the three files are damaged: past the default loss limit, which this
        # test does not exercise (test_cli.py does)
        input={
            "paths": [str(tmp_path / "corpus" / "*")],
            "on_unreadable": "skip",
            "max_quarantined_fraction": 1.0,
        },
        schema={"id": "id", "text": "text"},
        filters=[],
        selector={"name": "random", "budget": 1.0},
    )
    first = curate(config)
    pq.write_table(
        pa.table({"id": ["r0", "r1", "r2"], "text": [_sentence(i) for i in range(3)]}),
        tmp_path / "corpus" / "zero.parquet",
    )
    second = curate(config)
    assert [i["path"] for i in second["skipped_inputs"]] == ["corpus/cut.jsonl.gz"]
    assert second["counts"]["input"] == first["counts"]["input"] + 3
    kept = set(kept_table(tmp_path / "run").column("id").to_pylist())
    assert {"r0", "r1", "r2", "x", "y"} <= kept
    keys = {i["path"]: i["index"] for i in second["inputs"]}
    before = {i["path"]: i["index"] for i in first["inputs"]}
    assert keys["corpus/zero.parquet"] != before["corpus/zero.parquet"]  # a new key


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(
            b"".join(json.dumps({"text": _sentence(i)}).encode() + b"\n" for i in range(99))
        )
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InputError, match=r"cut\.jsonl\.gz: unreadable gzip JSONL file"):
        ingest_shard(Shard(0, str(path), path.name, "jsonl"), SchemaConfig())


@pytest.mark.parametrize("engine", ENGINES)
def test_an_empty_corpus_publishes_an_empty_dataset(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from thresher.flows.curate import curate

    if engine == "spark":
        request.getfixturevalue("spark")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "empty.jsonl").write_bytes(b"")
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
        corpus / "empty.parquet",
    )
    config = parse_config(
        {
            "run_dir": str(tmp_path / "run"),
            "input": {"paths": [str(corpus / "*")]},
            "scorers": [{"name": "word_count"}],
            "selector": {"name": "random", "budget": 0.5},
            "engine": {"kind": engine, "workers": 1},
        },
        base_dir=tmp_path,
    )
    counts = curate(config)["counts"]
    assert counts["reconciles"]
    assert (counts["input"], counts["kept"], counts["quarantined"]["total"]) == (0, 0, 0)
    data = kept_table(tmp_path / "run")
    assert data.num_rows == 0
    assert {"id", "text"} <= set(data.column_names)
    assert (tmp_path / "run" / "data" / "_SUCCESS").exists()


def test_default_text_limit_quarantines_a_20_mb_document(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    _jsonl(path, [json.dumps({"id": "big", "text": "word " * (HUGE // 5)}).encode()])
    result = ingest_shard(Shard(0, str(path), path.name, "jsonl"), SchemaConfig())
    assert result.table.num_rows == 0
    assert result.quarantine.column("reason").to_pylist() == ["text_too_long"]
    assert "8,388,608" in result.quarantine.column("detail")[0].as_py()
    unlimited = ingest_shard(
        Shard(0, str(path), path.name, "jsonl"), SchemaConfig(max_text_bytes=None)
    )
    assert unlimited.table.num_rows == 1


def test_types_that_change_between_chunks_of_one_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "JSONL_CHUNK_LINES", 2)
    path = tmp_path / "drift.jsonl"
    values: list[Any] = [1, 2, "three", "four", 5.5, None, [6], {"seven": 7}]
    _jsonl(
        path, [json.dumps({"text": _sentence(i), "v": v}).encode() for i, v in enumerate(values)]
    )
    table = ingest_shard(Shard(0, str(path), path.name, "jsonl"), SchemaConfig(id=None)).table
    assert table.schema.field("v").type == pa.string()
    assert table.column("v").to_pylist() == [
        "1",
        "2",
        "three",
        "four",
        "5.5",
        None,
        "[6]",
        '{"seven": 7}',
    ]


# -- outputs stay inside the run directory --------------------------------------------


def _small_corpus_config(tmp_path: Path, run_dir: Path, corpus: Path, **overrides: Any) -> Any:
    data: dict[str, Any] = {
        "run_dir": str(run_dir),
        "input": {"paths": [str(corpus)]},
        "scorers": [{"name": "word_count"}],
        "engine": {"kind": "local", "workers": 1},
    }
    data.update(overrides)
    return parse_config(data, base_dir=tmp_path)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"id": ["x"], "text": [_sentence(1)]}), corpus / "one.parquet")
    return corpus


def test_a_scorer_column_cannot_name_a_path(tmp_path: Path, tiny_corpus: Path) -> None:
    with pytest.raises(ConfigError, match=r"scorers\.0\.column"):
        _small_corpus_config(
            tmp_path,
            tmp_path / "run",
            tiny_corpus,
            scorers=[{"name": "word_count", "column": "../../outside"}],
        )


def test_a_symlink_out_of_the_run_directory_is_refused(tmp_path: Path, tiny_corpus: Path) -> None:
    from thresher.flows.curate import curate

    config = _small_corpus_config(tmp_path, tmp_path / "run", tiny_corpus)
    RunDir(config.run_path).prepare({})  # a run directory, as an earlier run leaves it
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    data = tmp_path / "run" / "data"
    data.symlink_to(outside, target_is_directory=True)
    for fresh in (False, True):
        with pytest.raises(RunStateError, match=r"data is a symbolic link to .*elsewhere"):
            curate(config, fresh=fresh)
    assert [p.name for p in outside.iterdir()] == ["precious.txt"]
    assert data.is_symlink()


def test_input_and_run_directory_may_not_overlap(tmp_path: Path, tiny_corpus: Path) -> None:
    from thresher.flows.curate import curate

    inside = _small_corpus_config(tmp_path, tiny_corpus / "run", tiny_corpus)
    with pytest.raises(ConfigError, match=r"run_dir: .* lies inside the input"):
        curate(inside)
    recursive = _small_corpus_config(
        tmp_path, tiny_corpus / "run", tiny_corpus, input={"paths": [f"{tiny_corpus}/**/*.parquet"]}
    )
    with pytest.raises(ConfigError, match=r"run_dir: .* lies inside the input"):
        curate(recursive)
    run_dir = tmp_path / "run"
    (run_dir / "incoming").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["y"], "text": ["text"]}), run_dir / "incoming" / "x.parquet")
    holding = _small_corpus_config(tmp_path, run_dir, run_dir / "incoming")
    with pytest.raises(ConfigError, match=r"input\.paths: .*x\.parquet lies inside run_dir"):
        curate(holding)
    assert (run_dir / "incoming" / "x.parquet").exists()
    assert not (tiny_corpus / "run").exists()


def test_common_type_rules_of_schema_drift() -> None:
    from thresher.io.drift import common_type, concat_conformed

    assert common_type([pa.int32(), pa.int64()]) == pa.int64()
    assert common_type([pa.int64(), pa.float32()]) == pa.float64()
    assert common_type([pa.uint64(), pa.int64()]) == pa.float64()
    assert common_type([pa.null(), pa.bool_()]) == pa.bool_()  # nulls do not vote
    assert common_type([pa.null()]) == pa.string()
    assert common_type([pa.int64(), pa.string()]) == pa.string()
    assert common_type([pa.list_(pa.int64()), pa.int64()]) == pa.string()
    table = concat_conformed(
        [
            pa.table({"a": [1, 2], "b": [[1], [2, 3]]}),
            pa.table({"a": ["x"], "c": [True]}),
        ]
    )
    assert table.to_pydict() == {
        "a": ["1", "2", "x"],
        "b": [[1], [2, 3], None],
        "c": [None, None, True],
    }


def test_harmonize_rewrites_drifted_shards_once(tmp_path: Path) -> None:
    from thresher.stages.harmonize import harmonize_ingested, read_common_schema
    from thresher.stages.ingest import ingest_to_run

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, url, number in (("0", "u", 1), ("1", 7, 2), ("2", None, None)):
        table = pa.table({"id": [name], "text": ["x y"], "url": [url], "n": [number]})
        pq.write_table(table, corpus / f"{name}.parquet")
    run = tmp_path / "run"
    stats = []
    for index, name in enumerate(["0.parquet", "1.parquet", "2.parquet"]):
        shard = Shard(index, str(corpus / name), name, "parquet")
        stats.append(ingest_to_run(shard, SchemaConfig(), RunDir(run)))
    engine = LocalEngine(workers=1)
    # url: string vs integer; n: an integer column stored as null (string) in shard 2
    assert harmonize_ingested(RunDir(run), stats, engine) == {1: ["url"], 2: ["n"]}
    assert harmonize_ingested(RunDir(run), stats, engine) == {}  # a resumed run: nothing
    # statistics without schemas (an older run directory): the footers agree as well
    footers_only = [{k: v for k, v in s.items() if k not in ("schema", "valued")} for s in stats]
    assert harmonize_ingested(RunDir(run), footers_only, engine) == {}
    engine.close()
    common = read_common_schema(RunDir(run))
    assert common is not None and common.field("url").type == pa.string()
    assert common.field("n").type == pa.int64()
    assert pq.read_table(run / "ingested" / "shard-00001.parquet").column("url").to_pylist() == [
        "7"
    ]
