"""The run report: sections present exactly when their inputs exist, escaping, bounded reads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import thresher
from tests.helpers.curated_run import IMG_TEXT, SCRIPT_TEXT, copy_run, curated_eval_run, curated_run
from thresher.errors import RunStateError
from thresher.io.files import read_json
from thresher.reporting.data import build_funnel
from thresher.reporting.html import build_report, write_report
from thresher.reporting.sampling import truncate
from thresher.run_dir import RunDir


@pytest.fixture(scope="module")
def run_dir(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, prefect_server: None
) -> Path:
    return curated_run(tmp_path_factory, small_corpus)


@pytest.fixture(scope="module")
def eval_run_dir(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, prefect_server: None
) -> Path:
    return curated_eval_run(tmp_path_factory, small_corpus)


def _section_ids(html: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)"', html))


def _plots(html: str) -> list[str]:
    return re.findall(r'<img class="plot" alt="([^"]*)" src="data:image/svg\+xml;base64,', html)


def test_flow_writes_report_with_every_section_its_outputs_support(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert _section_ids(html) == {"funnel", "scores", "duplicates", "selection", "examples", "run"}
    assert set(_plots(html)) >= {
        "funnel plot",
        "histogram of word_count",
        "histogram of alpha_fraction",
        "duplicate cluster sizes",
        "strata of ccs(word_count)",
    }
    manifest = read_json(run_dir / "manifest.json")
    counts = manifest["counts"]
    for number in (counts["input"], counts["kept"], counts["quarantined"]["total"]):
        assert f"{number:,}" in html
    for reason in (*counts["dropped"]["by_reason"], *counts["quarantined"]["by_reason"]):
        assert f"<code>{reason}</code>" in html  # every reason is in the funnel table
    summary = read_json(run_dir / "dedup" / "summary.json")
    duplicates = html.split('<section id="duplicates">')[1].split("</section>")[0]
    assert f'duplicate clusters</td><td class="num">{summary["clusters"]:,}<' in duplicates
    assert counts["dropped"]["by_reason"]["duplicate"] == summary["duplicates"]
    # nothing to fetch: no attribute names a network address (document text may show one)
    assert not re.search(r'(src|href|action)\s*=\s*["\']?\s*(https?:)?//', html)


def test_the_eval_runs_report_shows_the_pruning_curve(eval_run_dir: Path) -> None:
    html = (eval_run_dir / "report.html").read_text(encoding="utf-8")
    assert _section_ids(html) >= {"duplicates", "pruning-curve", "selection", "scores"}
    assert "pruning curve" in _plots(html)
    curve = html.split('<section id="pruning-curve">')[1].split("</section>")[0]
    assert "over 2 seeds" in curve and "diff_vs_random" in curve


def _unselected(run_dir: Path, target: Path) -> Path:
    """A copy of a run as scoring alone (``thresher score``, ``thresher eval``) leaves it:
    no published version, no root manifest, card or report."""
    run = copy_run(run_dir, target)
    for name in ("CURRENT", "manifest.json", "README.md", "report.html"):
        (run / name).unlink(missing_ok=True)
    for name in ("versions", "data"):
        shutil.rmtree(run / name, ignore_errors=True)
    assert RunDir(run).current() is None
    return run


def _eval_note(html: str) -> str:
    notes = re.findall(r'<div class="note eval-run">(.*?)</div>', html, flags=re.S)
    assert len(notes) <= 1
    return " ".join(notes[0].split()) if notes else ""


def test_an_eval_runs_report_says_what_the_eval_compared_not_no_selection_yet(
    eval_run_dir: Path, run_dir: Path, tmp_path: Path
) -> None:
    """The run of ``thresher eval`` is never selected by the eval: its report names the eval."""
    expected = (
        "Eval of 2 selectors (<code>random</code>, <code>ccs(word_count)</code>) at pruning "
        "rates 0.5, 0.8, 2 seeds each: this run scored the training pool once; each selection "
        "was made and trained by <code>thresher eval</code>"
    )
    scored_by_eval = build_report(str(_unselected(eval_run_dir, tmp_path / "eval-run")))
    assert "No selection yet" not in scored_by_eval
    assert _eval_note(scored_by_eval).startswith(expected)
    assert "later <code>thresher select</code>" not in scored_by_eval
    assert "pruning-curve" in _section_ids(scored_by_eval)
    # Selected afterwards: the eval is still named, and the selection shown is said to be later.
    selected = (eval_run_dir / "report.html").read_text(encoding="utf-8")
    assert _eval_note(selected).startswith(expected) and "No selection yet" not in selected
    assert "The funnel and the selection shown here are those of a later" in _eval_note(selected)
    # A run scored and not selected, with no eval: the banner that says so, and no eval note.
    scored_only = build_report(str(_unselected(run_dir, tmp_path / "scored-run")))
    assert "No selection yet: this run was scored but not" in scored_only
    assert _eval_note(scored_only) == "" and "pruning-curve" not in _section_ids(scored_only)


def test_unreadable_optional_input_is_a_note_not_a_failure(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path / "run")
    (run / "eval").mkdir()
    pq.write_table(pa.table({"selector": ["random"]}), run / "eval" / "results.parquet")
    html = build_report(str(run))
    assert "pruning-curve" not in _section_ids(html)
    assert re.search(r'class="note">results.parquet could not be read \(ValueError: missing', html)


def test_documents_are_escaped_and_truncated(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "onerror=" not in html.replace("onerror=&#34;", "")  # only as escaped text
    assert "&lt;script&gt;alert(&#39;kept or dropped&#39;)&lt;/script&gt;" in html
    assert "&lt;/pre&gt;&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt; cut here" in html  # a quarantined raw line
    examples = html.split('<section id="examples">')[1]
    assert "dropped: duplicate_id" in examples and "id first seen at shard" in examples
    assert re.search(r"… \[[\d,]+ more characters\]</pre>", examples)
    assert truncate("abcdef", 4) == "abcd… [2 more characters]" and truncate("abc", 4) == "abc"
    assert IMG_TEXT and SCRIPT_TEXT  # the texts the hostile shard carries


def test_funnel_puts_every_reason_in_one_stage(run_dir: Path) -> None:
    manifest = read_json(run_dir / "manifest.json")
    steps = read_json(RunDir(run_dir).published().steps)
    manifest["counts"]["dropped"]["by_reason"]["mystery_reason"] = 0
    funnel, n_input, kept = build_funnel(manifest, [], steps)
    assert [s.stage for s in funnel] == [
        "quarantine",
        "duplicates",
        "filter threshold(alpha_fraction)",
        "not selected",
        "other",
    ]
    assert n_input == manifest["counts"]["input"] and kept == manifest["counts"]["kept"]
    assert sum(s.total_removed for s in funnel) + kept == n_input
    assert funnel[-1].remaining == kept


def test_the_report_reads_statistics_not_tables(run_dir: Path, tmp_path: Path) -> None:
    """Without the score shards and the selection files the report is the same page:
    its histograms and counts come from what the select stage computed where the data is."""
    run = copy_run(run_dir, tmp_path / "run")
    before = build_report(str(run))
    shutil.rmtree(run / "scores")
    version = RunDir(run).published()
    shutil.rmtree(version.selection.as_path())
    after = build_report(str(run))

    def without_examples(html: str) -> str:  # an example's detail is read from its shard
        return re.sub(r'<section id="examples">.*?</section>', "", html, flags=re.S)

    assert "histogram of word_count" in _plots(after)
    assert without_examples(before) == without_examples(after)
    assert build_report(str(run)) == after  # deterministic


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunStateError, match="not a thresher run directory"):
        write_report(str(tmp_path))


def test_api_report_writes_the_page(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path / "run")
    (run / "report.html").unlink()
    path = thresher.report(run)
    assert path.uri == str(run / "report.html") and (run / "report.html").is_file()
