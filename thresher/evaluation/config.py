"""The eval configuration: a run configuration plus an ``eval`` section, in one YAML file.

The run part (``run_dir``, ``seed``, ``input``, ``schema``, ``scorers``,
``filters``, ``engine``, ``dedup``) is validated as a
:class:`~thresher.config.RunConfig`; it names the labelled training data and
the scorers whose scores the selectors read. The ``eval`` section names the
held-out test split, the selectors to compare (``random`` is always added),
the pruning rates, the seeds, the label noise, the downstream model and the
hyper-parameter grids searched on a validation split.

``run_dir`` is the eval's directory::

    RUN_DIR/
      splits/       train/ (the selection pool, labels noised), validation.parquet,
                    test.parquet, splits.json
      run/          the scoring run over splits/train (a thresher run directory):
                    scores/, models/, report.html, and eval/ (results, summary, plot)
      _state/       the eval's lock and recorded configuration

A top-level ``selector`` is refused: the selectors compared are listed in
``eval.selectors``, each with ``name``, ``params``, ``embeddings`` and
``partitions`` as a run's ``selector`` step, plus a display ``label`` and a
``search`` grid. One name there is the eval's own, not a run's selector:
``dynamic_el2n``, dynamic pruning while the downstream model trains
(:mod:`thresher.evaluation.dynamic`).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from thresher.config import (
    TOKEN_COLUMN,
    InputConfig,
    InputFormatName,
    PartitionConfig,
    RunConfig,
    SelectorConfig,
    SumBudgetConfig,
    format_validation_error,
    parse_config,
    read_yaml,
)
from thresher.errors import ConfigError
from thresher.keys import json_digest
from thresher.models.classifier import LR_GRID, WEIGHT_DECAY_GRID
from thresher.models.dynamic_pruning import DYNAMIC_EL2N, dynamic_params
from thresher.models.features import FeatureConfig

#: Display label of the reference trained on the whole training pool.
FULL = "full"
RANDOM = "random"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TestSplitConfig(_Strict):
    """The held-out test split: files (``paths``, same schema as the input) or a carved ``fraction``.

    A carved split takes the ``fraction`` of the input rows whose seeded
    hash of the id is smallest: deterministic, independent of shard order,
    and never seen by the scorers, the selectors or the search.
    """

    __test__ = False  # not a pytest class

    paths: list[str] | None = None
    format: InputFormatName = "auto"
    fraction: float | None = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_source(self) -> TestSplitConfig:
        if (self.paths is None) == (self.fraction is None):
            raise ValueError("eval.test: give either `paths` (files) or `fraction` (carved)")
        if self.paths is not None and not self.paths:
            raise ValueError("eval.test.paths: list at least one file or pattern")
        return self

    def input_config(self) -> InputConfig:
        assert self.paths is not None
        return InputConfig(paths=self.paths, format=self.format)


class EvalSelectorConfig(_Strict):
    """One selector to compare: a run's ``selector`` step (no budget) plus a label and a search grid.

    ``search`` maps parameter names to candidate values; every combination
    is tried at each pruning rate on the validation split, and the best
    (highest mean validation accuracy, then the first listed) is used on
    the test split at that rate. ``dedup`` drops the near-duplicates of the
    configuration's ``dedup`` section before this selector (left out: when
    the section is given), so one eval compares a selector with and without
    dedup.
    """

    name: str
    label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.()\-+=, ]+$")
    params: dict[str, Any] = Field(default_factory=dict)
    embeddings: str = "embedding"
    partitions: PartitionConfig | None = None
    search: dict[str, list[Any]] = Field(default_factory=dict)
    dedup: bool | None = None

    @field_validator("search")
    @classmethod
    def _check_search(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, candidates in value.items():
            if not candidates:
                raise ValueError(f"search.{name}: list at least one candidate value")
        return value

    @property
    def display(self) -> str:
        """The name results and plots use: ``label``, else ``name(score)`` or ``name``."""
        if self.label:
            return self.label
        score = self.params.get("score")
        return f"{self.name}({score})" if isinstance(score, str) else self.name

    def grid(self) -> list[dict[str, Any]]:
        """Parameter sets to try: ``params`` updated with each combination of ``search``."""
        if not self.search:
            return [dict(self.params)]
        names = list(self.search)
        return [
            {**self.params, **dict(zip(names, values, strict=True))}
            for values in itertools.product(*(self.search[n] for n in names))
        ]

    def step(self, params: dict[str, Any], budget: int | float | SumBudgetConfig) -> SelectorConfig:
        """The run ``selector`` step for ``params`` and ``budget`` (rows, a fraction, tokens)."""
        return SelectorConfig(
            name=self.name,
            params=params,
            budget=budget,
            embeddings=self.embeddings,
            partitions=self.partitions,
        )


class DistillConfig(_Strict):
    """Knowledge distillation of each subset's model from a teacher trained on the whole pool.

    Each subset's model (the student) minimises ``(1 - alpha) * CE(label) +
    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))`` with
    ``T = temperature`` (:func:`thresher.models.classifier.distillation_loss`);
    the teacher is trained once per eval (:mod:`thresher.evaluation.teacher`).
    The ``full`` reference is not distilled.

    References
    ----------
    Ben-Baruch, Botach, Kviatkovsky, Aggarwal and Medioni, "Distilling the
    Knowledge in Data Pruning", ICML 2025, arXiv:2403.07854.
    """

    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    temperature: float = Field(default=4.0, gt=0.0)

    @field_validator("alpha", "temperature", mode="before")
    @classmethod
    def _not_bool(cls, value: Any, info: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{info.field_name} is a number, got {value!r}")
        return value


class DownstreamConfig(_Strict):
    """The model trained on each subset: an MLP (``hidden > 0``) or a linear softmax classifier.

    Every subset trains for exactly ``steps`` minibatch steps of
    ``batch_size`` rows (the whole subset when smaller), whatever its size,
    so that selectors are compared at equal compute. ``features`` chooses
    the input vectors (:class:`thresher.models.features.FeatureConfig`);
    left out, the ``features`` column when the schema has one, else hashed
    word n-grams of the text. ``weighted`` uses the selection's importance
    weights in the loss (sensitivity sampling defines them; 1 elsewhere).

    ``lr`` and ``weight_decay`` left out (null) are chosen once per eval on
    the validation split: the learning rate from ``lr_grid`` (at the given
    weight decay, else the first of ``weight_decay_grid``), then the weight
    decay from ``weight_decay_grid``, each candidate a model trained on the
    whole pool; ``eval.json`` records the trials and the choice.

    ``distill`` (:class:`DistillConfig`; left out or null: off) trains each
    subset's model against a full-pool teacher's soft predictions as well
    as the labels; the search above is not distilled.
    """

    features: FeatureConfig | None = None
    hidden: int = Field(default=256, ge=0, le=8192)
    steps: int = Field(default=500, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float | None = Field(default=None, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float | None = Field(default=None, ge=0.0)
    lr_grid: list[float] = Field(default_factory=lambda: list(LR_GRID), min_length=1)
    weight_decay_grid: list[float] = Field(
        default_factory=lambda: list(WEIGHT_DECAY_GRID), min_length=1
    )
    schedule: str = Field(default="cosine", pattern=r"^(cosine|constant)$")
    weighted: bool = True
    distill: DistillConfig | None = None

    @field_validator("lr_grid", "weight_decay_grid")
    @classmethod
    def _check_grid(cls, values: list[float], info: Any) -> list[float]:
        low = 0.0 if info.field_name == "weight_decay_grid" else None
        for value in values:
            if isinstance(value, bool) or (low is None and value <= 0) or value < 0:
                raise ValueError(f"{info.field_name}: {value!r} is not a valid candidate")
        if len(set(values)) != len(values):
            raise ValueError(f"{info.field_name}: each candidate once")
        return values

    @property
    def tuned(self) -> bool:
        """True when both the learning rate and the weight decay are set."""
        return self.lr is not None and self.weight_decay is not None


class TargetSetConfig(_Strict):
    """A named target set of the language-model eval: clean text of the domain the model is for.

    Its files are read with thresher's ingest (``text`` names the text
    column, ``id`` the id column: left out, ids are made from the file and
    row); the models' per-token loss on it is reported beside the held-out
    split's. Never scored, selected from or trained on.
    """

    paths: list[str] = Field(min_length=1)
    format: InputFormatName = "auto"
    text: str = "text"
    id: str | None = None

    def input_config(self) -> InputConfig:
        return InputConfig(paths=self.paths, format=self.format)


#: Learning rates tried for the language models unless ``eval.lm.lr`` is given.
LM_LR_GRID = (1e-3, 3e-3, 1e-2)
#: Warm-up fractions tried unless ``eval.lm.warmup`` is given (the first during the lr search).
LM_WARMUP_GRID = (0.05, 0.2)


class LMEvalConfig(_Strict):
    """The language model trained on each subset (``eval.task: language_model``).

    A decoder-only transformer (:mod:`thresher.models._transformer`) of
    ``d_model``/``n_layers``/``n_heads``/``context_length``, trained from
    scratch for ``train_tokens`` tokens whatever the subset's size (a smaller
    subset is repeated, epoch after epoch; ``epochs`` is recorded per model),
    in steps of ``batch_size`` sequences, with AdamW, a linear warm-up
    (``warmup``, a fraction of the steps) and a cosine decay. The tokenizer
    is a byte-level BPE of ``vocab_size`` trained on ``tokenizer_documents``
    documents of the training pool (seeded). ``lr`` and ``warmup`` left out
    are chosen by full-pool models measured on the validation split: the
    learning rate from ``lr_grid`` (at the given warm-up, else the first of
    ``warmup_grid``), then the warm-up from ``warmup_grid``.
    ``device``: ``auto`` (CUDA with bf16 when present, else CPU), ``cpu``
    or ``cuda``. ``hf_config``: a local Hugging Face ``config.json`` (e.g.
    GPT-2's) to train that architecture instead (``pip install
    'thresher[hf]'``; its vocabulary and context are set from these
    settings); relative to the config file.
    """

    vocab_size: int = Field(default=4096, ge=258, le=65536)
    d_model: int = Field(default=128, ge=8)
    n_layers: int = Field(default=2, ge=1)
    n_heads: int = Field(default=4, ge=1)
    context_length: int = Field(default=128, ge=8)
    train_tokens: int = Field(default=1_000_000, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float | None = Field(default=None, gt=0.0)
    lr_grid: list[float] = Field(default_factory=lambda: list(LM_LR_GRID), min_length=1)
    warmup: float | None = Field(default=None, ge=0.0, lt=1.0)
    warmup_grid: list[float] = Field(default_factory=lambda: list(LM_WARMUP_GRID), min_length=1)
    weight_decay: float = Field(default=0.1, ge=0.0)
    tokenizer_documents: int = Field(default=2000, ge=1)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    hf_config: str | None = None

    @model_validator(mode="after")
    def _check_shape(self) -> LMEvalConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if any(isinstance(v, bool) or v <= 0 for v in self.lr_grid):
            raise ValueError("lr_grid: every learning rate must be > 0")
        if any(isinstance(v, bool) or not 0 <= v < 1 for v in self.warmup_grid):
            raise ValueError("warmup_grid: every warm-up is a fraction of the steps in [0, 1)")
        for name in ("lr_grid", "warmup_grid"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: each candidate once")
        return self


#: What ``eval.task`` may be: today's classifier eval or the language-model eval.
EvalTask = Literal["classifier", "language_model"]


class EvalSettings(_Strict):
    """The ``eval`` section (see module docstring).

    ``rates`` are fractions pruned, in (0, 1); ``seeds`` models per (selector,
    rate), ``search_seeds`` per searched candidate; ``validation`` is the
    fraction of the (non-test) training rows carved off for the search;
    ``label_noise`` the fraction of training labels flipped before scoring;
    ``full`` adds the model trained on the whole pool; ``shard_rows`` sizes
    the training pool's shards; ``batch`` jobs run per Prefect task, by
    ``workers`` threads.

    ``task: language_model`` trains a small language model per subset
    instead of a classifier (``lm``), on unlabelled text: ``rates`` are
    fractions of the pool's *tokens* pruned (a token budget), the test split
    and any ``targets`` are measured by per-token loss, and ``label_noise``
    and ``model`` do not apply.
    """

    task: EvalTask = "classifier"
    test: TestSplitConfig
    validation: float = Field(default=0.1, ge=0.0, lt=1.0)
    selectors: list[EvalSelectorConfig] = Field(min_length=1)
    rates: list[float] = Field(min_length=1)
    seeds: int = Field(default=5, ge=1, le=1000)
    search_seeds: int = Field(default=1, ge=1, le=100)
    label_noise: float = Field(default=0.0, ge=0.0, lt=1.0)
    full: bool = True
    model: DownstreamConfig = Field(default_factory=DownstreamConfig)
    lm: LMEvalConfig = Field(default_factory=LMEvalConfig)
    targets: dict[str, TargetSetConfig] = Field(default_factory=dict)
    shard_rows: int = Field(default=20_000, ge=1)
    batch: int = Field(default=8, ge=1)
    workers: int = Field(default=1, ge=1, le=64)

    @field_validator("rates")
    @classmethod
    def _check_rates(cls, rates: list[float]) -> list[float]:
        for rate in rates:
            if isinstance(rate, bool) or not 0.0 < rate < 1.0:
                raise ValueError(f"a pruning rate is a fraction removed in (0, 1), got {rate!r}")
        if len(set(rates)) != len(rates):
            raise ValueError("rates: each pruning rate once")
        return sorted(rates)

    @model_validator(mode="after")
    def _check_selectors(self) -> EvalSettings:
        labels = [s.display for s in self.selectors]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"selectors: label(s) {repeated} used twice; set `label`")
        if FULL in labels:
            raise ValueError(f"selectors: the label {FULL!r} is reserved for the full-data model")
        if any(s.display == RANDOM and s.name != RANDOM for s in self.selectors):
            raise ValueError(f"selectors: the label {RANDOM!r} names the random baseline")
        if any(s.search for s in self.selectors) and self.validation == 0.0:
            raise ValueError("validation: a search needs a validation split; set validation > 0")
        if self.task == "language_model":
            if any(s.name == DYNAMIC_EL2N for s in self.selectors):
                raise ValueError(
                    f"selectors: {DYNAMIC_EL2N} prunes a classifier's rows by its EL2N; "
                    "the language_model task does not support it"
                )
            return self._check_language_model()
        if self.targets:
            raise ValueError("targets: target sets are measured by the language_model task")
        if not self.model.tuned and self.validation == 0.0:
            raise ValueError(
                "validation: the downstream learning rate and weight decay are chosen on a "
                "validation split; set validation > 0, or give model.lr and model.weight_decay"
            )
        return self

    def _check_language_model(self) -> EvalSettings:
        if self.model.distill is not None:
            raise ValueError(
                "model.distill: knowledge distillation is for the classifier task; the "
                "language_model task trains language models (eval.lm), not classifiers"
            )
        if self.label_noise:
            raise ValueError("label_noise: the language_model task trains on unlabelled text")
        if (self.lm.lr is None or self.lm.warmup is None) and self.validation == 0.0:
            raise ValueError(
                "validation: the language model's learning rate and warm-up are chosen on a "
                "validation split; set validation > 0, or give lm.lr and lm.warmup"
            )
        bad = sorted(name for name in self.targets if not _TARGET_NAME.fullmatch(name))
        if bad:
            raise ValueError(f"targets: names are identifiers (letters, digits, _); got {bad}")
        reserved = sorted(set(self.targets) & {"test", "validation", "train"})
        if reserved:
            raise ValueError(f"targets: {reserved} name the eval's own splits; rename the set")
        return self

    @property
    def language_model(self) -> bool:
        """True for ``task: language_model``."""
        return self.task == "language_model"


_TARGET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EvalConfig(_Strict):
    """A whole eval job: the run part (training data, scorers) and the ``eval`` section."""

    run: RunConfig
    eval: EvalSettings

    @property
    def root(self) -> Path:
        """The eval's directory (``run_dir``; eval runs on a local file system)."""
        location = self.run.run_path
        if not location.is_local:
            raise ConfigError(
                f"run_dir: thresher eval keeps its splits and models on a local file system; "
                f"{location} is not local (curate runs may use object storage)"
            )
        return location.as_path()

    @property
    def selectors(self) -> list[EvalSelectorConfig]:
        """The configured selectors, with ``random`` first when it was not listed."""
        listed = list(self.eval.selectors)
        if not any(s.display == RANDOM for s in listed):
            listed.insert(0, EvalSelectorConfig(name=RANDOM))
        return listed

    def config_dict(self) -> dict[str, Any]:
        """The configuration as plain data (what ``_state/eval.json`` records)."""
        data = self.run.config_dict()
        data.pop("selector", None)
        return {**data, "eval": self.eval.model_dump(mode="json")}

    def digest(self, *parts: Any) -> str:
        """A short stable hash of ``parts`` (JSON), for cache keys."""
        return json_digest(list(parts))


def parse_eval_config(data: dict[str, Any], base_dir: str | Path = ".") -> EvalConfig:
    """Validate an eval mapping; ConfigError names every bad field.

    Each selector is also checked as a run's ``selector`` step would be
    (registry name, parameters, score and embedding columns produced by the
    scorers), for every combination of its search grid.
    """
    if not isinstance(data, dict):
        raise ConfigError("invalid eval configuration: the top level must be a mapping")
    data = dict(data)
    if "eval" not in data:
        raise ConfigError(
            "invalid eval configuration: add an `eval` section (see thresher eval --help)"
        )
    if "selector" in data:
        raise ConfigError(
            "invalid eval configuration: selector: list the selectors to compare under "
            "eval.selectors (a top-level selector is not used by eval)"
        )
    section = data.pop("eval")
    run = parse_config(data, base_dir=base_dir)
    language_model = isinstance(section, dict) and section.get("task") == "language_model"
    if language_model and run.schema_.text is None:
        raise ConfigError(
            "invalid eval configuration: schema.text: the language_model task trains on text; "
            "name the text column"
        )
    if run.schema_.label is None and not language_model:
        raise ConfigError(
            "invalid eval configuration: schema.label: eval trains classifiers; "
            "name the column holding the labels"
        )
    try:
        settings = EvalSettings.model_validate(section)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, "eval", "eval.")) from None
    config = EvalConfig(run=run, eval=settings)
    for i, selector in enumerate(config.eval.selectors):
        for params in selector.grid():
            try:
                if selector.name == DYNAMIC_EL2N:
                    _check_dynamic(selector, params)
                else:
                    selection_config(config, selector.step(params, 1), seed=0)
            except ConfigError as error:
                detail = str(error).removeprefix("invalid run configuration:").strip()
                raise ConfigError(
                    f"invalid eval configuration: eval.selectors[{i}] ({selector.display}, "
                    f"params {params}): {detail}"
                ) from None
    return config


def _check_dynamic(selector: EvalSelectorConfig, params: dict[str, Any]) -> None:
    """Dynamic pruning is the eval's own (:mod:`thresher.evaluation.dynamic`): its parameters."""
    if selector.partitions is not None:
        raise ConfigError(f"partitions: {DYNAMIC_EL2N} prunes the whole pool; remove partitions")
    try:
        dynamic_params(params)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def load_eval_config(path: str | Path) -> EvalConfig:
    """Read and validate an eval YAML file (relative paths: against its directory)."""
    return parse_eval_config(read_yaml(path), base_dir=Path(path).parent)


def resolve_eval_config(
    config: EvalConfig | str | Path | dict[str, Any], **overrides: Any
) -> EvalConfig:
    """A validated EvalConfig from a config, a YAML path or a mapping, with top-level overrides.

    A mapping's relative paths are resolved against the current directory.
    """
    if isinstance(config, EvalConfig):
        if not overrides:
            return config
        base, data = config.run.base_dir, config.config_dict()
    elif isinstance(config, dict):
        base, data = str(Path.cwd()), dict(config)
    else:
        loaded = load_eval_config(config)
        if not overrides:
            return loaded
        base, data = loaded.run.base_dir, loaded.config_dict()
    return parse_eval_config({**data, **overrides}, base_dir=base)


def scoring_config(config: EvalConfig) -> RunConfig:
    """The run that scores the training pool: ``RUN_DIR/run`` over ``RUN_DIR/splits/train``.

    Its schema is the canonical one the split files are written in; the
    scorers, filters, engine and seed are the eval config's (the language
    model task adds ``token_count`` when no scorer counts tokens: its
    budgets are token budgets).
    """
    data = config.run.config_dict()
    schema = config.run.schema_
    if config.eval.language_model and not any(
        s.output_column == TOKEN_COLUMN for s in config.run.scorers
    ):
        # token budgets read the token_count column
        data["scorers"] = [*data.get("scorers", []), {"name": TOKEN_COLUMN}]
    data.update(
        run_dir=str(config.root / "run"),
        input={"paths": [str(config.root / "splits" / "train" / "*.parquet")], "format": "parquet"},
        schema={
            "id": "id",
            "text": "text" if schema.text is not None else None,
            "label": None if config.eval.language_model else "label",
            "features": "features" if schema.features is not None else None,
            "passthrough": "all",
            "max_text_bytes": None,
        },
    )
    data.pop("selector", None)
    return parse_config(data, base_dir=config.run.base_dir)


def selection_config(config: EvalConfig, step: SelectorConfig, seed: int) -> RunConfig:
    """The scoring run's configuration with ``step`` as its selector and ``seed`` as its seed.

    What the select stage (:func:`thresher.stages.select.select`) runs for
    one (selector, rate, seed); checked like any run configuration.
    """
    data = scoring_config(config).config_dict()
    data.update(seed=int(seed), selector=step.model_dump(mode="json"))
    return parse_config(data, base_dir=config.run.base_dir)
