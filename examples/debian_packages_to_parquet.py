"""Convert the Debian package index into a labelled text set: each package's description, labelled by its section.

The package index is on every Debian machine after ``apt-get update``;
``apt-cache dumpavail`` prints it (one stanza per package: ``Package``,
``Section``, ``Description``...). Nothing else is downloaded. The text of a
record is the package's one-line description (its synopsis, e.g. "Python 3
bindings for the GObject library"); the label is its section (``libs``,
``python``, ``games``...; an archive area prefix such as ``contrib/`` is
removed). Package names and tags are left out: they often spell the section
out (``python3-*``, ``role::devel-lib``).

Output (``--out``, default ``examples/debian_packages``)::

    part-00.parquet ... part-NN.parquet    one row per package, ``--shard-rows`` per shard

Columns: ``id`` (the package name), ``text`` (the description) and
``section`` (the label). Sections with fewer than ``--min-rows`` packages
are dropped. Rows are in package-name order, so the same index gives the
same files. Run it from the repository root::

    apt-get update
    python examples/debian_packages_to_parquet.py
    thresher eval examples/eval-debian.yaml

References
----------
The Debian Policy Manual, section 5.6.13 ("Description") and 2.4
("Sections").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def stanzas(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """The fields of each stanza of a Debian control file (continuation lines joined)."""
    fields: dict[str, str] = {}
    name: str | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            if fields:
                yield fields
            fields, name = {}, None
        elif line[0] in " \t":
            if name is not None:
                fields[name] += "\n" + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    if fields:
        yield fields


def records(lines: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``package -> (description, section)``, the first stanza of each package kept."""
    out: dict[str, tuple[str, str]] = {}
    for fields in stanzas(lines):
        package = fields.get("Package")
        description = fields.get("Description", "").split("\n", 1)[0].strip()
        section = fields.get("Section", "").rsplit("/", 1)[-1].strip()
        if package and description and section and package not in out:
            out[package] = (description, section)
    return out


def to_table(found: dict[str, tuple[str, str]], min_rows: int) -> pa.Table:
    """One row per package in name order; sections with fewer than ``min_rows`` rows dropped."""
    sizes = Counter(section for _, section in found.values())
    names = sorted(p for p, (_, section) in found.items() if sizes[section] >= min_rows)
    return pa.table(
        {
            "id": names,
            "text": [found[p][0] for p in names],
            "section": [found[p][1] for p in names],
        }
    )


def dumpavail() -> list[str]:
    """The lines of ``apt-cache dumpavail`` (empty until ``apt-get update`` has run)."""
    result = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def convert(lines: Iterable[str], out: Path, shard_rows: int = 10_000, min_rows: int = 20) -> int:
    """Write the shards under ``out``; return the number of rows."""
    table = to_table(records(lines), min_rows)
    if table.num_rows == 0:
        raise ValueError("no package with a description and a section (run apt-get update)")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("part-*.parquet"):
        stale.unlink()
    for number, start in enumerate(range(0, table.num_rows, shard_rows)):
        pq.write_table(table.slice(start, shard_rows), out / f"part-{number:02d}.parquet")
    return table.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "debian_packages",
        help="output directory",
    )
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--min-rows", type=int, default=20, help="smallest section kept")
    args = parser.parse_args(argv)
    try:
        rows = convert(dumpavail(), args.out, args.shard_rows, args.min_rows)
    except (OSError, subprocess.CalledProcessError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {rows:,} package descriptions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
