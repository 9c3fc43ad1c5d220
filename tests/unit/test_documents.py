"""Files a scorer learns from and models a user names: read alike from a disk and an object store."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.errors import ConfigError, InputError
from thresher.io.documents import file_fingerprints, read_documents
from thresher.io.localize import local_model

EXPECTED = ["first line", "second line", "third", "fourth"]


def _write_examples(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "a.txt").write_text("first line\n\nsecond line\n", encoding="utf-8")
    (directory / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "third"}\n\n'))
    pq.write_table(pa.table({"text": ["fourth", None]}), directory / "c.parquet")
    return ["a.txt", "b.jsonl.gz", "c.parquet"]


def test_documents_of_every_format_are_read_and_bad_files_named(tmp_path: Path) -> None:
    names = [str(tmp_path / name) for name in _write_examples(tmp_path)]
    assert read_documents(names, "dsir") == EXPECTED
    with pytest.raises(ConfigError, match=r"dsir: target file not found: .*missing\.jsonl"):
        read_documents([str(tmp_path / "missing.jsonl")], "dsir", kind="target")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": "no text"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2: no string 'text' field"):
        read_documents([str(tmp_path / "bad.jsonl")], "dsir")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.txt: cannot read example documents"):
        read_documents([str(tmp_path / "latin1.txt")], "fasttext_quality")


@pytest.mark.slow
def test_documents_on_object_storage_read_like_local_files(tmp_path: Path, s3: Any) -> None:
    names = _write_examples(tmp_path / "local")
    bucket = s3.bucket()
    s3.upload(tmp_path / "local", bucket, "examples")
    uris = [f"s3://{bucket}/examples/{name}" for name in names]
    assert read_documents(uris, "fasttext_quality") == EXPECTED
    with pytest.raises(ConfigError, match=f"example file not found: s3://{bucket}/examples/x.txt"):
        read_documents([f"s3://{bucket}/examples/x.txt"], "fasttext_quality")
    before = file_fingerprints(uris)
    assert [f[0] for f in before] == uris and all(f[1] and f[2] for f in before)
    s3.client().put_object(Bucket=bucket, Key="examples/a.txt", Body=b"another line\n")
    after = file_fingerprints(uris)
    assert after[0] != before[0] and after[1:] == before[1:]  # a changed example file is told
    assert file_fingerprints([f"s3://{bucket}/examples/x.txt"])[0][1:] == [None, None]


@pytest.mark.slow
def test_a_model_on_object_storage_is_copied_to_the_cache_once(
    tmp_path: Path, s3: Any, s3_bucket: str
) -> None:
    model = tmp_path / "model"
    (model / "tokenizer").mkdir(parents=True)
    (model / "config.json").write_text('{"d_model": 8}', encoding="utf-8")
    (model / "tokenizer" / "vocab.json").write_text('{"a": 0}', encoding="utf-8")
    bucket = s3_bucket
    s3.upload(model, bucket, "models/lm")
    local = local_model(f"s3://{bucket}/models/lm", "perplexity: model_path")
    assert local.is_relative_to(tmp_path / "cache")
    assert (local / "config.json").read_bytes() == (model / "config.json").read_bytes()
    assert (local / "tokenizer" / "vocab.json").read_bytes() == b'{"a": 0}'
    requests = len(s3.requests())
    assert local_model(f"s3://{bucket}/models/lm", "perplexity: model_path") == local
    assert len(s3.requests()) == requests  # once per process: no request the second time
    one = local_model(f"s3://{bucket}/models/lm/config.json", "m", kind="file")
    assert one.read_text(encoding="utf-8") == '{"d_model": 8}'
    with pytest.raises(ConfigError, match=f"perplexity: model_path: 's3://{bucket}/nothing'"):
        local_model(f"s3://{bucket}/nothing", "perplexity: model_path")
    with pytest.raises(ConfigError, match="is not a file"):
        local_model(f"s3://{bucket}/models/lm/missing.bin", "m", kind="file")
    assert local_model(str(model), "m") == model  # a local path is used where it is
    with pytest.raises(ConfigError, match=r"m: .* is not a directory"):
        local_model(str(tmp_path / "absent"), "m")
