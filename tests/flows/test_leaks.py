"""Nothing leaks out of a run, and nothing from a store or a corpus gets in where it should not.

- Secrets planted in a configuration (a Spark setting, an abfs connection
  string, user information in the S3 endpoint that the run really uses and
  in an input path, nested storage options) reach none of: the run
  directory (manifest, ``_state/``, logs, card, report), the command's
  output, Prefect's database (flow-run parameters, logs, states), also when
  a store fails with the endpoint in its error.
- Object keys of a model directory that leave the local cache (``..``, an
  absolute key) are refused before anything is written; a link planted at
  a temporary name in the cache is not written through.
- Hostile file and column names (a heading, an ``<img onerror>``, a
  ``javascript:`` link, a newline, a pipe, backticks) render in the card
  as text, and a newline in a file name forges no line in the command's
  message or the log.
- A link leading out of a nested directory of the run directory is refused.
"""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import markdown
import pytest
import yaml
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from tests.helpers.s3 import ACCESS_KEY, S3Server
from thresher.cli import app
from thresher.config import parse_config
from thresher.errors import RunStateError, StorageError
from thresher.flows.curate import curate
from thresher.io.fs import Location
from thresher.io.localize import cache_root, local_model, pull
from thresher.keys import json_digest
from thresher.redact import REDACTED

pytestmark = pytest.mark.usefixtures("prefect_server")

PLANTED = {
    "spark": "spark-PLANTED-s3a-secret",
    "ssl": "ssl-PLANTED-keystore-pw",
    "abfs": "abfsPLANTEDaccountkey00==",
    "endpoint": "endpoint-PLANTED-pw",
    "input": "input-PLANTED-pw",
    "proxy": "proxy-PLANTED-pw",
}


def prefect_database() -> str:
    """Everything Prefect's test server stored (its SQLite file), as SQL text, logs flushed."""
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    APILogHandler().flush()  # blocks until the queued log records are stored
    path = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).split("///", 1)[1]
    with sqlite3.connect(path) as connection:
        return "\n".join(connection.iterdump())


def files_below(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def leaked(text: str | bytes, secrets: dict[str, str]) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [name for name, secret in secrets.items() if secret.encode() in data]


# -- secrets ---------------------------------------------------------------------------


def secret_job(corpus: Path, bucket: str, endpoint: str, run_dir: Path) -> dict[str, Any]:
    host = endpoint.split("://", 1)[1]
    return {
        "run_dir": str(run_dir),
        "seed": 5,
        "input": {
            "paths": [
                f"file://reader:{PLANTED['input']}@localhost{corpus}/shard-0[01].parquet",
                f"s3://{bucket}/sample/shard-0[23].*",
            ]
        },
        "schema": {"id": "id", "text": "text", "label": "topic"},
        "scorers": [{"name": "word_count"}],
        "selector": {"name": "random", "budget": 0.5},
        "engine": {
            "kind": "local",
            "workers": 1,
            "spark": {
                "conf": {
                    "spark.hadoop.fs.s3a.secret.key": PLANTED["spark"],
                    "spark.ssl.keyStorePassword": PLANTED["ssl"],
                    "spark.sql.shuffle.partitions": "4",
                }
            },
        },
        "storage_options": {
            "s3": {
                "endpoint_url": f"http://{ACCESS_KEY}:{PLANTED['endpoint']}@{host}",
                "max_attempts": 1,
                "connect_timeout": 2,
                "client_kwargs": {
                    "region_name": "us-east-1",
                    "proxies": {"http": f"http://p:{PLANTED['proxy']}@127.0.0.1:3128"},
                },
            },
            "abfs": {
                "connection_string": "DefaultEndpointsProtocol=https;AccountName=acct;"
                f"AccountKey={PLANTED['abfs']};EndpointSuffix=core.windows.net"
            },
        },
    }


def test_no_planted_secret_reaches_a_record_and_the_run_works(
    s3: S3Server, small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.bucket("leaks")
    s3.upload(small_corpus, bucket, "sample")
    run_dir = tmp_path / "run"
    job = secret_job(small_corpus, bucket, s3.endpoint, run_dir)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(job), encoding="utf-8")
    # Only the endpoint of the options reaches the server, its user information as the keys.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    loaded = parse_config(job, tmp_path)
    assert leaked(repr(loaded.config_dict()), PLANTED) == list(PLANTED)  # the run has every value

    result = CliRunner().invoke(app, ["run", str(config_file), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["counts"]["reconciles"] and manifest["counts"]["kept"] > 0
    read_from_s3 = [i["path"] for i in manifest["inputs"] if i["path"].startswith("s3://")]
    assert len(read_from_s3) == 2  # through the endpoint that carries a password
    recorded = manifest["config"]
    assert recorded["storage_options"]["s3"]["endpoint_url"].startswith(f"http://{REDACTED}@")
    assert recorded["storage_options"]["abfs"]["connection_string"] == REDACTED
    assert recorded["engine"]["spark"]["conf"]["spark.hadoop.fs.s3a.secret.key"] == REDACTED
    assert recorded["storage_options"]["s3"]["client_kwargs"]["region_name"] == "us-east-1"

    written = files_below(run_dir)
    assert any(name.startswith("_state/") for name in written)
    assert any(name.startswith("logs/") for name in written)
    assert {"manifest.json", "README.md", "report.html", "_state/config.json"} <= set(written)
    assert {
        name: leaked(data, PLANTED) for name, data in written.items() if leaked(data, PLANTED)
    } == {}
    assert leaked(result.output, PLANTED) == []

    database = prefect_database()
    (parameters,) = [
        row
        for row in re.findall(r"INSERT INTO \"?flow_run\"? VALUES\((.*)\);", database)
        if str(run_dir) in row
    ]
    assert REDACTED in parameters and "storage_options" in parameters  # stored, redacted
    assert leaked(database, PLANTED) == []


def test_a_store_error_naming_a_uri_with_a_password_leaks_nothing(
    s3: S3Server, small_corpus: Path, tmp_path: Path
) -> None:
    """The store's error names the URI it failed on; the flow run's state and logs keep no password."""
    secrets = {"input": "failing-input-PLANTED-pw"}
    bucket = s3.bucket("leaks")
    job = secret_job(small_corpus, bucket, s3.endpoint, tmp_path / "run")
    job["input"]["paths"] = [f"s3://reader:{secrets['input']}@{bucket}/sample/shard-*"]
    del job["storage_options"]["s3"]["endpoint_url"]
    config = parse_config(job, tmp_path)
    with pytest.raises(StorageError) as raw:
        config.input_files()
    assert leaked(str(raw.value), secrets) == ["input"]  # the store's own message has it

    with pytest.raises(StorageError) as error:
        curate(config)
    assert leaked(str(error.value), secrets) == [] and f"{REDACTED}@{bucket}" in str(error.value)
    database = prefect_database()
    assert f"{REDACTED}@{bucket}" in database  # the failure was stored: state and log
    assert leaked(database, secrets) == []


# -- object keys -------------------------------------------------------------------------


def test_object_keys_leaving_the_model_cache_are_refused_before_any_write(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    client = s3.client()
    outside = tmp_path / "outside"
    keys = {
        "dotdot": "../../../escape.txt",  # cache/inputs/<digest>/../../.. is tmp_path
        "absolute": f"{outside}/evil.txt",  # the key "lm-absolute//tmp/.../evil.txt"
    }
    for case, key in keys.items():
        client.put_object(Bucket=s3_bucket, Key=f"lm-{case}/config.json", Body=b"{}")
        client.put_object(Bucket=s3_bucket, Key=f"lm-{case}/{key}", Body=b"planted")
        listed = Location.of(f"s3://{s3_bucket}/lm-{case}").list_files()
        assert any(".." in e.location.uri or "//" in e.location.uri.split("://")[1] for e in listed)
        with pytest.raises(StorageError, match="thresher copies no such object"):
            local_model(f"s3://{s3_bucket}/lm-{case}", "perplexity: model_path")
        with pytest.raises(StorageError, match="thresher copies no such object"):
            pull(Location.of(f"s3://{s3_bucket}/lm-{case}"), cache_root() / "models" / case)
    assert not (tmp_path / "escape.txt").exists() and not outside.exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing, in or out of the cache


def test_a_link_at_a_temporary_name_in_the_cache_is_not_written_through(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.client().put_object(Bucket=s3_bucket, Key="lm/weights.bin", Body=b"weights")
    uri = f"s3://{s3_bucket}/lm"
    copy = cache_root() / "inputs" / json_digest(uri)
    copy.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    (copy / ".weights.bin.part").symlink_to(victim)  # the name the cache once used
    local = local_model(uri, "perplexity: model_path")
    assert local == copy and (local / "weights.bin").read_bytes() == b"weights"
    assert not (local / "weights.bin").is_symlink() and not victim.exists()
    assert not [p for p in local.iterdir() if p.name.endswith(".part") and not p.is_symlink()]


# -- hostile names -----------------------------------------------------------------------

HOSTILE_COLUMNS = [
    "# heading",
    "<img src=x onerror=alert(1)>",
    "`<img src=x onerror=alert(2)>`",
    "[x](javascript:alert(1))",
    "a|b",
    "new\n# line heading",
]
GOOD_NAME = "`<img src=x onerror=alert(3)>` [x](javascript:alert(4)) a|b.jsonl"
BROKEN_NAME = "broken\nerror: forged line\n# forged heading.jsonl.gz"
CARD_HEADINGS = {
    "Pruned dataset",
    "Source",
    "Method and parameters",
    "Columns",
    "Counts",
    "Load it",
    "Lineage",
}


def hostile_names_corpus(corpus: Path) -> None:
    corpus.mkdir()
    rows = [
        {
            "id": f"d{i}",
            "text": f"Document {i} is about harbours and boats and the sea.",
            **{column: f"value {i}" for column in HOSTILE_COLUMNS},
        }
        for i in range(12)
    ]
    (corpus / GOOD_NAME).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    lines = "".join(json.dumps({"id": f"b{i}", "text": f"text {i}"}) + "\n" for i in range(400))
    (corpus / BROKEN_NAME).write_bytes(gzip.compress(lines.encode())[:-200])  # cut short


def _table_shapes(tokens: list[Any]) -> list[set[int]]:
    """Per table: the set of cell counts of its rows (one value when no row broke out)."""
    shapes, cells, rows = [], 0, set()
    for token in tokens:
        if token.type == "table_open":
            rows = set()
        elif token.type == "tr_open":
            cells = 0
        elif token.type in ("td_open", "th_open"):
            cells += 1
        elif token.type == "tr_close":
            rows.add(cells)
        elif token.type == "table_close":
            shapes.append(rows)
    return shapes


def test_hostile_file_and_column_names_stay_text_in_the_card_the_message_and_the_log(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "corpus"
    hostile_names_corpus(corpus)
    config = tmp_path / "job.yaml"
    job = {
        "run_dir": str(tmp_path / "run"),
        "input": {"paths": [str(corpus)], "on_unreadable": "skip"},
        "schema": {"id": "id", "text": "text"},
        "scorers": [{"name": "word_count"}],
        "selector": {"name": "random", "budget": 1.0},
        "engine": {"kind": "local", "workers": 1},
    }
    config.write_text(json.dumps(job), encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(config), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 3, result.output  # completed, with the broken file skipped
    lines = result.output.splitlines()
    assert not [line for line in lines if line.startswith(("error: forged", "# forged"))]
    (message,) = [line for line in lines if "completed with skipped inputs" in line]
    assert "broken\\nerror: forged line\\n# forged heading.jsonl.gz" in message

    (log,) = (tmp_path / "run" / "logs").glob("*.log")
    log_lines = log.read_text(encoding="utf-8").splitlines()
    assert not [line for line in log_lines if line.startswith(("error: forged", "# forged"))]
    (skipped,) = [line for line in log_lines if "unreadable, skipped" in line]
    assert "broken\\nerror: forged line\\n# forged heading.jsonl.gz: unreadable" in skipped

    card = (tmp_path / "run" / "README.md").read_text(encoding="utf-8")
    body = card.split("---\n", 2)[2]  # the YAML header is metadata, not Markdown
    parser = MarkdownIt("commonmark").enable("table")
    tokens = parser.parse(body)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert set(headings) <= CARD_HEADINGS, headings
    assert all(len(shape) == 1 for shape in _table_shapes(tokens))  # no row broke out
    for html in (parser.render(body), markdown.markdown(body, extensions=["tables"])):
        assert not re.search(r"<(img|script|a)\b", html), html
        assert "javascript:" not in re.sub(r"<code>.*?</code>", "", html, flags=re.S)
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        found = re.findall(r"<h[1-6][^>]*>(.*?)</h[1-6]>", html)
        assert set(found) <= CARD_HEADINGS, found
    for column in HOSTILE_COLUMNS:  # the names really reached the card, as text
        assert column.replace("\n", "\\n").replace("`", "") in body.replace("`", "")


# -- links out of the run directory ------------------------------------------------------


def test_a_link_out_of_a_nested_directory_stops_the_run(make_config: Any, tmp_path: Path) -> None:
    config = make_config()
    run = Path(config.run_path.uri)
    (run / "_state").mkdir(parents=True)
    (run / "_state" / "run.json").write_text('{"keys": {}}')
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "_state" / "ingest").symlink_to(outside)  # where every ingest marker goes
    with pytest.raises(RunStateError, match=r"_state/ingest is a symbolic link"):
        curate(config)
    assert list(outside.iterdir()) == []
