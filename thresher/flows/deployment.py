"""The steps ``prefect.yaml`` runs around thresher's deployments: check THRESHER_HOME, enter it.

A deployment's flow runs start in ``THRESHER_HOME``, the directory that
holds the ``thresher`` package (a checkout, or ``/opt/thresher`` in the
image). ``prefect deploy`` substitutes ``{{ $THRESHER_HOME }}`` from its
environment and keeps the placeholder as it is when the variable is
unset; the flow run substitutes what is left from its own environment.
Unchecked, a variable unset in both places surfaces at run time as a
``FileNotFoundError`` on a temporary path that does not name it. These
steps name it: :func:`check_home` (a build step, run by ``prefect
deploy``) refuses to deploy, :func:`enter_home` (the pull step, run at
the start of every flow run) refuses to run.
"""

from __future__ import annotations

import os
from pathlib import Path

from thresher.errors import ConfigError

#: The environment variable naming the directory flow runs start in.
HOME_VARIABLE = "THRESHER_HOME"


def _unset(directory: str) -> bool:
    """True when the template was not filled: the variable was unset wherever it was read."""
    return not directory.strip() or "{{" in directory


def check_home(directory: str) -> dict[str, str]:
    """Build step: refuse to deploy unless ``directory`` (``{{ $THRESHER_HOME }}``) is an absolute path.

    The directory need not exist here: it is where the workers' machines
    (or images) hold thresher, which may not be this machine.
    """
    if _unset(directory):
        raise ConfigError(
            f"{HOME_VARIABLE} is not set: flow runs of these deployments start in "
            f"${HOME_VARIABLE}, the directory holding the thresher package on the workers' "
            f"machines; deploy with it set, e.g. `{HOME_VARIABLE}=$PWD prefect deploy ...` "
            "from a checkout"
        )
    if not Path(directory).is_absolute():
        raise ConfigError(
            f"{HOME_VARIABLE}={directory!r} is not an absolute path; flow runs start in a "
            f"temporary directory, so set it to an absolute path, e.g. {HOME_VARIABLE}=$PWD"
        )
    return {"thresher_home": directory}


def enter_home(directory: str) -> dict[str, str]:
    """Pull step: make ``directory`` (``{{ $THRESHER_HOME }}``) the flow run's working directory.

    Refuses, naming the variable, a placeholder left unfilled and a
    directory that does not hold the ``thresher`` package on this machine.
    """
    if _unset(directory):
        raise ConfigError(
            f"{HOME_VARIABLE} is not set: it was unset when this deployment was made and is "
            "unset in this flow run's environment; redeploy with it set "
            f"(`{HOME_VARIABLE}=/path/to/thresher prefect deploy ...`) or set it in the "
            "worker's environment"
        )
    home = Path(directory).expanduser()
    if not (home / "thresher").is_dir():
        raise ConfigError(
            f"{HOME_VARIABLE}={directory!r} does not hold the thresher package on this machine "
            f"(no {home / 'thresher'}); set {HOME_VARIABLE} to the checkout or image directory "
            "the workers run thresher from, and redeploy"
        )
    os.chdir(home)
    return {"directory": str(home.resolve())}
