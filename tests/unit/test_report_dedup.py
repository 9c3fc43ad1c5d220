"""What dedup removed and why, in the report and the dataset card.

The report and the card read ``dedup/summary.json``: its rule, threshold,
similarity histogram, largest clusters and warnings. A summary written by an
older run lacks these keys; the section then shows what is there.
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import markupsafe
import pytest

from tests.helpers.curated_run import copy_run, curated_run
from thresher.io.files import read_json, write_json_atomic
from thresher.io.fs import Location
from thresher.reporting.card import _dedup, write_card
from thresher.reporting.data import ReportData
from thresher.reporting.html import _dedup_context, render, write_report

#: A summary as runs before the cluster rule wrote it (no rule, warnings or similarity).
OLD_SUMMARY: dict[str, Any] = {
    "documents": 120,
    "eligible": 118,
    "with_signature": 118,
    "exact_copies": 4,
    "lsh": {"threshold": 0.7, "bands": 16, "rows": 4},
    "clusters": 6,
    "clustered_documents": 30,
    "duplicates": 24,
    "exact_removed": 4,
    "near_removed": 20,
    "cluster_sizes": {"2": 3, "4": 1, "18": 1, "6": 1},
    "largest_clusters": [
        {"size": 18, "cluster": 40, "keeper_id": "doc-9"},
        {"size": 6, "cluster": 7, "keeper_id": "doc-2"},
    ],
    "engine": "local",
    "files": ["result-x/clusters/part-0.parquet"],
    "reused": False,
}

WARNING = (
    "cluster 40 (keeper '<b>doc-9</b>') holds 18 documents, 15.3% of the corpus: templated "
    "text? A keeper-centred rule keeps only verified duplicates of the keeper; check the "
    "sample members in the report."
)

#: The same run's summary with every key the keeper-centred rule adds.
NEW_SUMMARY: dict[str, Any] = {
    **OLD_SUMMARY,
    "rule": "keeper",
    "threshold": 0.7,
    "similarity_histogram": {
        "edges": [round(0.05 * i, 2) for i in range(21)],
        "counts": [0] * 14 + [3, 5, 4, 2, 6, 0],
    },
    "below_threshold": 0,
    "largest_clusters": [
        {
            "size": 18,
            "cluster": 40,
            "keeper_id": "doc-9",
            "share": 18 / 118,
            "min_similarity": 0.7125,
            "members": ["doc-10", "doc-11", "doc-12", "doc-13", "doc-14"],
        },
        {
            "size": 2,
            "cluster": 7,
            "keeper_id": "doc-2",
            "share": 2 / 118,
            "min_similarity": 0.9,
            "members": ["doc-3"],
        },
    ],
    "warnings": [WARNING],
}

COMPONENTS_SUMMARY: dict[str, Any] = {**NEW_SUMMARY, "rule": "components", "below_threshold": 3}

KEEPER_RULE = (
    "A document is removed only when its signature-estimated Jaccard similarity with its own "
    "cluster's keeper is at least 0.7; no document is removed through a chain of similar "
    "documents."
)
COMPONENTS_RULE = (
    "Clusters are connected components of similar pairs: every member but the keeper is "
    "removed, also members linked only through a chain (3 removed documents are less similar "
    "to their keeper than the threshold)."
)


def _page(summary: dict[str, Any] | None) -> str:
    """The report page of a run holding nothing but ``summary`` as its dedup result."""
    data = ReportData(
        run_dir=Location.of("/tmp/run"),
        manifest=None,
        shard_stats=[],
        funnel=[],
        input_count=120,
        kept=None,
        histograms={},
        steps=[],
        dedup=summary,
        eval_results=None,
        eval_summary=None,
        examples={},
    )
    return render(data)


def _section(html: str) -> str:
    return html.split('<section id="duplicates">')[1].split("</section>")[0]


def _escaped(text: str) -> str:
    return str(markupsafe.escape(text))


def _svg(uri: str) -> str:
    prefix = "data:image/svg+xml;base64,"
    assert uri.startswith(prefix)
    return base64.b64decode(uri[len(prefix) :]).decode("utf-8")


def _plot_alts(html: str) -> list[str]:
    return re.findall(r'<img class="plot" alt="([^"]*)" src="data:image/svg\+xml;base64,', html)


def _card_counts() -> dict[str, Any]:
    return {"dropped": {"by_reason": {"duplicate": 24, "duplicate_id": 2, "filter": 5}}}


# -- the report --------------------------------------------------------------------


def test_the_context_of_a_new_summary_has_the_rule_the_plot_and_the_cluster_detail() -> None:
    context = _dedup_context(copy.deepcopy(NEW_SUMMARY))
    assert context is not None
    assert context["rule"] == KEEPER_RULE
    assert context["warnings"] == [WARNING]
    rows = dict(context["summary"])
    assert rows["near-duplicates removed below the threshold"] == 0
    assert rows["similarity threshold (estimated Jaccard)"] == 0.7
    assert "threshold 0.7" in _svg(context["similarity_plot"])
    assert context["columns"] == {"share": True, "min_similarity": True, "members": True}
    largest, second = context["largest"]
    assert (largest["share"], largest["min_similarity"]) == ("15.3%", "0.713")
    assert largest["members"] == ["doc-10", "doc-11", "doc-12", "doc-13", "doc-14"]
    assert largest["more"] == 12  # 18 = the keeper + 5 shown + 12 more
    assert (second["share"], second["members"], second["more"]) == ("1.69%", ["doc-3"], 0)


def test_the_context_of_an_old_summary_shows_what_is_there() -> None:
    context = _dedup_context(copy.deepcopy(OLD_SUMMARY))
    assert context is not None
    assert context["rule"] is None and context["warnings"] == []
    assert context["similarity_plot"] is None
    assert context["columns"] == {"share": False, "min_similarity": False, "members": False}
    rows = dict(context["summary"])
    assert rows["duplicates removed (all but one keeper per cluster)"] == 24
    assert rows["similarity threshold (estimated Jaccard)"] == 0.7  # from the LSH parameters
    assert "near-duplicates removed below the threshold" not in rows
    assert [row["keeper_id"] for row in context["largest"]] == ["doc-9", "doc-2"]


def test_an_old_summary_renders_without_the_new_parts() -> None:
    section = _section(_page(copy.deepcopy(OLD_SUMMARY)))
    assert 'duplicate clusters</td><td class="num">6<' in section
    assert "<code>doc-9</code>" in section
    assert _plot_alts(section) == ["duplicate cluster sizes"]
    for absent in ("dedup-warning", "dedup-rule", "share of corpus", "min. similarity"):
        assert absent not in section


def test_the_rule_sentence_differs_by_rule() -> None:
    keeper, components = _page(NEW_SUMMARY), _page(COMPONENTS_SUMMARY)
    assert _escaped(KEEPER_RULE) in _section(keeper) and _escaped(COMPONENTS_RULE) not in keeper
    assert _escaped(COMPONENTS_RULE) in _section(components)
    assert _escaped(KEEPER_RULE) not in components
    without_threshold = {k: v for k, v in NEW_SUMMARY.items() if k not in ("threshold", "lsh")}
    context = _dedup_context(without_threshold)
    assert context is not None
    assert "is at least the threshold; no document" in context["rule"]


def test_each_warning_is_shown_first_in_the_section_and_escaped() -> None:
    second = "second warning: cluster 7 is large"
    section = _section(_page({**NEW_SUMMARY, "warnings": [WARNING, second]}))
    notes = re.findall(
        r'<div class="note dedup-warning"><strong>WARNING:</strong> (.*?)</div>', section
    )
    assert len(notes) == 2 and notes[1] == second
    assert "&lt;b&gt;doc-9&lt;/b&gt;" in notes[0] and "<b>" not in section
    # at the top: before the rule, the counts and the plots
    assert section.index("dedup-warning") < section.index("dedup-rule") < section.index("<table>")


def test_the_largest_clusters_table_has_share_similarity_and_members() -> None:
    section = _section(_page(NEW_SUMMARY))
    table = section.split("<h3>Largest clusters</h3>")[1]
    for header in ("share of corpus", "min. similarity to keeper", "sample of removed members"):
        assert header in table
    first_row = table.split("</tr>")[1]
    assert "15.3%" in first_row and "0.713" in first_row
    assert "<code>doc-10</code>, <code>doc-11</code>" in first_row and "and 12 more" in first_row
    assert set(_plot_alts(section)) == {
        "duplicate cluster sizes",
        "similarity to keeper of removed near-duplicates",
    }


def test_the_similarity_histogram_marks_the_threshold_and_says_when_it_is_empty() -> None:
    from thresher.reporting import plots

    edges = NEW_SUMMARY["similarity_histogram"]["edges"]
    drawn = _svg(plots.similarity_histogram(edges, [0] * 14 + [3, 5, 4, 2, 6, 0], 0.7))
    assert "threshold 0.7" in drawn and "no near-duplicates removed" not in drawn
    assert "similarity to the cluster" in drawn  # the x axis is labelled
    empty = _svg(plots.similarity_histogram(edges, [0] * 20, 0.7))
    assert "no near-duplicates removed" in empty and "threshold 0.7" in empty
    unknown = _svg(plots.similarity_histogram(edges, [1] * 20, None))
    assert "threshold" not in unknown


def test_a_histogram_that_does_not_match_its_edges_is_left_out() -> None:
    broken = {**NEW_SUMMARY, "similarity_histogram": {"edges": [0.0, 1.0], "counts": [1, 2]}}
    context = _dedup_context(broken)
    assert context is not None and context["similarity_plot"] is None


# -- the card ----------------------------------------------------------------------


def test_the_card_states_the_rule_the_counts_and_the_warnings() -> None:
    config = {"dedup": {"threshold": 0.7, "clusters": "keeper"}}
    text = _dedup(config, _card_counts(), copy.deepcopy(NEW_SUMMARY))
    assert (
        "A document is removed only when its estimated Jaccard similarity with its cluster's "
        "keeper is at least 0.7, never through a chain of similar documents." in text
    )
    assert "Dedup found 6 duplicate clusters and removed 4 exact copies and 20 " in text
    assert "`duplicate` 24, `duplicate_id` 2." in text
    # the warning is a block quote of its own, its text (ids from the corpus) as code
    assert f"\n\n> **Warning:** `{WARNING}`" in text
    components = _dedup(config, _card_counts(), copy.deepcopy(COMPONENTS_SUMMARY))
    assert (
        "Clusters are connected components of similar pairs: every member but the keeper is "
        "removed, also through a chain (3 removed documents are less similar to their keeper "
        "than the threshold)." in components
    )
    assert "never through a chain" not in components


def test_the_card_of_an_old_summary_has_counts_but_no_rule_or_warning() -> None:
    config = {"dedup": {"threshold": 0.7}}
    text = _dedup(config, _card_counts(), copy.deepcopy(OLD_SUMMARY))
    assert "Dedup found 6 duplicate clusters and removed 4 exact copies" in text
    assert "through a chain" not in text and "Warning" not in text
    without_split = {k: v for k, v in OLD_SUMMARY.items() if k not in ("exact_removed",)}
    assert "and removed 24 duplicates." in _dedup(config, _card_counts(), without_split)
    # a summary left by a run with dedup that is no longer configured is not shown
    assert "Dedup found" not in _dedup({"dedup": None}, _card_counts(), NEW_SUMMARY)


def test_a_warning_that_holds_markdown_stays_code_in_the_card() -> None:
    hostile = "cluster 1 (keeper '`x` [a](http://e) | <script>') holds\n9 documents"
    text = _dedup(
        {"dedup": {"threshold": 0.7}}, _card_counts(), {**NEW_SUMMARY, "warnings": [hostile]}
    )
    line = text.split("> **Warning:** ")[1]
    # a fence longer than the backticks inside, the newline shown as \n: one code span
    assert line == "``cluster 1 (keeper '`x` [a](http://e) | <script>') holds\\n9 documents``"


# -- a real run --------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, prefect_server: None
) -> Path:
    return curated_run(tmp_path_factory, small_corpus)


def test_a_real_runs_card_and_report_read_the_new_summary(run_dir: Path, tmp_path: Path) -> None:
    target = copy_run(run_dir, tmp_path / "run")
    path = target / "dedup" / "summary.json"
    stored = read_json(path)
    # the run's own summary states its rule
    assert stored["rule"] == "keeper" and stored["below_threshold"] == 0
    assert "never through a chain" in write_card(target).read_text()
    # a summary of the old layout: the card still says what dedup removed, and no rule
    new_keys = ("rule", "threshold", "similarity_histogram", "below_threshold", "warnings")
    write_json_atomic({k: v for k, v in stored.items() if k not in new_keys}, path)
    old_card = write_card(target).read_text()
    assert f"Dedup found {stored['clusters']:,} duplicate cluster" in old_card
    assert "through a chain" not in old_card
    write_json_atomic(
        {
            **stored,
            "rule": "keeper",
            "threshold": 0.5,
            "similarity_histogram": NEW_SUMMARY["similarity_histogram"],
            "below_threshold": 0,
            "warnings": [WARNING],
        },
        path,
    )
    card = write_card(target).read_text()
    assert "keeper is at least 0.5, never through a chain" in card
    assert f"> **Warning:** `{WARNING}`" in card
    html = write_report(target).read_text()
    section = _section(html)
    assert section.count('class="note dedup-warning"') == 1
    assert "is at least 0.5; no document is removed through a chain" in section
    assert "similarity to keeper of removed near-duplicates" in _plot_alts(section)
