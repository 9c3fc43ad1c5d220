"""Decontamination in the curate flow: both engines, counts per set, reuse, resume, invalidation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.config import RunConfig
from thresher.contamination import item_ngrams, normalized_words
from thresher.engines.local import LocalEngine
from thresher.flows.curate import curate
from thresher.io.files import read_parquet_dir
from thresher.run_dir import RunDir
from thresher.runs import load_run
from thresher.stages.decontaminate import decontaminate_dir, decontaminate_to_run

SPAM_LINE = "Subscribe to our newsletter for exclusive coupons"  # 7 words: a short item


def write_eval_sets(directory: Path, corpus: Path) -> dict[str, Any]:
    """Two sets with text copied from the corpus: spans (case and punctuation changed), a line."""
    texts = pq.read_table(corpus / "shard-00.parquet").column("text").to_pylist()
    long = [t for t in texts if t and len(t.split()) > 80]
    spans = [" ".join(t.split()[20:40]) for t in long[:2]]
    quiz = [{"question": spans[0].upper()}, {"question": spans[1].replace(" ", ", ")}]
    quiz.append({"question": "An item that no document of the corpus holds at all, surely not."})
    math = [{"problem": " ".join(long[2].split()[50:66])}, {"problem": SPAM_LINE.lower() + "!"}]
    directory.mkdir(exist_ok=True)
    (directory / "quiz.jsonl").write_text("".join(json.dumps(r) + "\n" for r in quiz))
    pq.write_table(pa.Table.from_pylist(math), directory / "math.parquet")
    return {
        "sets": {
            "quiz": {"paths": [str(directory / "quiz.jsonl")], "text": "question"},
            "math": {"paths": [str(directory / "*.parquet")], "text": "problem"},
        }
    }


def expected_contamination(
    run_dir: Path, sets: dict[str, list[str]], ngram: int = 13
) -> dict[str, str]:
    """id -> first matching set, by exact string matching over the ingested documents."""
    grams = {
        name: {g for item in items for g in item_ngrams(item, ngram)}
        for name, items in sets.items()
    }
    lengths = sorted({len(g.split()) for every in grams.values() for g in every}, reverse=True)
    table = read_parquet_dir(run_dir / "ingested", columns=["id", "text"])
    found: dict[str, str] = {}
    for id_, text in zip(
        table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True
    ):
        words = normalized_words(text)
        hit = None
        for start in range(len(words)):
            for length in lengths:
                window = " ".join(words[start : start + length])
                hit = next((n for n in sets if window in grams[n]), None)
                if hit:
                    break
            if hit:
                break
        if hit:
            found[id_] = hit
    return found


def eval_items(decontaminate: dict[str, Any]) -> dict[str, list[str]]:
    items = {}
    for name, spec in decontaminate["sets"].items():
        path = Path(spec["paths"][0].replace("*.parquet", "math.parquet"))
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines()]
        else:
            rows = pq.read_table(path).to_pylist()
        items[name] = [r[spec["text"]] for r in rows]
    return items


def contaminated(run_dir: Path) -> dict[str, str]:
    dropped = load_run(run_dir).dropped.to_pylist()
    return {r["id"]: r["detail"] for r in dropped if r["reason"] == "contaminated"}


def check_run(run_dir: Path, manifest: dict[str, Any], expected: dict[str, str]) -> None:
    counts = manifest["counts"]
    assert counts["reconciles"]
    found = contaminated(run_dir)
    assert {i: d.split(";")[0].removeprefix("set=") for i, d in found.items()} == expected
    assert counts["dropped"]["by_reason"]["contaminated"] == len(expected)
    section = manifest["decontamination"]
    assert section["contaminated"] == len(expected)
    for name in ("quiz", "math"):
        assert section["sets"][name]["documents"] == sum(v == name for v in expected.values())
        assert section["sets"][name]["matched"] >= section["sets"][name]["documents"]
    assert section["sets"]["quiz"]["items"] == 3 and section["sets"]["math"]["short_items"] == 1
    report = (run_dir / "report.html").read_text()
    assert 'id="contamination"' in report and "<code>quiz</code>" in report
    card = (run_dir / "README.md").read_text()
    quiz = section["sets"]["quiz"]
    assert f"| `quiz` | 3 | {quiz['documents']:,} | {quiz['matched']:,} |" in card


@pytest.mark.spark
@pytest.mark.usefixtures("prefect_server")
def test_decontamination_on_both_engines(
    make_config: Callable[..., RunConfig], tmp_path: Path, small_corpus: Path, spark: Any
) -> None:
    decontaminate = write_eval_sets(tmp_path / "eval", small_corpus)
    local = make_config(run_dir=str(tmp_path / "local"), decontaminate=decontaminate)
    on_spark = make_config(
        run_dir=str(tmp_path / "spark"), decontaminate=decontaminate, engine={"kind": "spark"}
    )
    manifests = [curate(local), curate(on_spark)]
    expected = expected_contamination(tmp_path / "local", eval_items(decontaminate))
    assert set(expected.values()) == {"quiz", "math"}
    for manifest, name in zip(manifests, ("local", "spark"), strict=True):
        check_run(tmp_path / name, manifest, expected)
    assert contaminated(tmp_path / "local") == contaminated(tmp_path / "spark")
    assert manifests[0]["decontamination"] == manifests[1]["decontamination"]


@pytest.mark.usefixtures("prefect_server")
def test_reuse_resume_and_changed_eval_sets(
    make_config: Callable[..., RunConfig], tmp_path: Path, small_corpus: Path
) -> None:
    decontaminate = write_eval_sets(tmp_path / "eval", small_corpus)
    config = make_config(decontaminate=decontaminate)
    run_dir = Path(config.run_path.path)
    first = curate(config)
    before = contaminated(run_dir)
    check_run(run_dir, first, expected_contamination(run_dir, eval_items(decontaminate)))
    indices = sorted(RunDir(config.run_path).shard_names())
    engine = LocalEngine(workers=1)
    assert decontaminate_to_run(config, engine, indices)["reused"]

    # a killed run: the summary and one shard's result gone; only that shard is scanned again
    root = decontaminate_dir(RunDir(config.run_path))
    (result,) = [c for c in root.children() if c.name.startswith("result-")]
    shard_files = sorted(Path(result.path).glob("shard-*.parquet"))
    times = {f.name: f.stat().st_mtime_ns for f in shard_files}
    (root / "summary.json").delete_tree()
    shard_files[1].unlink()
    resumed = decontaminate_to_run(config, engine, indices)
    assert not resumed["reused"] and resumed["contaminated"] == len(before)
    after = {f.name: f.stat().st_mtime_ns for f in sorted(Path(result.path).glob("shard-*"))}
    assert after.keys() == times.keys()
    assert [n for n in times if after[n] != times[n]] == [shard_files[1].name]

    # an edited evaluation file changes the key: recomputed, the old result removed
    quiz = tmp_path / "eval" / "quiz.jsonl"
    quiz.write_text(quiz.read_text().splitlines()[-1] + "\n")
    second = curate(config)
    assert [c.name for c in root.children() if c.name.startswith("result-")] != [result.name]
    assert not Path(result.path).exists()
    expected = expected_contamination(run_dir, eval_items(decontaminate))
    counts = second["decontamination"]
    assert counts["sets"]["quiz"]["documents"] == 0
    assert counts["contaminated"] == len(expected) < first["decontamination"]["contaminated"]
    assert set(contaminated(run_dir)) == set(expected)

    # without the section, the stored result goes and nothing is dropped as contaminated
    third = curate(make_config())
    assert "decontamination" not in third and not Path(root.path).exists()
    assert "contaminated" not in third["counts"]["dropped"]["by_reason"]
