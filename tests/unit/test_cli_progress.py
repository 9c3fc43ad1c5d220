"""Progress reporting: the meter's numbers, the rich bar, log lines, and Spark task counts.

The flow's use of it (log lines from a real curate run) is checked in
test_cli.py::test_score_then_select_at_new_budgets_without_scoring.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from thresher import progress
from thresher.progress import (
    ConsoleProgress,
    LogProgress,
    Meter,
    NullProgress,
    make_progress,
    watch_spark,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_meter_rate_and_eta_from_documents() -> None:
    clock = Clock()
    meter = Meter("score", shards=10, docs=20_000, clock=clock)
    assert meter.status() == "0/10 shards · 0/20,000 docs"
    clock.now += 10.0
    meter.shards_done, meter.docs_done = 3, 5_000
    assert meter.fraction == 0.25
    assert meter.eta == pytest.approx(30.0)
    assert meter.status() == "3/10 shards · 5,000/20,000 docs · 500 docs/s · ETA 0:00:30"
    meter.shards_done, meter.docs_done = 10, 20_000
    assert meter.summary() == "score: 10/10 shards · 20,000/20,000 docs · 2,000 docs/s in 0:00:10"


def test_meter_without_document_total_uses_shards_then_tasks() -> None:
    clock = Clock()
    meter = Meter("ingest", shards=4, clock=clock)
    clock.now += 2.0
    meter.shards_done, meter.docs_done = 1, 900
    assert meter.fraction == 0.25 and meter.eta == pytest.approx(6.0)
    assert meter.status() == "1/4 shards · 900 docs · 450 docs/s · ETA 0:00:06"
    spark = Meter("materialize", clock=clock)
    spark.tasks_done, spark.tasks_total = 3, 12
    assert spark.fraction == 0.25 and "3/12 Spark tasks" in spark.status()


def test_console_progress_draws_a_bar() -> None:
    stream = io.StringIO()
    bars = ConsoleProgress(stream, force_terminal=True)
    with bars.stage("score", shards=2, docs=1_000) as bar:
        bar.advance(shards=1, docs=400)
        bar.advance(shards=1, docs=600)
    text = stream.getvalue()
    assert "score" in text and "2/2 shards" in text and "1,000/1,000 docs" in text
    assert "docs/s" in text and "━" in text  # rich's bar


def test_log_progress_logs_at_intervals_and_at_the_end(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = logging.getLogger("thresher.test.progress")
    with caplog.at_level(logging.INFO, logger=logger.name):
        with LogProgress(logger).stage("ingest", shards=3) as bar:
            bar.advance(shards=1, docs=10)  # within the interval: no line yet
        (record,) = caplog.records  # only the closing line
        assert record.getMessage().startswith("ingest: 1/3 shards · 10 docs · ")
        assert " in 0:00:0" in record.getMessage()
        caplog.clear()
        monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
        with LogProgress(logger).stage("score", shards=2, docs=4) as bar:
            bar.advance(shards=1, docs=2)
            bar.advance(shards=1, docs=2)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("score: 1/2 shards · 2/4 docs")
    assert messages[-1].startswith("score: 2/2 shards · 4/4 docs") and " in 0:00:0" in messages[-1]


def test_make_progress_follows_quiet_and_the_terminal() -> None:
    logger = logging.getLogger("thresher.test.progress")
    assert isinstance(make_progress(quiet=True, logger=logger, tty=True), NullProgress)
    assert isinstance(make_progress(quiet=False, logger=logger, tty=True), ConsoleProgress)
    assert isinstance(make_progress(quiet=False, logger=logger, tty=False), LogProgress)


@pytest.mark.spark
def test_watch_spark_reports_task_counts(spark: Any) -> None:
    meter_progress = NullProgress()
    with meter_progress.stage("score") as bar:
        spark.sparkContext.parallelize(range(100), 5).map(
            lambda x: x * 2
        ).count()  # before: ignored
        with watch_spark(spark.sparkContext, bar, interval=0.05):
            rdd = spark.sparkContext.parallelize(range(1000), 8)
            assert rdd.map(lambda x: x % 7).sum() > 0
    assert (bar.meter.tasks_done, bar.meter.tasks_total) == (8, 8)
