"""The run configuration: one YAML file, validated by pydantic.

Every model forbids unknown keys, so a typo is reported with the field's
path instead of being ignored. Relative paths are resolved against the
directory of the config file, so a config runs the same from any working
directory (a scheduled Prefect deployment included).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pyarrow as pa
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from thresher.budget import Budget, SumBudget, budget_json, parse_budget
from thresher.engines.spark_options import SparkConfig as SparkConfig  # where it used to be
from thresher.errors import ConfigError, StorageError
from thresher.io.formats import check_format_name
from thresher.io.fs import FileEntry, Location, StorageOptions
from thresher.io.listing import list_files
from thresher.io.options import check_storage_options
from thresher.io.readers import ReadLimits
from thresher.io.schema import IMPORTANCE_WEIGHT
from thresher.io.schema import TOKEN_COLUMN as TOKEN_COLUMN  # re-exported for the stages
from thresher.keys import json_digest
from thresher.redact import redact_config

_M = TypeVar("_M", bound=BaseModel)


#: ``auto`` (told by each file's name) or a registered input format (:mod:`thresher.io.formats`).
InputFormatName = Annotated[str, AfterValidator(check_format_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(_Strict):
    """Where the corpus shards are: files, directories or glob patterns, and what one may cost.

    A task holds a batch of a shard, never the whole file: ``batch_bytes``
    bounds the decoded bytes of one batch; a JSON line or table row over
    ``max_record_bytes`` is quarantined as ``record_too_large`` without
    being read whole; a shard holding more than ``max_shard_bytes`` once
    decompressed, or more than ``max_rows`` records, is refused naming the
    file (a decompression bomb, or a file to split). ``null``: no limit.

    ``max_quarantined_fraction`` stops a run after ingest, before anything
    is published, when more than this share of the input records was
    quarantined or more than this share of the input files was skipped as
    unreadable (``on_unreadable: skip``); ``1.0`` never stops.
    """

    paths: list[str] = Field(min_length=1)
    format: InputFormatName = "auto"
    on_unreadable: Literal["fail", "skip"] = "fail"
    batch_bytes: int = Field(default=32 << 20, ge=1 << 10)
    max_record_bytes: int | None = Field(default=64 << 20, ge=1)
    max_shard_bytes: int | None = Field(default=64 << 30, ge=1)
    max_rows: int | None = Field(default=None, ge=1)
    #: The most a run may lose before it stops unpublished: the share of input records
    #: quarantined, and the share of input files skipped as unreadable (each checked alone).
    max_quarantined_fraction: float = Field(default=0.5, ge=0.0, le=1.0)

    def read_limits(self) -> ReadLimits:
        """The limits every reader of this corpus's shards applies."""
        return ReadLimits(
            max_record_bytes=self.max_record_bytes,
            max_shard_bytes=self.max_shard_bytes,
            max_rows=self.max_rows,
            batch_bytes=self.batch_bytes,
        )


class SchemaConfig(_Strict):
    """Which input columns play which role.

    ``id: null`` (or an id column missing from a shard) derives a stable id
    from the shard path and row number. A role column that no input file has
    is refused before any work (:mod:`thresher.preflight`), except the
    default ``id``: a corpus without ids gets derived ones. ``passthrough``
    lists the other columns copied to the pruned dataset (``"all"`` keeps
    every column).
    ``features`` names a column holding a list of numbers per record (image
    pixels, precomputed embeddings); ``text`` may then be null, for data that
    is not text. At least one of ``text`` and ``features`` is required.
    ``max_text_bytes`` quarantines longer texts (UTF-8 bytes) as
    ``text_too_long``; ``null`` accepts any length. With ``passthrough:
    all``, a shard with more than ``max_passthrough_columns`` other columns
    (JSON lines with free-form keys) is refused naming the file: list the
    columns to keep instead.

    Ingest reads it as a :class:`thresher.io.schema.Roles`.
    """

    id: str | None = "id"
    text: str | None = "text"
    label: str | None = None
    features: str | None = None
    passthrough: list[str] | Literal["all"] = "all"
    max_text_bytes: int | None = Field(default=8 * 1024 * 1024, ge=1)
    max_passthrough_columns: int | None = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _check_content(self) -> SchemaConfig:
        if self.text is None and self.features is None:
            raise ValueError(
                "schema: set `text` or `features` (a record needs text or a feature vector)"
            )
        if self.features is not None and self.features in (self.id, self.text, self.label):
            raise ValueError(f"schema.features: column {self.features!r} already has another role")
        return self


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

    def resolved_params(self, resolve: Callable[[str], Location]) -> dict[str, Any]:
        """``params`` with file paths resolved against the config file's directory.

        A parameter is a path when its key is ``path`` or ends in ``_path``,
        ``_file`` or ``_files`` (at any depth, e.g. inside a list of
        classifier specs or of PreSelect's models), so a config runs the
        same from any working directory.
        """
        return _resolve_paths(self.params, resolve)


def _resolve_paths(value: Any, resolve: Callable[[str], Location], is_path: bool = False) -> Any:
    if isinstance(value, dict):
        return {
            key: _resolve_paths(
                item, resolve, key == "path" or key.endswith(("_path", "_file", "_files"))
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_resolve_paths(item, resolve, is_path) for item in value]
    if is_path and isinstance(value, str):
        return resolve(value).uri
    return value


class PartitionConfig(_Strict):
    """Partitioned selection: run a selector per k-means partition of the embeddings.

    ``clusters`` partitions are fitted (k-means, ``iterations``
    Lloyd steps) on a uniform sample of ``sample`` rows; every row goes to
    its nearest centroid (on Spark executors with the Spark engine), the
    budget is split across partitions on the driver, and the selector runs
    on each partition alone. One partition gives the in-memory result.
    """

    clusters: int = Field(ge=1)
    sample: int = Field(default=100_000, ge=1)
    iterations: int = Field(default=20, ge=1)


class SumBudgetConfig(_Strict):
    """A budget on the sum of a column: ``{sum: <column>, total: N}``.

    ``{tokens: N}`` is shorthand for ``{sum: token_count, total: N}`` (the
    ``token_count`` scorer's column). The column must be produced by a
    configured scorer or be in the schema; rows whose value is null, NaN,
    negative or fractional are dropped as ``invalid_score``. Selectors take
    rows in their own order and stop before the first that would make the
    sum exceed ``total`` (:class:`thresher.budget.SumBudget`, whose rules
    this form follows).
    """

    sum: str = Field(min_length=1)
    total: int = Field(gt=0)

    def budget(self) -> SumBudget:
        """The selector-side budget (:class:`~thresher.budget.SumBudget`)."""
        return SumBudget(self.sum, self.total)


class MixtureConfig(_Strict):
    """Target shares of groups under the step's budget (:mod:`thresher.stages.mixture`).

    ``by`` names the column whose values are the groups: the label (by its
    input name or ``label``), a passthrough input column or a score column,
    holding strings or integers. ``shares`` maps each group (its value
    written as text) to its share of the budget: every share ``>= 0``, their
    sum 1 (within 1e-9). ``max_repeat`` is how many epochs a group too small
    for its target may be used (1: no repeats; the group is capped and its
    shortfall reported).
    """

    by: str = Field(min_length=1)
    shares: dict[str, float]
    max_repeat: int = Field(default=1, ge=1)

    @field_validator("shares", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        """Integer group values are written as YAML integers; a group is its text form."""
        if not isinstance(value, dict):
            return value
        for key in value:
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise ValueError(f"a group must be a string or an integer, got {key!r}")
        return {str(key): share for key, share in value.items()}

    @field_validator("shares")
    @classmethod
    def _check_shares(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("name at least one group and its share")
        bad = {g: s for g, s in value.items() if not math.isfinite(s) or s < 0}
        if bad:
            raise ValueError(f"every share must be a finite number >= 0, got {bad}")
        total = math.fsum(value.values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"shares must sum to 1, got {total!r}")
        return value


class SelectorConfig(_Strict):
    """A selector by registry name, its parameters and the budget it must meet.

    ``budget`` is a count (int >= 0) or a fraction (float in (0, 1]) of the
    rows that reach this step, or a sum of a column: ``{tokens: N}`` (the
    ``token_count`` column) or ``{sum: <column>, total: N}``
    (:class:`SumBudgetConfig`); :mod:`thresher.budget` holds the rules.
    ``null`` is allowed only for selectors that
    define their own size, such as ``threshold``. ``embeddings`` names the
    score column holding vectors, for selectors that need them.
    ``partitions`` runs the selector per k-means partition (corpora larger
    than the driver's memory; ``ccs``, ``dpp``, ``kmeans_sensitivity``,
    ``prototypes``, ``semdedup``, ``semdedup_rank``). ``mixture`` (the
    selector only) splits the budget across groups by target shares
    (:class:`MixtureConfig`) and runs the selector within each group.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    budget: int | float | SumBudgetConfig | None = None
    embeddings: str = "embedding"
    partitions: PartitionConfig | None = None
    #: Left out of the recorded config when absent: a config without it hashes as before.
    mixture: MixtureConfig | None = Field(default=None, exclude_if=lambda v: v is None)

    @field_validator("budget", mode="before")
    @classmethod
    def _check_budget(cls, value: Any) -> Any:
        if isinstance(value, SumBudgetConfig):
            return value
        budget = parse_budget(value)
        if isinstance(budget, SumBudget):
            return SumBudgetConfig(sum=budget.column, total=budget.total)
        return budget

    def selector_budget(self) -> Budget | None:
        """The budget as selectors take it: an int, a float, a SumBudget or None."""
        if isinstance(self.budget, SumBudgetConfig):
            return self.budget.budget()
        return self.budget

    def budget_json(self) -> Any:
        """The budget as JSON data: a number, ``{"sum": column, "total": N}`` or None."""
        return budget_json(self.selector_budget())


class EngineConfig(_Strict):
    """Which engine runs the stages, and how.

    ``kind`` names a registered engine (:mod:`thresher.engines.registry`).
    ``driver_max_rows`` bounds what any stage may gather on the driver: a
    selector that needs every vector in one place (``dpp``, ``kmeans_sensitivity``...
    without ``partitions``) is refused before scoring on a corpus larger
    than this; every other stage keeps nothing per row on the driver.

    An engine with options of its own has a section named after it
    (``spark: {master, app_name, conf}``), validated by the options model
    its registry row names (:class:`thresher.engines.spark_options.SparkConfig`);
    every such section is present, with its defaults when left out.
    """

    # The engines' sections are the extra keys, each checked by its engine's options model.
    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str = "spark"
    workers: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    driver_max_rows: int = Field(default=2_000_000, ge=1)

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        from thresher.engines.registry import engine_entry

        engine_entry(value)  # ValueError naming the engines available
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _check_sections(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> EngineConfig:
        """Validate the fields, then each engine's section by its options model; all errors at once."""
        if not isinstance(data, dict):
            validated: EngineConfig = handler(data)
            return validated
        fields = {key: value for key, value in data.items() if key in cls.model_fields}
        sections, errors = _engine_sections(
            {key: value for key, value in data.items() if key not in cls.model_fields}
        )
        try:
            validated = handler(fields)
        except ValidationError as error:
            errors = [_as_line_error(item) for item in error.errors()] + errors
            raise ValidationError.from_exception_data(cls.__name__, errors) from None
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        assert validated.__pydantic_extra__ is not None
        validated.__pydantic_extra__.update(sections)
        return validated

    def options(self, kind: str | None = None) -> Any:
        """The options section of engine ``kind`` (default: this config's), or None if it has none."""
        extra = self.__pydantic_extra__ or {}
        return extra.get(kind or self.kind)


def _engine_sections(given: dict[str, Any]) -> tuple[dict[str, BaseModel], list[Any]]:
    """Every registered engine's options section (given or default), and the errors found.

    A key that names no engine with options is an error, as an unknown key
    of any section is.
    """
    from thresher.engines.registry import ENGINES, options_model

    sections: dict[str, BaseModel] = {}
    errors: list[Any] = []
    for name, value in given.items():
        model = options_model(name) if name in ENGINES else None
        if model is None:
            errors.append({"type": "extra_forbidden", "loc": (name,), "input": value})
            continue
        try:
            sections[name] = model.model_validate(value)
        except ValidationError as error:
            errors += [_as_line_error(item, (name,)) for item in error.errors()]
    for name in ENGINES:
        if name not in sections and name not in given:
            model = options_model(name)
            if model is not None:
                sections[name] = model()
    return sections, errors


def _as_line_error(item: Any, prefix: tuple[str, ...] = ()) -> Any:
    """A reported error (``ValidationError.errors()``) to raise again under ``prefix``, as worded."""
    kind = PydanticCustomError(item["type"], item["msg"].replace("{", "{{").replace("}", "}}"))
    return {"type": kind, "loc": (*prefix, *item["loc"]), "input": item.get("input")}


class KeeperConfig(_Strict):
    """One key of the dedup keeper order: a numeric score column, highest first by default."""

    score: str
    order: Literal["desc", "asc"] = "desc"


class DedupConfig(_Strict):
    """Near-duplicate removal from the columns of a ``minhash`` scorer (``thresher.dedup``).

    ``signature`` names that scorer's column. Documents whose estimated
    Jaccard similarity reaches ``threshold`` are linked. ``clusters``:
    ``keeper`` (default) drops a document only when it is linked to its own
    cluster's keeper (a verified link with ``verify``), never through a
    chain of similar documents;
    ``components`` drops every member of a connected component of links but
    its keeper (the most aggressive removal). ``warn_cluster_share``: the
    summary and the report warn when one cluster holds more than this share
    of the documents (templated text). ``bands``/``rows`` ``auto`` picks the LSH banding
    with P(candidate | J = threshold) >= ``min_recall``; ``verify`` checks
    each candidate pair's signature-estimated Jaccard before linking it;
    ``exact`` links byte-identical texts first (content hash). Each cluster
    keeps its first document in ``keeper`` order (score columns; default:
    the longest text), then smallest id; the others are dropped as
    ``duplicate``.
    """

    signature: str = "minhash"
    threshold: float = Field(default=0.8, gt=0.0, lt=1.0)
    bands: int | Literal["auto"] = "auto"
    rows: int | Literal["auto"] = "auto"
    min_recall: float = Field(default=0.95, ge=0.0, le=1.0)
    verify: bool = True
    exact: bool = True
    keeper: list[KeeperConfig] | None = None
    clusters: Literal["keeper", "components"] = "keeper"
    warn_cluster_share: float = Field(default=0.01, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_banding(self) -> DedupConfig:
        if (self.bands == "auto") != (self.rows == "auto"):
            raise ValueError("dedup: set both `bands` and `rows`, or leave both `auto`")
        for name in ("bands", "rows"):
            value = getattr(self, name)
            if value != "auto" and (isinstance(value, bool) or value < 1):
                raise ValueError(
                    f"dedup.{name}: must be a positive integer or 'auto', got {value!r}"
                )
        return self


class EvalSetConfig(_Strict):
    """One evaluation set for decontamination: its files and the field holding each item's text.

    ``paths`` are files, directories or glob patterns in any input format
    thresher reads (relative paths start at the config file's directory);
    ``text`` names the column or JSON field of each item's text.
    """

    paths: list[str] = Field(min_length=1)
    text: str = "text"
    format: InputFormatName = "auto"


class DecontaminateConfig(_Strict):
    """Drop every document sharing a word n-gram with an evaluation set (``thresher.contamination``).

    ``sets`` maps a name (an identifier: it appears in drop details and
    reports) to its files; ``ngram`` is the words per n-gram (13, as in
    GPT-3's Appendix C, Brown et al. 2020; see also Dolma, Soldaini et al.
    2024). Matching documents are dropped as ``contaminated``.
    """

    sets: dict[str, EvalSetConfig] = Field(min_length=1)
    ngram: int = Field(default=13, ge=1, le=64)

    @field_validator("sets")
    @classmethod
    def _check_names(cls, value: dict[str, EvalSetConfig]) -> dict[str, EvalSetConfig]:
        import re

        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
                raise ValueError(
                    f"set name {name!r} must start with a letter or _ and hold only letters, "
                    "digits, _, . and -"
                )
        return value


class RetentionConfig(_Strict):
    """How long a published version stays readable after a later run publishes a new one.

    ``versions`` earlier versions are kept beside the current one (at least
    1: a reader who followed ``CURRENT`` just before it moved can finish),
    and also every earlier version replaced less than ``hours`` ago; older
    ones are deleted when a run publishes.
    """

    versions: int = Field(default=1, ge=1)
    hours: float = Field(default=0.0, ge=0.0)


#: A kind of personal data the published text can be redacted of (:data:`thresher.pii.KINDS`).
RedactKind = Literal["email", "ip", "phone"]


class MaterializeConfig(_Strict):
    """How the published dataset is written: redaction of personal data in its text.

    ``redact`` lists the kinds replaced in the published text by a
    placeholder (:mod:`thresher.pii`): ``email`` by ``<EMAIL>``, ``ip``
    (IPv4 and IPv6) by ``<IP>``, ``phone`` by ``<PHONE>``. Only the
    published text changes: scores, decisions, the drop audit and the
    ingested shards keep the text as it came. Each published row gets a
    struct column named ``column``, one int32 field per listed kind
    (``{email: 2, ip: 0, phone: 1}``: how many of each its text had), and
    the manifest's ``redactions`` section gives the totals. An empty list
    (the default) redacts nothing and adds no column.
    """

    redact: list[RedactKind] = Field(default_factory=list)
    column: str = Field(default="redactions", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("redact")
    @classmethod
    def _check_redact(cls, value: list[str]) -> list[str]:
        from thresher.pii import check_kinds

        check_kinds(value)  # ValueError naming a kind listed twice
        return value


#: A format the training hand-off is written in (:mod:`thresher.export`).
OutputFormat = Literal["parquet", "megatron", "mds", "delta"]
_DEFAULT_FORMATS: tuple[OutputFormat, ...] = ("parquet",)
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
}


def parse_size(value: Any) -> int:
    """Bytes from an int or a text such as ``256MB``, ``1GiB`` or ``5e8`` (ValueError otherwise)."""
    if isinstance(value, bool):
        raise ValueError(f"a size must be a number of bytes or a text like '256MB', got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(value))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(
                f"a size must be a number of bytes or a text like '256MB', got {value!r}"
            )
        try:
            size = int(float(match.group(1)) * _SIZE_UNITS[unit])
        except ValueError:
            raise ValueError(
                f"a size must be a number of bytes or a text like '256MB', got {value!r}"
            ) from None
    if size <= 0:
        raise ValueError(f"a size must be > 0, got {value!r}")
    return size


class OutputConfig(_Strict):
    """The training hand-off: the kept rows shuffled, cut into files, split, in trainer formats.

    Written beside ``data/`` into the new version (``train/`` and, with
    ``validation``, ``validation/``), one directory per format, and
    published with it. Rows are ordered by a seeded 64-bit hash of the id
    (``seed``, default the run's), so the order is the same on every engine
    and core count and stable across re-runs; a row the selector repeats
    (``repeat`` column) appears ``repeat`` times, each copy at its own
    place. ``validation`` holds out that fraction of the documents by
    another hash of the id (all copies of a document in the same split).
    A split is cut into files by ranges of the hash: ``file_rows`` rows per
    file, or ``file_size`` bytes of rows (Arrow bytes, before compression;
    default 256 MiB), so files hold about that much each.

    ``formats``: ``parquet``; ``megatron`` (Megatron-LM ``.bin``/``.idx``:
    token ids with the end-of-document token after each document); ``mds``
    (MosaicML Streaming shards and ``index.json``); ``delta`` (with
    ``parquet``: each split's Parquet files published as the next version of
    the Delta Lake table ``RUN_DIR/delta/<split>``, after the version pointer
    moves; the ``delta`` extra). ``megatron`` tokenizes
    with ``tokenizer_path`` (a local ``tokenizer.json``: Hugging Face's, or
    thresher's BPE) or, without it, the run's ``token_count`` scorer's
    tokenizer; ``eod_token`` names a Hugging Face tokenizer's
    end-of-document token (default: the first of ``<|endoftext|>``,
    ``</s>``, ``<|end_of_text|>``, ``<eos>`` it has).
    """

    formats: list[OutputFormat] = Field(
        default_factory=lambda: list(_DEFAULT_FORMATS), min_length=1
    )
    file_rows: int | None = Field(default=None, gt=0)
    file_size: int | None = None
    validation: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int | None = None
    tokenizer_path: str | None = None
    eod_token: str | None = None

    @field_validator("file_size", mode="before")
    @classmethod
    def _check_size(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)

    @field_validator("formats")
    @classmethod
    def _check_formats(cls, value: list[str]) -> list[str]:
        repeated = sorted({f for f in value if value.count(f) > 1})
        if repeated:
            raise ValueError(f"output.formats: {repeated[0]!r} is listed twice")
        return value

    @model_validator(mode="after")
    def _delta_from_parquet(self) -> OutputConfig:
        if "delta" in self.formats and "parquet" not in self.formats:
            raise ValueError(
                "output.formats: delta publishes the Parquet files of each split; list parquet too"
            )
        return self

    @model_validator(mode="after")
    def _one_size(self) -> OutputConfig:
        if self.file_rows is not None and self.file_size is not None:
            raise ValueError("output: give file_rows or file_size, not both")
        return self


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
    dedup: DedupConfig | None = None
    decontaminate: DecontaminateConfig | None = None
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    #: Left out of the recorded config when absent: a config without it hashes as before.
    materialize: MaterializeConfig | None = Field(default=None, exclude_if=lambda v: v is None)
    #: Left out of the recorded config when absent (see ``materialize``).
    output: OutputConfig | None = Field(default=None, exclude_if=lambda v: v is None)
    base_dir: str = Field(default=".", exclude=True)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _expand_presets(cls, data: Any) -> Any:
        """Preset filters as ``rules`` steps, with their scorers (:mod:`thresher.presets`)."""
        from thresher.presets import expand_presets

        expanded, _, problems = expand_presets(data)
        if problems:
            raise ValueError(problems[0])
        return expanded

    @field_validator("storage_options")
    @classmethod
    def _check_storage(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        check_storage_options(value)
        return value

    @model_validator(mode="after")
    def _check_sections(self) -> RunConfig:
        """The checks across sections (scorers, steps, dedup, decontaminate); the first fails.

        :func:`parse_config` reports every problem at once (:func:`config_problems`).
        """
        problems = section_problems(
            list(self.scorers),
            [(f"filters[{i}]", f) for i, f in enumerate(self.filters)]
            + [("selector", self.selector)],
            self.schema_,
            self.dedup,
            self.decontaminate is not None,
        )
        if problems:
            raise ValueError(problems[0])
        return self

    @model_validator(mode="after")
    def _check_materialize(self) -> RunConfig:
        """Redaction needs text, and its counts column a name no other output column has."""
        if self.materialize is None or not self.materialize.redact:
            return self
        if self.schema_.text is None:
            raise ValueError(
                "materialize.redact: needs document text; set schema.text (this corpus has none)"
            )
        schema = self.schema_
        taken = {schema.id or "id", schema.text, schema.label, schema.features}
        if self.materialize.column in taken | {IMPORTANCE_WEIGHT}:
            raise ValueError(
                f"materialize.column: {self.materialize.column!r} is already an output column; "
                "choose another name"
            )
        return self

    @model_validator(mode="after")
    def _check_output(self) -> RunConfig:
        """Token formats need text and a tokenizer: a path, or the run's ``token_count`` scorer's."""
        if self.output is None or "megatron" not in self.output.formats:
            return self
        if self.schema_.text is None:
            raise ValueError("output.formats: megatron needs document text; set schema.text")
        counted = any(s.name == "token_count" for s in self.scorers)
        if self.output.tokenizer_path is None and not counted:
            raise ValueError(
                "output.formats: megatron needs a tokenizer: set output.tokenizer_path to a "
                "local tokenizer.json, or add a token_count scorer (its tokenizer is used)"
            )
        return self

    # -- derived values -------------------------------------------------------
    @property
    def storage(self) -> StorageOptions:
        """The ``storage_options`` every location of this run is opened with."""
        return StorageOptions.from_mapping(self.storage_options)

    @property
    def base(self) -> Location:
        """The config file's directory (local path or URI): relative paths start there."""
        return Location.of(self.base_dir, self.storage)

    def resolve(self, path: str) -> Location:
        """A config path as a location: URIs as they are, relative paths against :attr:`base`."""
        return Location.of(path, self.storage, base=self.base)

    @property
    def run_path(self) -> Location:
        return self.resolve(self.run_dir)

    @model_serializer(mode="wrap")
    def _serialize(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        """Dumped with its secrets redacted, unless :meth:`config_dict` asks for them.

        Whatever serialises a config without asking (Prefect storing a flow
        run's parameters, a log, an API response) gets the redacted form
        (:func:`thresher.redact.redact_config`); the run itself keeps the values.
        """
        data: dict[str, Any] = handler(self)
        return data if (info.context or {}).get("secrets") else redact_config(data)

    def config_dict(self) -> dict[str, Any]:
        """The configuration as plain data, secrets included (to rebuild or override it).

        What is recorded (manifest, ``_state/config.json``) is
        :meth:`recorded_dict`.
        """
        return self.model_dump(
            mode="json", by_alias=True, exclude={"base_dir"}, context={"secrets": True}
        )

    def recorded_dict(self) -> dict[str, Any]:
        """The configuration as recorded: plain data with every secret redacted."""
        return self.model_dump(mode="json", by_alias=True, exclude={"base_dir"})

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of the recorded configuration (lineage key).

        Secrets do not count: a config without any hashes as it always did.
        """
        return json_digest(self.recorded_dict(), length=64)

    def input_files(self) -> list[FileEntry]:
        """Every input file the patterns match, sorted by URI (:func:`thresher.io.listing.list_files`).

        Raises ConfigError naming the first pattern that matches nothing, and
        StorageError when a store cannot be reached.
        """
        return list_files(self.input.paths, self.base)


def section_problems(
    scorers: Sequence[ScorerConfig | None],
    steps: Sequence[tuple[str, SelectorConfig | None]],
    schema: SchemaConfig | None,
    dedup: DedupConfig | None,
    decontaminate: bool,
) -> list[str]:
    """Every problem across sections, each as ``<field path>: <what is wrong>``.

    A ``None`` stands for a section that failed its own validation (reported
    apart): the checks that need it are left out rather than guessed, and
    so are the checks of score columns when a scorer is unknown or broken.
    """
    columns, problems = _scorer_problems(scorers)
    available = None
    if columns is not None and schema is not None:
        available = set(columns) | ({"label"} if schema.label else set())
    groupable = _groupable_columns(columns, schema)
    for where, step in steps:
        if step is not None:
            problems += _step_problems(where, step, available)
            problems += _mixture_problems(where, step, groupable)
    if dedup is not None:
        problems += _dedup_problems(dedup, scorers, columns is not None)
    if decontaminate and schema is not None and schema.text is None:
        problems.append(
            "decontaminate: needs document text; set schema.text (this corpus has none)"
        )
    return problems


def _scorer_problems(
    scorers: Sequence[ScorerConfig | None],
) -> tuple[list[str] | None, list[str]]:
    """The scorers' output columns (None when some scorer is unusable) and their problems."""
    from thresher.registry import RegistryError
    from thresher.scorers import make_scorer

    columns: list[str] = []
    problems: list[str] = []
    complete = True
    for i, scorer in enumerate(scorers):
        if scorer is None:
            complete = False
            continue
        try:
            instance = make_scorer(scorer.name, scorer.params)
        except RegistryError as error:
            problems.append(f"scorers[{i}].{error.field}: {error}")
            complete = False
            continue
        columns += [field.name for field in instance.output_fields(scorer.output_column)]
    reserved = sorted(set(columns) & {"id", "label", "thresher_shard", "thresher_row"})
    if reserved:
        problems.append(f"scorers: output column(s) {reserved} are reserved; set `column`")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        problems.append(
            f"scorers: output column(s) {duplicated} used twice; give each scorer its own `column`"
        )
    return (columns if complete else None), problems


def _step_problems(where: str, step: SelectorConfig, available: set[str] | None) -> list[str]:
    """The problems of one filter or the selector (``available``: None when unknown)."""
    from thresher.models.dynamic_pruning import DYNAMIC_EL2N
    from thresher.registry import RegistryError
    from thresher.selectors import SELECTORS, make_selector
    from thresher.selectors.partition import Partitionable

    if step.name == DYNAMIC_EL2N:
        return [
            f"{where}.name: {DYNAMIC_EL2N!r} prunes while the eval's downstream model trains; "
            "it is not a curate selector: list it under eval.selectors of a `thresher eval` "
            "configuration"
        ]
    try:
        selector = make_selector(step.name, step.params)
    except RegistryError as error:
        return [f"{where}.{error.field}: {error}"]
    problems = []
    if selector.requires_budget and step.budget is None:
        problems.append(f"{where}.budget: {step.name!r} needs a budget (count or fraction)")
    if not (selector.requires_budget or selector.optional_budget) and step.budget is not None:
        problems.append(f"{where}.budget: {step.name!r} defines its own size; remove budget")
    if selector.defines_repeats and where != "selector":
        problems.append(
            f"{where}: {step.name!r} sets repeat counts, which only the selector (the last "
            "step) passes on to the dataset; make it the selector"
        )
    needed = list(selector.score_columns())
    budgeted = step.budget.sum if isinstance(step.budget, SumBudgetConfig) else None
    if budgeted is not None and available is not None and budgeted not in available:
        problems.append(
            f"{where}.budget.sum: column {budgeted!r} is not produced by any "
            f"configured scorer; available: "
            f"{sorted(available) or 'none (configure scorers, e.g. token_count)'}"
        )
    if selector.requires_embeddings or step.partitions is not None:
        needed.append(step.embeddings)
    if step.partitions is not None and not isinstance(selector, Partitionable):
        supported = sorted(n for n, c in SELECTORS.items() if issubclass(c, Partitionable))
        problems.append(
            f"{where}.partitions: {step.name!r} cannot run per partition; "
            f"supported: {', '.join(supported)}"
        )
    for column in needed:
        if available is not None and column not in available:
            problems.append(
                f"{where}: score column {column!r} is not produced by any scorer; "
                f"available: {sorted(available) or 'none (configure scorers)'}"
            )
    return problems


def _groupable_columns(columns: list[str] | None, schema: SchemaConfig | None) -> set[str] | None:
    """Columns a mixture's ``by`` may name, or None when the input's columns are not known here.

    The score columns, the label (by its input name and as ``label``) and
    the listed passthrough columns; with ``passthrough: all`` (or a broken
    scorer or schema) any column may exist, and the run checks it.
    """
    if columns is None or schema is None or schema.passthrough == "all":
        return None
    label = {schema.label, "label"} if schema.label else set()
    return set(columns) | label | set(schema.passthrough)


def _mixture_problems(where: str, step: SelectorConfig, groupable: set[str] | None) -> list[str]:
    """A mixture is for the selector alone, with a budget, a column, and no repeats of its own."""
    from thresher.registry import RegistryError
    from thresher.selectors import make_selector

    mixture = step.mixture
    if mixture is None:
        return []
    if where != "selector":
        return [
            f"{where}.mixture: only the selector (the last step) mixes groups; "
            "move mixture to the selector"
        ]
    problems = []
    try:
        selector = make_selector(step.name, step.params)
    except RegistryError:
        selector = None  # reported with the step
    if selector is not None and selector.defines_repeats:
        problems.append(
            f"{where}.mixture: {step.name!r} sets its own repeat counts, which a mixture sets "
            "per group; use another selector or remove mixture"
        )
    if step.budget is None:
        problems.append(
            f"{where}.mixture: needs a budget to share (a count, a fraction or {{tokens: N}})"
        )
    if groupable is not None and mixture.by not in groupable:
        problems.append(
            f"{where}.mixture.by: column {mixture.by!r} is not the label, a passthrough column "
            f"or a score column; available: {sorted(groupable) or 'none'}"
        )
    return problems


def _dedup_problems(
    dedup: DedupConfig, scorers: Sequence[ScorerConfig | None], complete: bool
) -> list[str]:
    """``dedup`` needs a ``minhash`` scorer's column and numeric keeper scores."""
    from thresher.scorers import SCORERS, make_scorer

    known = [s for s in scorers if s is not None]
    signature = [s for s in known if s.output_column == dedup.signature]
    if not signature or signature[0].name != "minhash":
        if not complete:
            return []  # the scorer it needs may be the broken one
        return [
            f"dedup.signature: {dedup.signature!r} is not the column of a `minhash` scorer; "
            "add `- name: minhash` to scorers (or set dedup.signature to its column)"
        ]
    try:
        num_perm = make_scorer("minhash", signature[0].params).get_params()["num_perm"]
    except ValueError:
        return []  # reported with the scorer's parameters
    problems = []
    if dedup.bands != "auto" and int(dedup.bands) * int(dedup.rows) > num_perm:
        problems.append(
            f"dedup: {dedup.bands} bands x {dedup.rows} rows need more than the "
            f"{num_perm} values of a signature"
        )
    if not complete:
        return problems
    types = {
        field.name: field.type
        for scorer in known
        if scorer.name in SCORERS
        for field in make_scorer(scorer.name, scorer.params).output_fields(scorer.output_column)
    }
    for i, key in enumerate(dedup.keeper or []):
        if key.score not in types:
            problems.append(
                f"dedup.keeper[{i}].score: {key.score!r} is not produced by any scorer; "
                f"available: {sorted(types)}"
            )
            continue
        kind = types[key.score]
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            problems.append(f"dedup.keeper[{i}].score: {key.score!r} is not numeric ({kind})")
    return problems


def config_problems(data: Any, base_dir: str | Path | Location = ".") -> list[str]:
    """Every mistake of a config mapping, each as ``<field path>: <what is wrong>`` ([] if valid).

    Pydantic reports every bad field but skips the checks across sections
    when one field is bad; those are run here on the sections that are
    valid on their own, so that one pass reports all the mistakes.
    """
    from thresher.presets import expand_presets

    if not isinstance(data, dict):
        return ["the top level must be a mapping"]
    data, steps, presets = expand_presets(data)  # a wrong preset entry's step is None
    fields: list[str] = []
    whole: list[str] = []
    try:
        RunConfig.model_validate({**data, "base_dir": Location.of(base_dir).uri})
        if not presets:
            return []
    except ValidationError as error:
        fields = [_error_line(item) for item in error.errors() if item["loc"]]
        whole = [_error_line(item) for item in error.errors() if not item["loc"]]
    if presets:
        whole = []  # what stands for a wrong preset entry fails too; reported as presets
    named_steps = [
        (f"filters[{i}]", None if s is None else _valid_or_none(SelectorConfig, s))
        for i, s in enumerate(steps)
    ]
    selector = data.get("selector", {"name": "random", "budget": 1.0})
    named_steps.append(("selector", _valid_or_none(SelectorConfig, selector)))
    scorers = data.get("scorers", [])
    dedup = data.get("dedup")
    sections = section_problems(
        [_valid_or_none(ScorerConfig, s) for s in scorers] if isinstance(scorers, list) else [],
        named_steps,
        _valid_or_none(SchemaConfig, data.get("schema", data.get("schema_", {}))),
        None if dedup is None else _valid_or_none(DedupConfig, dedup),
        data.get("decontaminate") is not None,
    )
    return list(dict.fromkeys(fields + presets + (sections or whole)))


def _valid_or_none(model: type[_M], value: Any) -> _M | None:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _error_line(item: Any) -> str:
    where = ".".join(str(part) for part in item["loc"])
    message = item["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def format_validation_error(error: ValidationError, what: str = "run", prefix: str = "") -> str:
    """One line per bad field, named by its path (``prefix`` + dotted location)."""
    lines = [f"{prefix}{_error_line(item)}" for item in error.errors()]
    return format_problems(lines, what)


def format_problems(problems: list[str], what: str = "run") -> str:
    """The message of an invalid configuration: one indented line per problem."""
    return f"invalid {what} configuration:\n" + "\n".join(f"  {line}" for line in problems)


def parse_config(data: dict[str, Any], base_dir: str | Path | Location = ".") -> RunConfig:
    """Validate a config mapping; raise ConfigError naming every bad field."""
    if not isinstance(data, dict):
        raise ConfigError("invalid run configuration: the top level must be a mapping")
    try:
        return RunConfig.model_validate({**data, "base_dir": Location.of(base_dir).uri})
    except ValidationError:
        raise ConfigError(format_problems(config_problems(data, base_dir))) from None


def read_yaml(path: str | Path | Location) -> Any:
    """The content of a YAML config file (``{}`` when empty); ConfigError when unreadable."""
    location = Location.of(path)
    try:
        text = location.read_text()
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"config file not found: {location}") from None
    except StorageError as error:
        raise ConfigError(f"config file {location}: {error}") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{location}: not valid YAML: {error}") from None


def load_config(path: str | Path | Location) -> RunConfig:
    """Read and validate a YAML run configuration (a local path or a URI)."""
    return parse_config(read_yaml(path), base_dir=Location.of(path).parent)
