"""Secrets out of what a run records or shows; names shown literally; nothing written outside.

Module-level checks of :mod:`thresher.redact` and of the places that use it
(the config's serialised form, the log filter, the card's code spans,
storage options that nest, object keys copied to a local directory, links
inside a run directory). The end-to-end checks, through a real run, the
S3 test server and Prefect's database, are in ``tests/flows/test_leaks.py``.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import markdown
import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from thresher.config import parse_config
from thresher.errors import RunStateError, StorageError
from thresher.io.files import check_contained
from thresher.io.fs import Location
from thresher.io.localize import safe_relative
from thresher.io.options import StorageOptions
from thresher.keys import json_digest
from thresher.logs import Redacting
from thresher.redact import (
    REDACTED,
    printable,
    redact_known,
    redact_uris,
    redactions,
    remember_secrets,
    shown,
)
from thresher.reporting.card import code

#: Secrets planted in a configuration: none may survive redaction.
PLANTED = {
    "spark": "spark-PLANTED-s3a-secret",
    "ssl": "ssl-PLANTED-password",
    "abfs": "abfsPLANTEDaccountkey==",
    "endpoint": "endpoint-PLANTED-pw",
    "input": "input-PLANTED-pw",
    "proxy": "proxy-PLANTED-pw",
    "master": "master-PLANTED-token",
    "signature": "sigPLANTED",
    "java": "java-PLANTED-pw",
}


def secret_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "run_dir": str(tmp_path / "run"),
        "input": {"paths": [f"file://reader:{PLANTED['input']}@localhost{tmp_path}/c/*.jsonl"]},
        "schema": {"id": "id", "text": "text"},
        "scorers": [{"name": "word_count"}],
        "selector": {"name": "random", "budget": 0.5},
        "engine": {
            "kind": "local",
            "spark": {
                "master": f"k8s://https://{PLANTED['master']}@k8s.example:443",
                "conf": {
                    "spark.hadoop.fs.s3a.secret.key": PLANTED["spark"],
                    "spark.ssl.keyStorePassword": PLANTED["ssl"],
                    "spark.driver.extraJavaOptions": f"-Dx.password={PLANTED['java']} -Dy=1",
                    "spark.sql.shuffle.partitions": "4",
                },
            },
        },
        "storage_options": {
            "abfs": {
                "connection_string": "DefaultEndpointsProtocol=https;AccountName=acct;"
                f"AccountKey={PLANTED['abfs']};EndpointSuffix=core.windows.net",
                "account_name": "acct",
            },
            "s3": {
                "endpoint_url": f"http://minio:{PLANTED['endpoint']}@127.0.0.1:9000",
                "secret_access_key": "${AWS_SECRET_ACCESS_KEY}",
                "client_kwargs": {
                    "region_name": "us-east-1",
                    "proxy": f"http://p:{PLANTED['proxy']}@127.0.0.1:3128",
                },
            },
            "https": {
                "client_kwargs": {"url": f"https://h/x?X-Amz-Signature={PLANTED['signature']}"}
            },
        },
    }


def test_every_planted_secret_is_redacted_and_references_stay(tmp_path: Path) -> None:
    config = parse_config(secret_config(tmp_path), tmp_path)
    raw = repr(config.config_dict())
    assert all(secret in raw for secret in PLANTED.values())  # the run keeps the values
    for recorded in (config.recorded_dict(), config.model_dump(), config.model_dump(mode="json")):
        text = repr(recorded)
        assert not [name for name, secret in PLANTED.items() if secret in text], text
    recorded = config.recorded_dict()
    assert recorded["storage_options"]["s3"]["secret_access_key"] == "${AWS_SECRET_ACCESS_KEY}"
    assert recorded["storage_options"]["s3"]["endpoint_url"] == (
        f"http://{REDACTED}@127.0.0.1:9000"
    )  # where the store is stays readable
    assert recorded["storage_options"]["s3"]["client_kwargs"]["region_name"] == "us-east-1"
    assert recorded["engine"]["spark"]["conf"]["spark.sql.shuffle.partitions"] == "4"
    assert recorded["engine"]["spark"]["conf"]["spark.hadoop.fs.s3a.secret.key"] == REDACTED
    assert "-Dy=1" in recorded["engine"]["spark"]["conf"]["spark.driver.extraJavaOptions"]
    assert sorted(redactions(recorded)) == sorted(
        [
            "engine.spark.conf.spark.driver.extraJavaOptions",
            "engine.spark.conf.spark.hadoop.fs.s3a.secret.key",
            "engine.spark.conf.spark.ssl.keyStorePassword",
            "engine.spark.master",
            "input.paths[0]",
            "storage_options.abfs.connection_string",
            "storage_options.https.client_kwargs.url",
            "storage_options.s3.client_kwargs.proxy",
            "storage_options.s3.endpoint_url",
        ]
    )


def test_a_config_without_secrets_records_and_hashes_as_before(make_config: Any) -> None:
    config = make_config(
        storage_options={"s3": {"endpoint_url": "http://127.0.0.1:9000", "region": "eu-west-1"}},
        input={"paths": ["/data/year=2024/token=3/*.parquet"]},
    )
    assert config.recorded_dict() == config.config_dict()
    assert config.config_hash() == json_digest(config.config_dict(), length=64)


def test_prefect_stores_the_redacted_config_and_the_flow_gets_the_real_one(
    tmp_path: Path,
) -> None:
    """Prefect serialises flow parameters with FastAPI's jsonable_encoder (Flow.serialize_parameters)."""
    from thresher.flows.curate import curate, resolve_config

    config = parse_config(secret_config(tmp_path), tmp_path)
    stored = repr(curate.serialize_parameters({"config": config, "run_dir": None}))
    assert "storage_options" in stored and REDACTED in stored
    assert not [name for name, secret in PLANTED.items() if secret in stored]
    assert resolve_config(config) is config  # the flow itself runs with the values


def test_uris_lose_their_user_information_and_secret_parameters() -> None:
    cases = {
        "s3://u:pw@bucket/key": f"s3://{REDACTED}@bucket/key",
        "k8s://https://token@host:443": f"k8s://https://{REDACTED}@host:443",
        "jdbc:postgresql://h/db;user=a;password=pw": f"jdbc:postgresql://h/db;user=a;password={REDACTED}",
        "see https://h/x?sv=1&sig=pw and /tmp/a@b": f"see https://h/x?sv=1&sig={REDACTED} and /tmp/a@b",
        "s3://bucket/path@2x.png": "s3://bucket/path@2x.png",
        "spark://host:7077": "spark://host:7077",
        "https://h/x?token=${TOKEN}": "https://h/x?token=${TOKEN}",
    }
    assert {text: redact_uris(text) for text in cases} == cases


def test_secrets_of_a_config_are_found_in_free_text(tmp_path: Path) -> None:
    """A store's message may quote a secret outside any URI (botocore names the bucket)."""
    data = secret_config(tmp_path)
    data["storage_options"]["s3"]["weird"] = "abc"  # too short to look for in text
    remember_secrets(parse_config(data, tmp_path).config_dict())
    text = (
        f'Invalid bucket name "reader:{PLANTED["input"]}@b"; key {PLANTED["spark"]}; '
        f"AccountKey={PLANTED['abfs']}; abc and run_dir {tmp_path}"
    )
    cleaned = redact_known(text)
    assert not [name for name, secret in PLANTED.items() if secret in cleaned], cleaned
    assert cleaned.endswith(f"; abc and run_dir {tmp_path}")


def test_names_are_shown_on_one_line() -> None:
    assert printable("a\nb\r\x1b[31m\u202e\u2028\t") == "a\\nb\\r\\x1b[31m\\u202e\\u2028\\t"
    assert printable("naïve 名前 /x y") == "naïve 名前 /x y"
    assert shown("s3://u:pw@b/a\nb") == f"s3://{REDACTED}@b/a\\nb"


def test_the_log_filter_escapes_names_and_redacts_uris() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(Redacting())
    logger = logging.getLogger("thresher.tests.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        name = "a.jsonl\nERROR forged line"
        logger.warning("%s: unreadable, skipped after %d record(s)", name, 3)
        try:
            raise StorageError("s3://u:pw@bucket/x: cannot reach endpoint http://m:pw@h:9000")
        except StorageError:
            logger.exception("failed for %s", Path("/tmp/b\nc"))
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "a.jsonl\\nERROR forged line: unreadable, skipped after 3 record(s)"
    assert not any(line.startswith("ERROR forged") for line in lines)
    assert lines[1] == "failed for /tmp/b\\nc"
    assert "pw" not in stream.getvalue() and "cannot reach endpoint" in stream.getvalue()


@given(st.text(max_size=40))
def test_a_code_span_shows_any_text_literally(text: str) -> None:
    """In a paragraph and in a table cell: one code element holding the text, nothing else."""
    parser = MarkdownIt("commonmark").enable("table")
    expected = shown(text) or " "
    tokens = parser.parse(f"- {code(text)}\n")
    inline = [t for t in tokens if t.type == "inline"]
    assert len(inline) == 1 and [c.type for c in inline[0].children or []] == ["code_inline"]
    assert inline[0].children[0].content == expected  # type: ignore[index]
    table = f"| name | n |\n|---|---:|\n| {code(text, table=True)} | 1 |\n"
    tokens = parser.parse(table)
    cells = [t for t in tokens if t.type == "inline"]
    assert len(cells) == 4, table  # two header cells, one row of two cells
    assert [c.type for c in cells[2].children or []] == ["code_inline"]
    assert cells[2].children[0].content == expected  # type: ignore[index]
    for html in (parser.render(table), markdown.markdown(table, extensions=["tables"])):
        assert html.count("<td") == 2 and html.count("<code>") == 1, html
        for tag in ("<a", "<img", "<h1", "<h2", "<script", "<em", "<strong", "<br"):
            assert tag not in html, html


def test_nested_storage_options_are_hashable_and_checked_at_every_depth(
    tmp_path: Path, make_config: Any
) -> None:
    nested = {"s3": {"client_kwargs": {"region_name": "us-east-1", "verify": [True, {"a": 1}]}}}
    config = make_config(storage_options=nested)
    options = config.storage
    assert hash(options) == hash(StorageOptions.from_mapping(nested))
    assert options.raw("s3") == nested["s3"]
    location = Location.of("s3://bucket/run", options)
    assert location.store is location.store  # built once (the store cache hashes the options)
    with pytest.raises(
        Exception, match=r"storage_options\.s3\.client_kwargs\.aws_secret_access_key"
    ):
        make_config(storage_options={"s3": {"client_kwargs": {"aws_secret_access_key": "x"}}})
    with pytest.raises(Exception, match=r"storage_options\.gs\.creds\[1\]\.token"):
        make_config(storage_options={"gs": {"creds": [{}, {"token": "x"}]}})
    os.environ["THRESHER_TEST_REGION"] = "eu-north-1"
    try:
        referenced = make_config(
            storage_options={"s3": {"client_kwargs": {"region_name": "${THRESHER_TEST_REGION}"}}}
        )
        assert referenced.storage.resolved("s3")["client_kwargs"]["region_name"] == "eu-north-1"
    finally:
        del os.environ["THRESHER_TEST_REGION"]


def test_an_s3_endpoint_gives_its_user_information_as_the_keys() -> None:
    options = StorageOptions.from_mapping(
        {"s3": {"endpoint_url": "http://AKIA:s%2Fcret@127.0.0.1:9000", "region": "eu-west-1"}}
    )
    assert options.resolved("s3a") == {
        "endpoint_url": "http://127.0.0.1:9000",
        "access_key_id": "AKIA",
        "secret_access_key": "s/cret",
        "region": "eu-west-1",
    }
    explicit = StorageOptions.from_mapping(
        {"s3": {"endpoint_url": "https://u:p@h", "access_key_id": "${KEY_ID}"}}
    )
    os.environ["KEY_ID"] = "from-env"
    try:
        assert explicit.resolved("s3")["access_key_id"] == "from-env"
    finally:
        del os.environ["KEY_ID"]
    http = StorageOptions.from_mapping({"https": {"endpoint_url": "https://u:p@h"}})
    assert http.resolved("https") == {"endpoint_url": "https://u:p@h"}  # other schemes: as given


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../b", "/etc/passwd", "a//b", "./a", "a/", "a\\..\\b", "a\0b", "C:x", ""],
)
def test_object_keys_that_leave_a_local_copy_are_refused(key: str) -> None:
    with pytest.raises(StorageError, match="thresher copies no such object"):
        safe_relative(key, "s3://bucket/models")


def test_ordinary_object_keys_are_kept() -> None:
    for key in ("model.bin", "tokenizer/vocab.json", "a..b/c.d", "..hidden", "名前.bin"):
        assert safe_relative(key, "s3://bucket/models") == key


def test_a_link_out_of_a_nested_directory_of_the_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "versions" / "v1" / "data").mkdir(parents=True)
    (run / "data").symlink_to("versions/v1/data")  # inside: the published-data link
    (run / "versions" / "v1" / "selection").symlink_to(run / "versions" / "v1" / "data")
    check_contained(run)
    (run / "models" / "word_count").mkdir(parents=True)
    (run / "models" / "word_count" / "weights").symlink_to(outside)
    with pytest.raises(RunStateError, match="models/word_count/weights is a symbolic link"):
        check_contained(run)
    (run / "models" / "word_count" / "weights").unlink()
    (run / "scores").mkdir()
    (run / "scores" / "shard-00000.parquet").symlink_to(tmp_path / "missing" / "x.parquet")
    with pytest.raises(RunStateError, match="outside the run directory"):
        check_contained(run)  # a dangling link too: writing through it creates the file outside
