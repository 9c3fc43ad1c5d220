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
