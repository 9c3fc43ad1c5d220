"""The report in a real browser: headless Chromium loads it with no error and shows every plot.

What is asserted, in Chromium at 1366x768 (a common laptop screen):

- no console error, no uncaught exception, no error log entry, no failed load;
- nothing is requested but the file itself and ``data:`` URIs (self-contained);
- every plot is an image that decoded (``naturalWidth > 0``), and the plots
  expected from the run's inputs are all there;
- the page runs no script at all, and hostile document text shows as text;
- the page fits the laptop's width (no horizontal scrolling).

The first test proves the checks can fail: a page with a throwing script,
a console error and a broken plot is caught by each of them.

Chromium is required: without it these tests fail (they never skip) with
the command that installs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.browser import INSTALL_HINT, Chromium, chromium_path
from tests.helpers.curated_run import copy_run, curated_eval_run
from thresher.io.files import read_json
from thresher.reporting.html import write_report
from thresher.run_dir import RunDir

LAPTOP = (1366, 768)

PLOTS_JS = """Array.from(document.querySelectorAll('img.plot')).map(i => ({
  alt: i.alt, loaded: i.complete && i.naturalWidth > 0,
  width: i.getBoundingClientRect().width}))"""


@pytest.fixture(scope="module")
def browser() -> Chromium:
    if chromium_path() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with Chromium(*LAPTOP) as chromium:
        yield chromium


def test_checks_catch_a_broken_page(browser: Chromium, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body>"
        '<img class="plot" alt="good" src="data:image/svg+xml;base64,'
        'PHN2ZyB4bWxucz0naHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmcnIHdpZHRoPScxMCcgaGVpZ2h0PScxMCcvPg==">'
        '<img class="plot" alt="broken" src="data:image/svg+xml;base64,bm90IGFuIHN2Zw==">'
        "<script>console.error('bad thing'); undefinedFunction();</script>"
        "</body></html>",
        encoding="utf-8",
    )
    report = browser.load(page)
    assert report.console_errors == ["bad thing"]
    assert any("undefinedFunction" in e for e in report.exceptions)
    plots = browser.evaluate(PLOTS_JS)
    assert [(p["alt"], p["loaded"]) for p in plots] == [("good", True), ("broken", False)]
    assert browser.evaluate("document.scripts.length") == 1


def test_report_loads_cleanly_with_every_plot(
    browser: Chromium,
    tmp_path_factory: pytest.TempPathFactory,
    small_corpus: Path,
    prefect_server: None,
    tmp_path: Path,
) -> None:
    """A real run with dedup, CCS and an eval's pruning curve (nothing hand-made)."""
    run = copy_run(curated_eval_run(tmp_path_factory, small_corpus), tmp_path / "run")
    page = write_report(str(run)).as_path()
    manifest = read_json(run / "manifest.json")
    stats = read_json(RunDir(run).published().stats)
    dedup = read_json(run / "dedup" / "summary.json")
    assert dedup["duplicates"] > 0 and (run / "eval" / "results.parquet").is_file()

    report = browser.load(page)
    assert report.errors == []
    assert report.requests, "the page was not loaded"
    assert report.requests[0] == page.resolve().as_uri()
    outside = [u for u in report.requests[1:] if not u.startswith("data:")]
    assert outside == []

    plots = browser.evaluate(PLOTS_JS)
    assert {p["alt"] for p in plots} == {
        "funnel plot",
        *(f"histogram of {column}" for column in stats["histograms"]),
        "duplicate cluster sizes",
        "similarity to keeper of removed near-duplicates",
        "strata of ccs(word_count)",
        "pruning curve",
    }
    assert all(p["loaded"] for p in plots), plots
    assert all(p["width"] > 300 for p in plots), plots  # drawn at a readable size
    assert browser.evaluate("document.images.length") == len(plots)  # no injected <img>
    assert browser.evaluate("document.scripts.length") == 0

    sections = browser.evaluate("Array.from(document.querySelectorAll('section')).map(s => s.id)")
    assert sections == [
        "funnel",
        "scores",
        "duplicates",
        "selection",
        "pruning-curve",
        "examples",
        "run",
    ]
    # the counts shown are the manifest's and the dedup summary's
    funnel = browser.evaluate("document.getElementById('funnel').textContent")
    for number in (manifest["counts"]["input"], manifest["counts"]["kept"]):
        assert f"{number:,}" in funnel
    duplicates = browser.evaluate("document.getElementById('duplicates').textContent")
    assert f"{dedup['clusters']:,}" in duplicates and f"{dedup['duplicates']:,}" in duplicates
    assert manifest["counts"]["dropped"]["by_reason"]["duplicate"] == dedup["duplicates"]
    assert browser.evaluate("document.title").startswith("thresher report")
    font = browser.evaluate("getComputedStyle(document.body).fontFamily")
    assert font.endswith("sans-serif"), f"the stylesheet did not apply: {font}"
    width = browser.evaluate("document.documentElement.scrollWidth")
    assert width <= LAPTOP[0], f"the page is {width}px wide on a {LAPTOP[0]}px screen"

    shots = Path(os.environ.get("THRESHER_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    shot = browser.screenshot(shots / "report-1366x768.png")
    assert shot.stat().st_size > 10_000
