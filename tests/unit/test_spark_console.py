"""What a Spark run shows on the terminal: thresher's progress alone, and the JVM warnings that matter.

The session is started in a process of its own (the test session's shared
Spark session already has its log configuration), and what it writes to
standard error is read back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from thresher.config import SparkConfig
from thresher.engines.spark import QUIET_LOGGERS, SparkEngine

SCRIPT = """
import time

from thresher.config import SparkConfig
from thresher.engines.spark import SparkEngine

engine = SparkEngine(SparkConfig(master="local[1]", conf={"spark.ui.enabled": "false"}))
jvm = engine.spark._jvm
manager = jvm.org.apache.logging.log4j.LogManager
noise = manager.getLogger("org.apache.hadoop.util.NativeCodeLoader")
noise.warn("thresher-test: a known start-up warning")
noise.error("thresher-test: an error of a quiet logger")
manager.getLogger("org.apache.spark.scheduler.DAGScheduler").warn("thresher-test: a warning")
# a stage of more than a second: Spark draws its console bar after half a second
engine.spark.sparkContext.parallelize([0, 1], 2).map(lambda x: time.sleep(1.5) or x).collect()
engine.close()
"""


@pytest.mark.spark
@pytest.mark.slow
def test_a_new_session_shows_no_spark_bars_and_only_the_warnings_that_matter() -> None:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr
    assert "thresher-test: a warning" in err  # the console log works and shows warnings...
    assert "thresher-test: an error of a quiet logger" in err  # ...and errors of quiet loggers
    assert "thresher-test: a known start-up warning" not in err
    assert "Unable to load native-hadoop library" not in err
    assert "Using Spark's default log4j profile" not in err
    assert "[Stage " not in err


def test_the_user_s_own_log4j_configuration_wins() -> None:
    own = "-Dlog4j2.configurationFile=file:///etc/mine.properties"
    engine = SparkEngine(SparkConfig())
    conf = engine._log_conf({"spark.driver.extraJavaOptions": own})
    assert conf == {"spark.driver.extraJavaOptions": own}
    default = engine._log_conf({})["spark.driver.extraJavaOptions"]
    assert default.startswith("-Dlog4j2.configurationFile=file://")
    properties = default.split("file://", 1)[1]
    text = Path(properties).read_text(encoding="utf-8")
    for name in QUIET_LOGGERS:
        assert f"= {name}\n" in text
