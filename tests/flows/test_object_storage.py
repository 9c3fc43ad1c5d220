"""Corpora, run directories and datasets on object storage: a real S3 server on 127.0.0.1.

The server is moto's, in its own process (``tests/helpers/s3.py``), reached
the way a user reaches MinIO or R2: ``AWS_ENDPOINT_URL`` and the standard
credential variables, no code change. What holds on a local disk must hold
there: the same kept ids and rows on both engines, resume after a SIGKILL
without redoing committed shards, a published dataset that a reader
following the card always finds complete, one writer, no secret written
anywhere, and a clear one-line error before any work when the store cannot
be used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.helpers.s3 import SECRET_KEY, S3Server, s3_server
from thresher import faults
from thresher.config import parse_config
from thresher.errors import RunStateError
from thresher.flows.curate import curate
from thresher.io.fs import Location
from thresher.io.lock import RunLock
from thresher.runs import load_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
}


def job(inputs: str, run_dir: str, engine: str, budget: float = 0.5) -> dict[str, Any]:
    config: dict[str, Any] = {
        "run_dir": run_dir,
        "seed": 11,
        "input": {"paths": [inputs]},
        "schema": {"id": "id", "text": "text", "label": "topic"},
        "scorers": [
            {"name": "word_count"},
            {"name": "alpha_fraction"},
            {"name": "minhash", "params": {"num_perm": 64}},
        ],
        "dedup": {"threshold": 0.5},
        "filters": [{"name": "threshold", "params": {"score": "alpha_fraction", "min": 0.8}}],
        "selector": {"name": "random", "budget": budget},
        "engine": {"kind": engine, "workers": 2},
    }
    if engine == "spark":
        config["engine"]["spark"] = {"master": "local[2]", "conf": SPARK_CONF}
    return config


def rows_of(table: Any) -> list[dict[str, Any]]:
    return table.sort_by("id").to_pylist()


@pytest.fixture(scope="module")
def corpus_uri(s3: S3Server, small_corpus: Path) -> str:
    bucket = s3.bucket("corpus")
    s3.upload(small_corpus, bucket, "sample")
    return f"s3://{bucket}/sample/shard-*"


@pytest.fixture(scope="module")
def local_reference(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The same job on the local disk: what the object-store runs must equal."""
    base = tmp_path_factory.mktemp("reference")
    curate(parse_config(job(str(small_corpus / "shard-*"), str(base / "run"), "local"), base))
    return load_run(base / "run")


@pytest.mark.spark
@pytest.mark.parametrize("engine", ["local", "spark"])
def test_input_and_run_directory_on_s3_give_the_local_result(
    engine: str,
    s3: S3Server,
    corpus_uri: str,
    local_reference: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if engine == "spark":
        request.getfixturevalue("spark")
    bucket = s3.bucket("runs")
    run_uri = f"s3://{bucket}/curate"
    manifest = curate(parse_config(job(corpus_uri, run_uri, engine), tmp_path))
    assert manifest["counts"]["reconciles"]
    run = load_run(run_uri)
    assert rows_of(run.data) == rows_of(local_reference.data)  # same ids, same rows
    assert sorted(run.dropped.column("id").to_pylist()) == sorted(
        local_reference.dropped.column("id").to_pylist()
    )
    assert run.manifest["counts"] == local_reference.manifest["counts"]
    keys = s3.keys(bucket, "curate/")
    assert "curate/CURRENT" in keys and "curate/report.html" in keys
    assert not [k for k in keys if "/_staging/" in k or ".tmp-" in k]  # nothing half-written
    assert not any(k.startswith("curate/data") for k in keys)  # no link on an object store

    # The card's one-line load works as written (pandas through fsspec, AWS_ENDPOINT_URL).
    card = s3.client().get_object(Bucket=bucket, Key="curate/README.md")["Body"].read().decode()
    line = card.split("Load it in one line: `")[1].split("`")[0]
    assert line.startswith(f'pd.read_parquet("{run_uri}/versions/')
    frame = eval(line, {"pd": pd})  # the card's own words
    assert sorted(frame["id"]) == sorted(run.data.column("id").to_pylist())


@pytest.mark.usefixtures("s3")
def test_select_report_and_load_run_on_an_s3_run(
    s3: S3Server, corpus_uri: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from thresher.cli import app

    bucket = s3.bucket("runs")
    run_uri = f"s3://{bucket}/scored"
    curate(parse_config(job(corpus_uri, run_uri, "local"), tmp_path), stages="score")
    runner = CliRunner()
    result = runner.invoke(app, ["select", run_uri, "--budget", "50", "--quiet"])
    assert result.exit_code == 0, result.output
    run = load_run(run_uri)
    assert run.data.num_rows == 50 and run.manifest["counts"]["kept"] == 50
    s3.client().delete_object(Bucket=bucket, Key="scored/report.html")
    result = runner.invoke(app, ["report", run_uri])
    assert result.exit_code == 0, result.output
    assert "scored/report.html" in s3.keys(bucket, "scored/")
    result = runner.invoke(app, ["inspect", run_uri])
    assert result.exit_code == 0 and "selected" in result.output


def test_no_secret_is_written_anywhere(s3: S3Server, corpus_uri: str, tmp_path: Path) -> None:
    """Credentials by reference only: the secret never lands in a file the run writes."""
    bucket = s3.bucket("secret")
    run_uri = f"s3://{bucket}/run"
    config = job(corpus_uri, run_uri, "local")
    config["storage_options"] = {
        "s3": {
            "access_key_id": "${AWS_ACCESS_KEY_ID}",
            "secret_access_key": "${AWS_SECRET_ACCESS_KEY}",
        }
    }
    curate(parse_config(config, tmp_path))
    client = s3.client()
    keys = s3.keys(bucket)
    assert len(keys) > 20
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert SECRET_KEY.encode() not in body, key
    manifest = json.loads(client.get_object(Bucket=bucket, Key="run/manifest.json")["Body"].read())
    assert manifest["config"]["storage_options"]["s3"]["secret_access_key"] == (
        "${AWS_SECRET_ACCESS_KEY}"
    )  # recorded as the reference it was written as
    with pytest.raises(Exception, match="environment reference"):
        parse_config({**config, "storage_options": {"s3": {"secret_access_key": "x"}}}, tmp_path)


def test_the_lock_is_a_conditional_write_on_s3(s3: S3Server) -> None:
    bucket = s3.bucket("lock")
    lock = Location.of(f"s3://{bucket}/run/_state/lock")
    first = RunLock(lock)
    first.acquire()
    try:
        with pytest.raises(RunStateError, match="in use by another thresher run"):
            RunLock(lock).acquire()  # same host, the holder alive: refused
    finally:
        first.release()
    assert lock.info() is None  # released
    # A holder on another machine whose heartbeat stopped is taken over, by one writer only.
    # Stopped means on the store's clock (the object's LastModified, in whole seconds), not
    # by the time the holder wrote.
    stale = {"pid": 1, "host": "pod-gone", "since": "2020-01-01T00:00:00+00:00"}
    stale["heartbeat"] = stale["since"]
    s3.client().put_object(Bucket=bucket, Key="run/_state/lock", Body=json.dumps(stale))
    time.sleep(2.1)
    taker = RunLock(lock, stale_seconds=1)
    taker.acquire()
    try:
        assert taker.taken_over is not None and taker.taken_over["host"] == "pod-gone"
        with pytest.raises(RunStateError, match="in use"):
            RunLock(lock, stale_seconds=60).acquire()
    finally:
        taker.release()


# -- faults with real processes ------------------------------------------------------------


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), **(extra or {})}


def start(config: dict[str, Any], directory: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    path = directory / f"job-{len(list(directory.glob('job-*')))}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with open(path.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "thresher", "run", str(path), "--quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def scores_on_s3(s3: S3Server, bucket: str) -> dict[str, str]:
    """Committed score objects and their ETags."""
    paginator = s3.client().get_paginator("list_objects_v2")
    return {
        item["Key"]: item["ETag"] + str(item["LastModified"])
        for page in paginator.paginate(Bucket=bucket, Prefix="run/scores/")
        for item in page.get("Contents", [])
    }


def test_killed_while_scoring_on_s3_resumes_without_redoing_committed_shards(
    s3: S3Server, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from thresher.examples.sample_corpus import write_sample_corpus

    corpus = tmp_path_factory.mktemp("many-shards")
    write_sample_corpus(corpus, n_documents=2400, n_shards=16, seed=5)
    bucket = s3.bucket("kill")
    s3.upload(corpus, bucket, "corpus")
    config = job(f"s3://{bucket}/corpus/shard-*", f"s3://{bucket}/run", "local")
    config["engine"]["batch_size"] = 8
    config["engine"]["workers"] = 1
    # each shard's task holds half a second, so that the kill lands between commits even
    # when a busy machine slows this test's polling more than the child's scoring
    paused = tmp_path / "paused"
    env = child_env({"THRESHER_PAUSE_AT": f"score:shard:0.5:{paused}"})
    process = start(config, tmp_path, env)
    deadline = time.monotonic() + 300
    while len(scores_on_s3(s3, bucket)) < 3:
        assert process.poll() is None, (tmp_path / "job-0.log").read_text()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    before = scores_on_s3(s3, bucket)
    assert 3 <= len(before) < 16, "the kill must land in the middle of scoring"
    assert any(paused.iterdir()), "the shard tasks must have held"
    assert "run/_state/lock" in s3.keys(bucket, "run/_state/")  # the dead run's lock

    manifest = curate(parse_config(config, tmp_path))
    after = scores_on_s3(s3, bucket)
    assert len(after) == 16 and {k: after[k] for k in before} == before  # not redone
    reference = tmp_path / "reference"
    curate(parse_config(job(str(corpus / "shard-*"), str(reference), "local"), tmp_path))
    assert rows_of(load_run(f"s3://{bucket}/run").data) == rows_of(load_run(reference).data)
    assert manifest["counts"]["reconciles"]


@pytest.mark.parametrize("point", ["publish:after-data", "publish:after-pointer"])
def test_killed_while_publishing_on_s3_a_reader_sees_a_complete_version(
    point: str, s3: S3Server, corpus_uri: str, tmp_path: Path
) -> None:
    bucket = s3.bucket("publish")
    run_uri = f"s3://{bucket}/run"
    curate(parse_config(job(corpus_uri, run_uri, "local"), tmp_path))
    old = rows_of(load_run(run_uri).data)

    smaller = job(corpus_uri, run_uri, "local", budget=0.2)
    process = start(smaller, tmp_path, child_env({faults.KILL_AT_ENV: point}))
    process.wait(timeout=300)
    with contextlib.suppress(ProcessLookupError):  # what the dead run started
        os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL

    seen = rows_of(load_run(run_uri).data)  # what a reader following the pointer reads now
    if point == "publish:after-data":
        assert seen == old
    else:
        assert 0 < len(seen) < len(old)
    curate(parse_config(smaller, tmp_path))
    run = load_run(run_uri)
    selection = run.selection
    expected = sorted(selection.filter(selection.column("keep")).column("id").to_pylist())
    assert sorted(r["id"] for r in rows_of(run.data)) == expected
    pointer = json.loads(
        s3.client().get_object(Bucket=bucket, Key="run/CURRENT")["Body"].read().decode()
    )
    versions = {k.split("/")[2] for k in s3.keys(bucket, "run/versions/")}
    assert versions == {pointer["version"], pointer["previous"]}  # no orphan version
    assert not s3.keys(bucket, "run/_staging/") and not s3.keys(bucket, "run/_state/lock")


# -- a store that cannot be used: one line, exit 2, before any work ---------------------------


def run_cli(config: dict[str, Any], directory: Path, env: dict[str, str]) -> tuple[int, str]:
    path = directory / "job.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "thresher", "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return result.returncode, result.stderr.strip()


def test_unusable_stores_are_refused_with_one_line(
    s3: S3Server, corpus_uri: str, small_corpus: Path, tmp_path: Path
) -> None:
    from tests.helpers.s3 import free_port

    bucket = s3.bucket("ok")
    good = job(corpus_uri, f"s3://{bucket}/run", "local")
    env = child_env()
    cases = [
        (
            {**good, "run_dir": "s3://no-such-bucket-here/run"},
            env,
            ["s3://no-such-bucket-here/run", "does not exist"],
        ),
        (
            {**good, "input": {"paths": ["s3://missing-corpus-bucket/x/*.jsonl"]}},
            env,
            ["s3://missing-corpus-bucket", "does not exist"],
        ),
        (
            good,
            {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"},
            ["cannot reach", "AWS_ENDPOINT_URL"],
        ),
        (
            {**good, "input": {"paths": ["az://container/corpus/*.jsonl"]}},
            env,
            ["az://", "thresher[azure]"],
        ),
    ]
    for config, environment, words in cases:
        code, stderr = run_cli(config, tmp_path, environment)
        assert code == 2, stderr
        assert stderr.startswith("error: ") and len(stderr.splitlines()) == 1, stderr
        for word in words:
            assert word in stderr, stderr
    assert s3.keys(bucket) == []  # no work started

    with s3_server(tmp_path, authenticate=True) as strict:  # refuses unknown credentials
        code, stderr = run_cli(
            {**good, "input": {"paths": [str(small_corpus / "shard-*")]}},
            tmp_path,
            {**env, "AWS_ENDPOINT_URL": strict.endpoint},
        )
    assert code == 2 and stderr.startswith("error: ") and len(stderr.splitlines()) == 1, stderr
    assert "refused the credentials" in stderr and f"s3://{bucket}/run" in stderr


HANDOFF = {"formats": ["parquet", "megatron", "mds", "delta"], "file_rows": 60, "validation": 0.1}


def _download(s3: S3Server, bucket: str, prefix: str, out: Path) -> Path:
    """Every object under ``prefix`` into ``out`` (the layout kept)."""
    client = s3.client()
    for key in s3.keys(bucket, prefix):
        target = out / key[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return out


def _handoff_rows(directory: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    files = sorted((directory / "parquet").glob("part-*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


@pytest.mark.spark
def test_the_training_hand_off_on_s3_equals_the_local_one(
    s3: S3Server, corpus_uri: str, small_corpus: Path, tmp_path: Path, spark: Any
) -> None:
    """Spark's executors write the hand-off to S3: the same files as the local engine on disk."""
    from tests.helpers.readers import megatron_indexed_dataset, streaming_without_torchvision
    from thresher.export.delta import table_state

    scorers = [
        {"name": "token_count"},
        {"name": "alpha_fraction"},
        {"name": "minhash", "params": {"num_perm": 64}},
    ]
    local = job(str(small_corpus / "shard-*"), str(tmp_path / "local"), "local")
    local.update(scorers=scorers, output=HANDOFF)
    reference = curate(parse_config(local, tmp_path))
    bucket = s3.bucket("handoff")
    remote = job(corpus_uri, f"s3://{bucket}/curate", "spark")
    remote.update(scorers=scorers, output=HANDOFF)
    manifest = curate(parse_config(remote, tmp_path))
    keys = s3.keys(bucket, "curate/")
    assert not [k for k in keys if "/_staging/" in k or ".tmp-" in k]  # nothing half-written

    for split in ("train", "validation"):
        here = tmp_path / "local" / reference["output"]["splits"][split]["directory"]
        prefix = f"curate/{manifest['output']['splits'][split]['directory']}/"
        there = _download(s3, bucket, prefix, tmp_path / "downloaded" / split)
        rows = _handoff_rows(there)
        assert rows == _handoff_rows(here)  # the same rows in the same order
        indexed = megatron_indexed_dataset()
        parts = [
            indexed.IndexedDataset(str(p)[: -len(".idx")])
            for p in sorted(there.glob("megatron/*.idx"))
        ]
        assert sum(len(part) for part in parts) == len(rows)
        streaming = streaming_without_torchvision()
        mds = streaming.StreamingDataset(local=str(there / "mds"), shuffle=False, batch_size=1)
        assert [mds[i]["id"] for i in range(len(mds))] == [r["id"] for r in rows]
    table = Location.of(f"s3://{bucket}/curate/delta/train")
    assert table_state(table) == (0, manifest["version"])
