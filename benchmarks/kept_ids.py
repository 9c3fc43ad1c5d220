"""The kept ids of the example jobs on both engines, as digests: a restructuring must not move one.

Runs ``examples/curate.yaml`` (what ``make demo`` runs), ``examples/curate-text.yaml``
and ``examples/curate-models.yaml`` on the sample corpus (``make demo`` writes it)
with the local engine and with Spark, each into a fresh temporary run
directory, and prints the SHA-256 of each run's sorted kept ids, with
whether the two engines agree. ``benchmarks/curate_1m.py --quick`` prints
the same digest for its job. Record the digests before and after a change
that must not alter what a run keeps, and compare::

    python -m benchmarks.kept_ids                  # every example, both engines
    python -m benchmarks.kept_ids --configs curate # one example
    python -m benchmarks.kept_ids --out before.json

The models example trains its models: about ten minutes per engine on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "curate": ROOT / "examples" / "curate.yaml",
    "curate-text": ROOT / "examples" / "curate-text.yaml",
    "curate-models": ROOT / "examples" / "curate-models.yaml",
}


def digest(config_file: Path, engine: str, work: Path) -> dict[str, Any]:
    """Run one config on one engine in a fresh run directory; the digest of its kept ids."""
    from benchmarks.curate_1m import kept_ids_digest
    from thresher.flows.curate import curate, resolve_config
    from thresher.io import schema as S
    from thresher.stages.materialize import output_names

    config = resolve_config(str(config_file), engine, str(work / f"{config_file.stem}-{engine}"))
    manifest = curate(config, quiet=True)
    id_column = output_names(config.schema_)[S.ID]
    return {
        "kept": manifest["counts"]["kept"],
        "kept_ids_sha256": kept_ids_digest(config.run_path, id_column),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="which examples")
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument("--out", default="", help="also write the digests to this JSON file")
    args = parser.parse_args(argv)
    if not (ROOT / "examples" / "sample_corpus" / "_truth.parquet").is_file():
        from thresher.examples.sample_corpus import write_sample_corpus

        write_sample_corpus(ROOT / "examples" / "sample_corpus")
    found: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="thresher-bench-kept-") as work:
        for name in args.configs.split(","):
            for engine in args.engines.split(","):
                found[f"{name}/{engine}"] = digest(CONFIGS[name], engine, Path(work))
                print(f"{name} {engine}: {found[f'{name}/{engine}']}", flush=True)
    for name in args.configs.split(","):
        digests = {found[f"{name}/{e}"]["kept_ids_sha256"] for e in args.engines.split(",")}
        print(f"{name}: engines {'agree' if len(digests) == 1 else 'DISAGREE'}")
    if args.out:
        Path(args.out).write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
