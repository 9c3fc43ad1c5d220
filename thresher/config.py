"""The run configuration: one YAML file, validated by pydantic.

Every model forbids unknown keys, so a typo is reported with the field's
path instead of being ignored. Relative paths are resolved against the
directory of the config file, so a config runs the same from any working
directory (a scheduled Prefect deployment included).
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from thresher.errors import ConfigError

Budget = int | float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(_Strict):
    """Where the corpus shards are: files, directories or glob patterns."""

    paths: list[str] = Field(min_length=1)
    format: Literal["auto", "parquet", "jsonl"] = "auto"


class SchemaConfig(_Strict):
    """Which input columns play which role.

    ``id: null`` (or an id column missing from a shard) derives a stable id
    from the shard path and row number. ``passthrough`` lists the other
    columns copied to the pruned dataset (``"all"`` keeps every column).
    """

    id: str | None = "id"
    text: str = "text"
    label: str | None = None
    passthrough: list[str] | Literal["all"] = "all"


class ScorerConfig(_Strict):
    """One scorer by registry name; ``column`` names its output (default: the name).

    Column names are identifiers (letters, digits, ``_``): they name files
    under the run directory (``models/<column>/``), so they may not hold a path.
    """

    name: str
    column: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def output_column(self) -> str:
        return self.column or self.name


class SelectorConfig(_Strict):
    """A selector by registry name, its parameters and the budget it must meet.

    ``budget`` is a count (int >= 0) or a fraction (float in (0, 1]) of the
    rows that reach this step. ``null`` is allowed only for selectors that
    define their own size, such as ``threshold``. ``embeddings`` names the
    score column holding vectors, for selectors that need them.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    budget: Budget | None = None
    embeddings: str = "embedding"

    @field_validator("budget")
    @classmethod
    def _check_budget(cls, value: Budget | None) -> Budget | None:
        if value is None:
            return value
        if isinstance(value, bool):
            raise ValueError("budget must be a count or a fraction, not a boolean")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"a count budget must be >= 0, got {value}")
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(f"a fraction budget must be in (0, 1], got {value}")
        return value


class SparkConfig(_Strict):
    """Spark session settings.

    ``master`` is ``local[N]`` or a cluster URL (``spark://``, ``k8s://``).
    Left out, it is the master given to ``spark-submit`` when thresher runs
    under it (``infra/spark/thresher-submit``), else ``local[*]``.
    """

    master: str | None = None
    app_name: str = "thresher"
    conf: dict[str, str] = Field(default_factory=dict)


class EngineConfig(_Strict):
    """Which engine runs the scoring and materialisation stages."""

    kind: Literal["spark", "local"] = "spark"
    workers: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    spark: SparkConfig = Field(default_factory=SparkConfig)


class RunConfig(_Strict):
    """A whole curation run."""

    run_dir: str
    seed: int = 0
    input: InputConfig
    schema_: SchemaConfig = Field(default_factory=SchemaConfig, alias="schema")
    scorers: list[ScorerConfig] = Field(default_factory=list)
    filters: list[SelectorConfig] = Field(default_factory=list)
    selector: SelectorConfig = Field(
        default_factory=lambda: SelectorConfig(name="random", budget=1.0)
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    base_dir: str = Field(default=".", exclude=True)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check_steps(self) -> RunConfig:
        from thresher.scorers import SCORERS, make_scorer
        from thresher.selectors import SELECTORS, make_selector

        columns: list[str] = []
        for i, scorer in enumerate(self.scorers):
            if scorer.name not in SCORERS:
                raise ValueError(
                    f"scorers[{i}].name: unknown scorer {scorer.name!r}; "
                    f"available: {', '.join(sorted(SCORERS))}"
                )
            try:
                instance = make_scorer(scorer.name, scorer.params)
            except ValueError as error:
                raise ValueError(f"scorers[{i}].params: {error}") from None
            columns += [field.name for field in instance.output_fields(scorer.output_column)]
        reserved = sorted(set(columns) & {"id", "label", "thresher_shard", "thresher_row"})
        if reserved:
            raise ValueError(f"scorers: output column(s) {reserved} are reserved; set `column`")
        duplicated = sorted({c for c in columns if columns.count(c) > 1})
        if duplicated:
            raise ValueError(
                f"scorers: output column(s) {duplicated} used twice; give each scorer its own `column`"
            )
        available = set(columns) | ({"label"} if self.schema_.label else set())
        steps = [(f"filters[{i}]", f) for i, f in enumerate(self.filters)]
        steps.append(("selector", self.selector))
        for where, step in steps:
            if step.name not in SELECTORS:
                raise ValueError(
                    f"{where}.name: unknown selector {step.name!r}; "
                    f"available: {', '.join(sorted(SELECTORS))}"
                )
            try:
                selector = make_selector(step.name, step.params)
            except ValueError as error:
                raise ValueError(f"{where}.params: {error}") from None
            if selector.requires_budget and step.budget is None:
                raise ValueError(
                    f"{where}.budget: {step.name!r} needs a budget (count or fraction)"
                )
            if not selector.requires_budget and step.budget is not None:
                raise ValueError(
                    f"{where}.budget: {step.name!r} defines its own size; remove budget"
                )
            needed = list(selector.score_columns())
            if selector.requires_embeddings:
                needed.append(step.embeddings)
            for column in needed:
                if column not in available:
                    raise ValueError(
                        f"{where}: score column {column!r} is not produced by any scorer; "
                        f"available: {sorted(available) or 'none (configure scorers)'}"
                    )
        return self

    # -- derived values -------------------------------------------------------
    def resolve(self, path: str) -> Path:
        """Resolve a config path against the config file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    @property
    def run_path(self) -> Path:
        return self.resolve(self.run_dir)

    def config_dict(self) -> dict[str, Any]:
        """The configuration as plain data (what the manifest records)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"base_dir"})

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of the configuration (lineage key)."""
        canonical = json.dumps(self.config_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def input_files(self) -> list[Path]:
        """Expand the input patterns to a sorted, de-duplicated list of files.

        Raises ConfigError naming the first pattern that matches nothing.
        """
        files: set[Path] = set()
        for pattern in self.input.paths:
            resolved = self.resolve(pattern)
            if resolved.is_dir():
                matched = [p for p in resolved.rglob("*") if p.is_file() and _is_shard(p)]
            else:
                matched = [Path(p) for p in glob.glob(str(resolved), recursive=True)]
                matched = [p for p in matched if p.is_file()]
            if not matched:
                raise ConfigError(
                    f"input.paths: {pattern!r} matches no file (resolved to {resolved})"
                )
            files.update(p.resolve() for p in matched)
        return sorted(files)


_SHARD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")


def _is_shard(path: Path) -> bool:
    return path.name.endswith(_SHARD_SUFFIXES) and not path.name.startswith((".", "_"))


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "invalid run configuration:\n" + "\n".join(lines)


def parse_config(data: dict[str, Any], base_dir: str | Path = ".") -> RunConfig:
    """Validate a config mapping; raise ConfigError naming every bad field."""
    if not isinstance(data, dict):
        raise ConfigError("invalid run configuration: the top level must be a mapping")
    try:
        return RunConfig.model_validate({**data, "base_dir": str(Path(base_dir).resolve())})
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run configuration."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(data or {}, base_dir=path.parent)
