"""Loading model files without ever unpickling them: every safetensors read goes through here.

Checkpoints are safetensors files (a JSON header and raw tensor bytes),
metadata is JSON. The safetensors parser only reads a header and copies
bytes, so a file that is anything else (a pickle, a truncated download, a
renamed ``torch.save`` archive) fails to parse and is refused with an error
that names it; none of its bytes is ever run as code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from thresher.errors import ScorerError, ThresherError

T = TypeVar("T")


def load_safetensors(
    path: Path | str,
    *,
    framework: Literal["numpy", "pt"] = "numpy",
    error: type[ThresherError] = ScorerError,
) -> dict[str, Any]:
    """Read a safetensors file; refuse anything else.

    Parameters
    ----------
    path : Path or str
        The file.
    framework : {"numpy", "pt"}
        ``"numpy"``: numpy arrays; ``"pt"``: torch tensors on the CPU.
    error : type of ThresherError
        What is raised (a scorer's :class:`~thresher.errors.ScorerError`,
        the reference LM's :class:`~thresher.errors.LMError`).

    Raises
    ------
    ThresherError
        ``error``: the file is missing or is not a valid safetensors file.
    """

    def read(name: str) -> dict[str, Any]:
        if framework == "pt":
            from safetensors.torch import load_file as load_torch

            return dict(load_torch(name, device="cpu"))
        from safetensors.numpy import load_file as load_numpy

        return dict(load_numpy(name))

    return _parse(Path(path), read, error)


def safetensors_metadata(
    path: Path | str, *, error: type[ThresherError] = ScorerError
) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (empty when it has none)."""

    def read(name: str) -> dict[str, str]:
        from safetensors import safe_open

        with safe_open(name, framework="numpy") as handle:
            return dict(handle.metadata() or {})

    return _parse(Path(path), read, error)


def _parse(path: Path, read: Callable[[str], T], error: type[ThresherError]) -> T:
    from safetensors import SafetensorError

    if not path.is_file():
        raise error(f"checkpoint {path} does not exist")
    try:
        return read(str(path))
    except (SafetensorError, ValueError, OSError) as exc:
        raise error(
            f"{path} is not a valid safetensors file ({exc}); thresher loads checkpoints "
            "only as safetensors and never unpickles them"
        ) from None
