"""Loading model files without ever unpickling them.

Checkpoints are safetensors files (a JSON header and raw tensor bytes),
metadata is JSON. The safetensors parser only reads a header and copies
bytes, so a file that is anything else (a pickle, a truncated download, a
renamed ``torch.save`` archive) fails to parse and is refused with an error
that names it; none of its bytes is ever run as code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from thresher.errors import ScorerError


def load_safetensors(path: Path | str) -> dict[str, NDArray[np.generic]]:
    """Read a safetensors file into numpy arrays; refuse anything else.

    Raises
    ------
    ScorerError
        The file is missing or is not a valid safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise ScorerError(f"checkpoint {path} does not exist")
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, ValueError, OSError) as error:
        raise ScorerError(
            f"{path} is not a valid safetensors file ({error}); thresher loads checkpoints "
            "only as safetensors and never unpickles them"
        ) from None
