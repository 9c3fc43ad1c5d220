"""Run every benchmark module in turn: ``python -m benchmarks [name ...] [options]``.

Names come first; the options after them (``--quick``...) are given to
every module chosen.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def benchmark_names() -> list[str]:
    """The benchmark modules of this package (``_``-prefixed modules are shared code)."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_")
    )


def split_arguments(arguments: list[str], names: list[str]) -> tuple[list[str], list[str]]:
    """The benchmarks named before the first option (all when none is), and the options."""
    wanted: list[str] = []
    for argument in arguments:
        if argument.startswith("-"):
            break
        wanted.append(argument)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(names)}")
    return wanted or names, arguments[len(wanted) :]


def main() -> None:
    wanted, options = split_arguments(sys.argv[1:], benchmark_names())
    for name in wanted:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n=== benchmarks.{name} ===", flush=True)
        module.main(options)


if __name__ == "__main__":
    main()
