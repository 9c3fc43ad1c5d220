"""Which files a run reads: its input patterns listed, and its run directory kept apart.

Input paths and evaluation-set paths are listed the same way
(:func:`list_files`): a file stands for itself, a directory or a glob
pattern (``*``, ``?``, ``[...]`` and ``**``, on any store, one listing per
pattern) for the shard files it matches. Every function takes plain values
(patterns and the :class:`~thresher.io.fs.Location` relative patterns start
from, which carries the storage options), so the configuration module
calls them and they never read a configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from thresher.errors import ConfigError
from thresher.io.formats import shard_entries
from thresher.io.fs import FileEntry, Location, expand, has_magic


def list_files(
    patterns: Sequence[str], base: Location, field: str = "input.paths", *, numbered: bool = False
) -> list[FileEntry]:
    """Every file the patterns match, sorted by URI, each once, with its listing fingerprint.

    A relative pattern starts at ``base`` (whose storage options open every
    location). Raises ConfigError naming ``field`` (with the pattern's
    index when ``numbered``) for the first pattern that matches nothing,
    and StorageError when a store cannot be reached.
    """
    found: dict[str, FileEntry] = {}
    for i, pattern in enumerate(patterns):
        location = Location.of(pattern, base=base)
        entries = expand(location)
        if location.info() is None:  # a directory or a glob: shard files only
            entries = shard_entries(entries)
        if not entries:
            where = f"{field}[{i}]" if numbered else field
            raise ConfigError(f"{where}: {pattern!r} matches no file (resolved to {location})")
        found.update((e.location.uri, e) for e in entries)
    return [found[uri] for uri in sorted(found)]


def list_sets(
    sets: Mapping[str, Sequence[str]], base: Location, field: str = "decontaminate.sets"
) -> dict[str, list[FileEntry]]:
    """The files of each named set of patterns (evaluation sets), listed as :func:`list_files`.

    A pattern matching nothing is refused naming ``<field>.<name>.paths[<i>]``.
    """
    return {
        name: list_files(patterns, base, f"{field}.{name}.paths", numbered=True)
        for name, patterns in sets.items()
    }


def check_input_apart(
    run: Location, patterns: Sequence[str], files: Sequence[FileEntry], base: Location
) -> None:
    """Refuse a run directory ``run`` that overlaps the input (``patterns``, listed as ``files``).

    thresher owns everything under the run directory (``--fresh`` deletes
    it, and every output goes there), so an input file inside it could be
    deleted, and a run directory inside an input directory (or under a
    recursive ``**`` pattern) would have its outputs read back as input next
    time. Relative patterns start at ``base``.
    """
    for entry in files:
        if entry.location.is_relative_to(run):
            raise ConfigError(
                f"input.paths: {entry.location} lies inside run_dir {run}; thresher owns its run "
                "directory (--fresh deletes it): move the input or choose another run_dir"
            )
    for pattern in patterns:
        resolved = Location.of(pattern, base=base)
        parts = resolved.uri.split("/")
        static = next((i for i, part in enumerate(parts) if has_magic(part)), len(parts))
        recursive = "**" in parts[static:]
        top = Location("/".join(parts[:static]) or "/", resolved.options)
        is_dir = static == len(parts) and resolved.info() is None
        if (is_dir or recursive) and run.is_relative_to(top):
            raise ConfigError(
                f"run_dir: {run} lies inside the input {pattern!r}; its outputs would be "
                "read back as input: choose a run_dir outside the input"
            )
