"""The run report: sections present exactly when their inputs exist, escaping, bounded reads."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import thresher
from tests.curated_run import (
    CLUSTERS,
    IMG_TEXT,
    SCRIPT_TEXT,
    STRATA,
    add_contract_files,
    copy_run,
    curated_run,
)
from thresher.errors import RunStateError
from thresher.io import schema as S
from thresher.io.files import read_json
from thresher.reporting.data import build_funnel, gather
from thresher.reporting.html import build_report, write_report
from thresher.reporting.sampling import example_rows, truncate
from thresher.run_dir import RunDir


@pytest.fixture(scope="module")
def run_dir(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, prefect_server: None
) -> Path:
    return curated_run(tmp_path_factory, small_corpus)


def _section_ids(html: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)"', html))


def _plots(html: str) -> list[str]:
    return re.findall(r'<img class="plot" alt="([^"]*)" src="data:image/svg\+xml;base64,', html)


def test_flow_writes_report_with_core_sections_only(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert _section_ids(html) == {"funnel", "scores", "selection", "examples", "run"}
    assert _plots(html) == ["funnel plot", "histogram of word_count", "histogram of alpha_fraction"]
    manifest = read_json(run_dir / "manifest.json")
    counts = manifest["counts"]
    for number in (counts["input"], counts["kept"], counts["quarantined"]["total"]):
        assert f"{number:,}" in html
    for reason in (*counts["dropped"]["by_reason"], *counts["quarantined"]["by_reason"]):
        assert f"<code>{reason}</code>" in html  # every reason is in the funnel table
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing to fetch
    assert "https://" not in html


def test_contract_files_add_their_sections(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path / "run")
    written = add_contract_files(run)
    html = build_report(run)
    assert _section_ids(html) >= {"duplicates", "pruning-curve", "selection"}
    assert set(_plots(html)) >= {
        "duplicate cluster sizes",
        "pruning curve",
        "strata of random",
        "clusters of random",
    }
    duplicates = html.split('<section id="duplicates">')[1].split("</section>")[0]
    assert re.search(
        rf"duplicate clusters</td><td class=\"num\">{written['clusters']}<", duplicates
    )
    assert re.search(
        rf"documents in clusters</td><td class=\"num\">{written['documents']}<", duplicates
    )
    assert "<code>dup-3-0</code>" in duplicates  # keeper of the largest cluster is listed first
    selection = html.split('<section id="selection">')[1].split("</section>")[0]
    assert f"{len(STRATA)} strata" in selection and f"{len(CLUSTERS)} clusters" in selection
    assert "<td>beta</td><td><code>0.1</code></td>" in selection  # other details: a table
    assert 'exact copies removed</td><td class="num">1<' in duplicates
    assert 'near-duplicates removed</td><td class="num">7<' in duplicates
    clusters = thresher.load_run(run).clusters
    assert clusters is not None and clusters.num_rows == written["documents"]
    curve = html.split('<section id="pruning-curve">')[1].split("</section>")[0]
    assert "over 3 seeds" in curve and "diff_vs_random" in curve


def test_unreadable_optional_input_is_a_note_not_a_failure(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path / "run")
    (run / "eval").mkdir()
    pq.write_table(pa.table({"selector": ["random"]}), run / "eval" / "results.parquet")
    html = build_report(run)
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
    steps = read_json(run_dir / "selection" / "steps.json")
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


def test_large_runs_are_sampled_and_the_report_is_deterministic(run_dir: Path) -> None:
    data = gather(run_dir, max_rows=100)
    assert data.total_scored_rows > 500
    assert 90 <= data.sampled_rows <= 110  # one rate for every shard, rounded per shard
    assert data.scores is not None and data.scores["keep"].notna().all()
    html = build_report(run_dir, max_rows=100)
    assert f"a uniform sample of {data.sampled_rows:,} of {data.total_scored_rows:,}" in html
    assert html == build_report(run_dir, max_rows=100)


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunStateError, match="not a thresher run directory"):
        write_report(tmp_path)


def test_examples_of_an_empty_selection(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.selection.mkdir()
    pq.write_table(S.SELECTION_SCHEMA.empty_table(), run.selection / "selection.parquet")
    assert example_rows(run, 3, seed=0).empty  # an empty corpus selects nothing: no examples
