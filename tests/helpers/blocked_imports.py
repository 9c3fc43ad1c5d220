"""Run Python as on a machine that lacks some packages: their imports fail.

A ``sitecustomize`` module put first on ``PYTHONPATH`` installs a finder
that refuses the named top-level packages with ``ModuleNotFoundError``,
in the process and in every Python process it starts (a ``pytest`` run
started by the GPU check, say), whether or not they are installed here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Packages thresher depends on that the GPU machine does not have.
NOT_ON_GPU_MACHINE = ("pyspark", "prefect", "faiss", "datasketch", "fasttext", "moto")

_SITECUSTOMIZE = '''\
"""Refuse the packages named in THRESHER_BLOCKED_IMPORTS (written by a thresher test)."""

import os
import sys
from importlib.abc import MetaPathFinder


class _Refuse(MetaPathFinder):
    def __init__(self, names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


_names = frozenset(filter(None, os.environ.get("THRESHER_BLOCKED_IMPORTS", "").split(",")))
if _names:
    sys.meta_path.insert(0, _Refuse(_names))
'''


def blocking_env(directory: Path, blocked: Sequence[str] = NOT_ON_GPU_MACHINE) -> dict[str, str]:
    """Environment for a subprocess in which ``blocked`` packages cannot be imported.

    Writes the ``sitecustomize`` module into ``directory``; the repository
    root follows it on ``PYTHONPATH``, so ``thresher``, ``tests`` and
    ``benchmarks`` import from this checkout.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
    env = dict(os.environ)
    env["THRESHER_BLOCKED_IMPORTS"] = ",".join(blocked)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(directory), str(ROOT), env.get("PYTHONPATH")])
    )
    return env
