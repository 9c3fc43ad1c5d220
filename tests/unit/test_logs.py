"""The command's log file gets every record; the console shows what its level (and --quiet) allow."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from thresher.io.fs import Location
from thresher.logs import run_log


@pytest.fixture
def console() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The ``thresher`` logger at WARNING (as PREFECT_LOGGING_LEVEL sets Prefect's), on a console."""
    logger = logging.getLogger("thresher")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield logger, stream
    logger.removeHandler(handler)
    logger.setLevel(before)


@pytest.mark.parametrize("quiet", [True, False])
def test_the_log_file_gets_info_records_whatever_the_console_shows(
    tmp_path: Path, console: tuple[logging.Logger, io.StringIO], quiet: bool
) -> None:
    logger, stream = console
    (tmp_path / "run").mkdir()
    child = logging.getLogger("thresher.stage")
    with run_log(Location.of(tmp_path / "run"), quiet=quiet) as log:
        child.info("an info record")
        child.warning("a warning record")
    text = Path(log.path).read_text(encoding="utf-8")
    assert Path(log.path).parent == tmp_path / "run" / "logs"
    assert "INFO    thresher.stage: an info record" in text
    assert "WARNING thresher.stage: a warning record" in text
    shown = stream.getvalue()
    assert "a warning record" in shown and "an info record" not in shown  # as before the block
    assert logger.level == logging.WARNING  # restored
    child.info("after the block")
    assert "after the block" not in stream.getvalue()


def test_quiet_keeps_info_off_a_console_that_showed_it(
    tmp_path: Path, console: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = console
    logger.setLevel(logging.INFO)
    (tmp_path / "run").mkdir()
    with run_log(Location.of(tmp_path / "run"), quiet=True) as log:
        logger.info("progress of a stage")
        logger.error("a failure")
    assert "progress of a stage" in Path(log.path).read_text(encoding="utf-8")
    assert "a failure" in stream.getvalue() and "progress of a stage" not in stream.getvalue()
    with run_log(Location.of(tmp_path / "run"), quiet=False):
        logger.info("shown without --quiet")
    assert "shown without --quiet" in stream.getvalue()
