"""The trainers' own readers of the export formats, for tests that read files back.

megatron-core and mosaicml-streaming are test-only dependencies (the
``dev`` extra and the Makefile's venv recipe): thresher never imports them.
Each function here returns the real library, or skips the calling test,
with the reason, where it is not installed (a venv made without ``dev``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from typing import Any

import pytest

#: streaming's subpackages that import torchvision at import time (and nothing the MDS reader uses).
STREAMING_TORCHVISION_PACKAGES = ("streaming.vision",)


def megatron_indexed_dataset() -> Any:
    """megatron-core's ``megatron.core.datasets.indexed_dataset`` module (skips without it)."""
    pytest.importorskip("megatron.core", reason="megatron-core is not installed (dev extra)")
    with warnings.catch_warnings():  # it warns that Transformer Engine and Apex are absent
        warnings.simplefilter("ignore")
        return importlib.import_module("megatron.core.datasets.indexed_dataset")


def streaming_without_torchvision() -> Any:
    """The ``streaming`` package (mosaicml-streaming), importable without torchvision.

    ``import streaming`` runs ``import streaming.vision``, whose datasets
    subclass torchvision's ``VisionDataset``, so the import fails where
    torchvision is absent, and where it cannot load: the only torchvision
    wheels reachable here are CUDA builds, which fail against the CPU torch
    (``operator torchvision::nms does not exist``). The MDS reader and
    ``StreamingDataset`` never touch ``streaming.vision``: before the first
    import of ``streaming``, an empty module stands in for each subpackage
    that needs torchvision (:data:`STREAMING_TORCHVISION_PACKAGES`), so
    ``import streaming`` gives the real library, without its image datasets.
    Skips the calling test when mosaicml-streaming is not installed.
    """
    if "streaming" not in sys.modules:
        try:
            found = importlib.util.find_spec("streaming") is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            pytest.skip("mosaicml-streaming is not installed (make venv with EXTRAS=dev)")
        for name in STREAMING_TORCHVISION_PACKAGES:
            if name not in sys.modules:
                stub = types.ModuleType(name, "Stands in for a subpackage that needs torchvision.")
                stub.__path__ = []
                sys.modules[name] = stub
    return importlib.import_module("streaming")


def deltalake_in_child() -> None:
    """Skip the calling test when deltalake is absent; its reads then go through :func:`read_delta`.

    delta-rs can abort its process at interpreter exit after its work is
    done (thresher talks to it in a child process for that reason,
    :mod:`thresher.export.delta`); the tests never import it in the test
    session either, so that a test run cannot end with that abort.
    """
    if importlib.util.find_spec("deltalake") is None:
        pytest.skip("deltalake is not installed (delta extra)")


_READ_DELTA = """
import json, sys
import pyarrow as pa
from deltalake import DeltaTable
uri, version, options, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
table = DeltaTable(uri, version=version, storage_options=options).to_pyarrow_table()
with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
    writer.write_table(table)
"""


def read_delta(
    uri: str, out: Any, version: int | None = None, storage_options: dict[str, str] | None = None
) -> Any:
    """The rows of a Delta table's ``version`` (latest: None), read by deltalake in a child process.

    ``out`` is a scratch file path for the rows (Arrow IPC).
    """
    import json
    import subprocess

    import pyarrow as pa

    deltalake_in_child()
    subprocess.run(
        [
            sys.executable,
            "-c",
            _READ_DELTA,
            uri,
            json.dumps(version),
            json.dumps(storage_options),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    with pa.memory_map(str(out)) as source:
        return pa.ipc.open_file(source).read_all()
