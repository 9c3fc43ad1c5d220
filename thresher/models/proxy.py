"""The proxy classifier behind EL2N, GraNd, AUM, forgetting, TracIn and VoG.

A small classifier (a linear head, or one hidden ReLU layer) is trained on
document features (:mod:`thresher.models.features`) of a labelled random
sample of the corpus, for a few epochs, from ``n_seeds`` independent
initialisations, with the SGD loop of the eval's downstream model
(:mod:`thresher.models.classifier`: momentum, weight decay, here a
constant learning rate). The learning rate and weight decay, unless given,
are chosen on a held-out ``holdout`` fraction of the sample (small grids,
learning rate first, one model per candidate); the proxies are then
trained on the whole sample, so that every scored training row was seen.
After every epoch the weights are saved: one safetensors file per (seed,
epoch), plus ``proxy.json`` (classes, learning rate per epoch, shapes, the
search, the training accuracy and the held-out accuracy) and
``train_rows.parquet`` (the corpus positions it was trained on). The scorers then read what they need from these checkpoints:
EL2N at an early epoch, per-epoch margins and correctness for AUM and
forgetting counts, last-layer gradients for GraNd and TracIn (and as an
embedding), input gradients for VoG, the hidden layer as an embedding.

Several scorers asking for the same proxy share one training run: the
checkpoints live in ``<models>/_shared/proxy-<hash>/``, keyed by a hash of
the :class:`ProxyConfig` and the run seed, written to a staging directory
and renamed into place when complete (so a crash never leaves a half
proxy that a resume would trust).

Labels are the canonical ``label`` column, compared as text (``1`` and
``"1"`` are the same class; ``2.0`` is ``2``); classes are sorted, so the
class index of a label does not depend on sampling order. Rows with a null
label are left out of training. At scoring time a label the proxy never saw
(or a null label) has no class index (``-1``): label-dependent scores are
NaN there, which the select stage drops with reason ``invalid_score``.

Scoring runs the checkpoints in float64 on the CPU and rounds every score
to float32 precision: BLAS kernels sum in a different order for different
batch sizes (1e-16 relative), and the rounding keeps those differences away
from the selection, so both engines select the same rows. On CUDA
(``device="auto"`` finds the GPU Spark gave the task) the checkpoints run
in float32 under ``torch.inference_mode``; the head is a few small matrix
products, too small for half precision to pay (the LM features, when used,
run in the LM's own half precision).

References
----------
Paul, Ganguli and Dziugaite, "Deep Learning on a Data Diet: Finding
Important Examples Early in Training", NeurIPS 2021.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from thresher.errors import ConfigError, ScorerError
from thresher.io import schema as S
from thresher.keys import json_digest
from thresher.models._safe import load_safetensors
from thresher.models.classifier import (
    LR_GRID,
    WEIGHT_DECAY_GRID,
    Classifier,
    SGDSettings,
    train_classifier,
    tune,
)
from thresher.models.features import (
    FeatureConfig,
    FeatureExtractor,
    Matrix,
    SparseRows,
    n_rows,
    take_rows,
)

if TYPE_CHECKING:
    import torch

    from thresher.fitting import FitContext

PROXY_FORMAT = 1
SHARED_DIR = "_shared"
#: What ``proxy.json`` says about how well the proxy learned (read by the eval's record).
PROXY_FIELDS = ("learning_rate", "weight_decay", "train_accuracy", "holdout_accuracy", "search")


class ProxyConfig(BaseModel):
    """How the proxy classifier is trained (the ``proxy`` parameter of the scorers).

    ``hidden = 0`` is a linear head on the features (multinomial logistic
    regression); ``hidden > 0`` adds one ReLU layer of that width (needed
    for VoG and for ``embedding`` with ``source: proxy``). ``max_rows`` caps
    the labelled sample the proxy trains on. ``lr`` and ``weight_decay``
    left out (null) are chosen from ``lr_grid`` and ``weight_decay_grid`` by
    accuracy on the ``holdout`` fraction of the sample (see module
    docstring).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: FeatureConfig = Field(default_factory=FeatureConfig)
    hidden: int = Field(default=64, ge=0, le=8192)
    epochs: int = Field(default=8, ge=1, le=500)
    n_seeds: int = Field(default=4, ge=1, le=64)
    lr: float | None = Field(default=None, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float | None = Field(default=None, ge=0.0)
    batch_size: int = Field(default=64, ge=1)
    max_rows: int = Field(default=100_000, ge=2)
    holdout: float = Field(default=0.1, gt=0.0, lt=1.0)
    lr_grid: tuple[float, ...] = Field(default=LR_GRID, min_length=1)
    weight_decay_grid: tuple[float, ...] = Field(default=WEIGHT_DECAY_GRID, min_length=1)

    @field_validator("lr_grid", "weight_decay_grid")
    @classmethod
    def _check_grid(cls, values: tuple[float, ...], info: Any) -> tuple[float, ...]:
        for value in values:
            if (
                isinstance(value, bool)
                or value < 0
                or (info.field_name == "lr_grid" and value == 0)
            ):
                raise ValueError(f"{value!r} is not a valid candidate")
        return values


def parse_proxy_config(value: dict[str, Any] | None, owner: str) -> ProxyConfig:
    """Validate a scorer's ``proxy`` parameter; ConfigError names the bad field."""
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{owner}.proxy: expected a mapping, got {type(value).__name__}")
    try:
        return ProxyConfig.model_validate(value or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{owner}.proxy.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(problems) from None


def label_key(value: Any) -> str | None:
    """A label value as the text its class is keyed by (None stays None)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def proxy_directory(context: FitContext, config: ProxyConfig) -> Path:
    """Where the proxy for ``config`` and the run's seed lives (shared by scorers)."""
    key = json_digest(
        {"format": PROXY_FORMAT, "config": config.model_dump(mode="json"), "seed": context.seed}
    )
    return context.artifact_dir.parent / SHARED_DIR / f"proxy-{key}"


def training_sample(context: FitContext, config: ProxyConfig) -> pa.Table:
    """The labelled rows the proxy trains on (same rows on every call for a seed)."""
    column = config.features.input_column
    sample = context.sample(config.max_rows, [S.ID, S.LABEL, column], context.seed)
    if S.LABEL not in sample.column_names:
        raise ConfigError(
            "the proxy classifier needs labels: set schema.label to the column holding them"
        )
    if column not in sample.column_names:
        raise ConfigError(
            f"the proxy's features come from the {column!r} column, which the corpus lacks "
            f"(set schema.{column}, or choose another proxy.features.source)"
        )
    labelled = pc.is_valid(sample.column(S.LABEL))
    return sample.filter(labelled)


def fit_proxy(context: FitContext, config: ProxyConfig, device: str = "cpu") -> Path:
    """Train (or reuse) the proxy for ``config``; return its checkpoint directory.

    Parameters
    ----------
    context
        The scorer's fit context (sample of the ingested corpus, run seed).
    config
        Proxy settings; with the run seed they key the shared directory.
    device
        Torch device for training (``"cpu"`` or ``"cuda:N"``).
    """
    directory = proxy_directory(context, config)
    if (directory / "proxy.json").is_file():
        return directory
    sample = training_sample(context, config)
    keys = [label_key(v) for v in sample.column(S.LABEL).to_pylist()]
    classes = sorted({k for k in keys if k is not None})
    if len(classes) < 2:
        raise ScorerError(
            f"the proxy classifier needs at least 2 label classes, found {classes} "
            f"in {sample.num_rows} labelled sampled rows"
        )
    index = {label: i for i, label in enumerate(classes)}
    targets = np.asarray([index[k] for k in keys if k is not None], dtype=np.int64)
    extractor = FeatureExtractor(config.features).fit(sample, context)
    matrix = extractor.transform(sample)
    torch_device = _device(device)
    lr, weight_decay, trials, holdout_accuracy = choose_settings(
        matrix, targets, len(classes), config, context.seed, torch_device
    )

    write_proxy(
        directory,
        sample,
        extractor,
        matrix,
        targets,
        classes,
        config,
        (lr, weight_decay, trials, holdout_accuracy),
        context.seed,
        torch_device,
    )
    return directory


def write_proxy(
    directory: Path,
    sample: pa.Table,
    extractor: FeatureExtractor,
    matrix: Matrix,
    targets: NDArray[np.int64],
    classes: list[str],
    config: ProxyConfig,
    settings: tuple[float, float, list[dict[str, Any]], float | None],
    run_seed: int,
    device: str,
) -> None:
    """Train ``config.n_seeds`` proxies on ``matrix`` rows and save them under ``directory``.

    ``settings`` is (learning rate, weight decay, search trials, held-out
    accuracy) as :func:`choose_settings` gives them; ``sample`` holds the
    rows' positions. The directory appears complete or not at all (staged,
    then renamed), in the format :meth:`ProxyModel.load` reads.
    """
    lr, weight_decay, trials, holdout_accuracy = settings
    staging = directory.parent / f".{directory.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        extractor.save(staging / "features")
        train_accuracy = []
        for seed_index in range(config.n_seeds):
            seed = int(np.random.SeedSequence([run_seed, seed_index]).generate_state(1)[0])
            model = _train_one(
                matrix,
                targets,
                len(classes),
                config,
                lr,
                weight_decay,
                seed,
                staging / f"seed-{seed_index}",
                device,
            )
            train_accuracy.append(model.accuracy(matrix, targets))
        pq.write_table(sample.select([S.SHARD, S.ROW]), staging / "train_rows.parquet")
        metadata = {
            "format": PROXY_FORMAT,
            "config": config.model_dump(mode="json"),
            "seed": run_seed,
            "classes": classes,
            "class_counts": np.bincount(targets, minlength=len(classes)).tolist(),
            "input_dim": _width(matrix),
            "hidden": config.hidden,
            "epochs": config.epochs,
            "n_seeds": config.n_seeds,
            "lr": [lr] * config.epochs,
            "learning_rate": lr,
            "weight_decay": weight_decay,
            "n_train": int(targets.size),
            "train_accuracy": float(np.mean(train_accuracy)),
            "holdout_accuracy": holdout_accuracy,
            "search": trials,
        }
        (staging / "proxy.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))
        try:
            os.rename(staging, directory)
        except OSError:
            if not (directory / "proxy.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _device(device: str) -> str:
    from thresher.devices import configure_torch

    return str(configure_torch(device))


def _settings(config: ProxyConfig, n: int, lr: float, weight_decay: float) -> SGDSettings:
    """``config.epochs`` epochs of full batches at a constant learning rate."""
    per_epoch = max(1, n // config.batch_size)
    return SGDSettings(
        steps=config.epochs * per_epoch,
        batch_size=config.batch_size,
        lr=lr,
        momentum=config.momentum,
        weight_decay=weight_decay,
        schedule="constant",
    )


def choose_settings(
    matrix: Matrix,
    targets: NDArray[np.int64],
    n_classes: int,
    config: ProxyConfig,
    run_seed: int,
    device: str,
) -> tuple[float, float, list[dict[str, Any]], float | None]:
    """Learning rate and weight decay (given, or chosen on the held-out rows), and that accuracy.

    The held-out rows are a seeded ``config.holdout`` fraction of the
    sample; each candidate is one proxy (first seed) trained on the rest.
    With both values given, one proxy is still trained on the rest, so
    that the held-out accuracy is always recorded.
    """
    n = n_rows(matrix)
    n_holdout = round(config.holdout * n)
    if n_holdout < 1 or n - n_holdout < 2:
        if config.lr is None or config.weight_decay is None:
            raise ScorerError(
                f"the proxy chooses its learning rate on {config.holdout:g} of its {n} "
                "training rows, too few; give proxy.lr and proxy.weight_decay"
            )
        return config.lr, config.weight_decay, [], None
    order = np.random.default_rng(np.random.SeedSequence([run_seed, 7])).permutation(n)
    held, rest = np.sort(order[:n_holdout]), np.sort(order[n_holdout:])
    fit_rows, held_rows = take_rows(matrix, rest), take_rows(matrix, held)
    seed = int(np.random.SeedSequence([run_seed, 0]).generate_state(1)[0])

    def evaluate(lr: float, weight_decay: float) -> tuple[float, bool]:
        with threads_for(_step_size(matrix, config, n_classes), device.split(":")[0]):
            model = train_classifier(
                fit_rows,
                targets[rest],
                n_classes,
                config.hidden,
                _settings(config, rest.size, lr, weight_decay),
                seed,
                device=device,
            )
        return model.accuracy(held_rows, targets[held]), model.diverged

    lr, weight_decay, trials = tune(
        evaluate, config.lr, config.weight_decay, config.lr_grid, config.weight_decay_grid
    )
    chosen = [t for t in trials if t.lr == lr and t.weight_decay == weight_decay]
    accuracy = chosen[0].accuracy if chosen else evaluate(lr, weight_decay)[0]
    records = [
        {"lr": t.lr, "weight_decay": t.weight_decay, "accuracy": t.accuracy, "diverged": t.diverged}
        for t in trials
    ]
    return lr, weight_decay, records, float(accuracy)


def _step_size(matrix: Matrix, config: ProxyConfig, n_classes: int) -> int:
    return config.batch_size * _width(matrix) * (config.hidden or n_classes)


def _width(matrix: Matrix) -> int:
    return matrix.dim if isinstance(matrix, SparseRows) else int(matrix.shape[1])


def _dense(matrix: Matrix) -> NDArray[np.float32]:
    return matrix.dense() if isinstance(matrix, SparseRows) else np.asarray(matrix, np.float32)


def _train_one(
    matrix: Matrix,
    targets: NDArray[np.int64],
    n_classes: int,
    config: ProxyConfig,
    lr: float,
    weight_decay: float,
    seed: int,
    out: Path,
    device: str,
) -> Classifier:
    """Train one initialisation; save its weights after every epoch.

    Minibatch SGD with heavy-ball momentum and L2 weight decay (torch's SGD:
    ``v <- momentum v + grad + decay w; w <- w - lr v``) at a constant
    learning rate, the one TracIn weighs each checkpoint with.
    """
    from safetensors.numpy import save_file

    out.mkdir(parents=True)
    n = n_rows(matrix)
    settings = _settings(config, n, lr, weight_decay)

    def save(epoch: int, model: Classifier) -> None:
        save_file(model.state(), str(out / f"epoch-{epoch:03d}.safetensors"))

    with threads_for(_step_size(matrix, config, n_classes), device.split(":")[0]):
        model = train_classifier(
            matrix,
            targets,
            n_classes,
            config.hidden,
            settings,
            seed,
            device=device,
            every=settings.steps // config.epochs,
            on_checkpoint=save,
        )
    if model.diverged:
        raise ScorerError(
            f"the proxy diverged at learning rate {lr:g} (a non-finite loss); "
            "lower proxy.lr or leave it out to have it chosen"
        )
    return model


@contextmanager
def threads_for(multiply_adds: int, device_type: str) -> Iterator[None]:
    """One CPU thread for steps under ~10^8 multiply-adds (every default proxy step).

    Measured on the 2-core machine: a 64 x 4096 x 64 step takes under a
    millisecond on one thread, while two threads on a busy machine (other
    workers, Spark) run it tens of times slower.
    """
    import torch

    before = torch.get_num_threads()
    if device_type == "cpu" and multiply_adds < 2**27:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Checkpoint:
    """One saved state: seed index, epoch (1-based) and the learning rate used in it."""

    seed: int
    epoch: int
    lr: float


class ProxyModel:
    """Saved proxy checkpoints, loaded for scoring (float64 on CPU).

    ``forward`` evaluates every loaded checkpoint at once on a batch:
    hidden activations ``h`` (the last layer's input) and logits.
    """

    def __init__(
        self,
        metadata: dict[str, Any],
        extractor: FeatureExtractor,
        checkpoints: list[Checkpoint],
        weights: dict[str, torch.Tensor],
        device: str,
    ) -> None:
        self.metadata = metadata
        self.extractor = extractor
        self.checkpoints = checkpoints
        self.weights = weights
        self.device = device
        self.classes: list[str] = list(metadata["classes"])
        self.class_index = {label: i for i, label in enumerate(self.classes)}

    @property
    def hidden(self) -> int:
        return int(self.metadata["hidden"])

    @property
    def epochs(self) -> int:
        return int(self.metadata["epochs"])

    @property
    def n_seeds(self) -> int:
        return int(self.metadata["n_seeds"])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def load(
        cls, directory: Path | str, epochs: list[int] | None = None, device: str = "cpu"
    ) -> ProxyModel:
        """Load the checkpoints of ``epochs`` (default: all) for every seed."""
        import torch

        from thresher.devices import configure_torch

        directory = Path(directory)
        meta_path = directory / "proxy.json"
        if not meta_path.is_file():
            raise ScorerError(f"no proxy at {directory} (missing proxy.json): fit it first")
        metadata = json.loads(meta_path.read_text())
        if metadata.get("format") != PROXY_FORMAT:
            raise ScorerError(f"{meta_path}: unsupported proxy format {metadata.get('format')}")
        wanted = list(range(1, metadata["epochs"] + 1)) if epochs is None else sorted(set(epochs))
        for epoch in wanted:
            if not 1 <= epoch <= metadata["epochs"]:
                raise ScorerError(f"epoch {epoch} not in 1..{metadata['epochs']} of the proxy")
        torch_device = configure_torch(device)
        dtype = torch.float64 if torch_device.type == "cpu" else torch.float32
        checkpoints = [
            Checkpoint(seed, epoch, float(metadata["lr"][epoch - 1]))
            for seed in range(metadata["n_seeds"])
            for epoch in wanted
        ]
        names = ["out.weight", "out.bias"]
        if metadata["hidden"]:
            names = ["hidden.weight", "hidden.bias", *names]
        stacks: dict[str, list[NDArray[np.generic]]] = {name: [] for name in names}
        for point in checkpoints:
            path = directory / f"seed-{point.seed}" / f"epoch-{point.epoch:03d}.safetensors"
            arrays = load_safetensors(path)
            if sorted(arrays) != sorted(names):
                raise ScorerError(f"{path}: tensors {sorted(arrays)}, expected {sorted(names)}")
            for name in names:
                stacks[name].append(arrays[name])
        weights = {
            name: torch.from_numpy(np.stack(arrays)).to(torch_device, dtype)
            for name, arrays in stacks.items()
        }
        extractor = FeatureExtractor.load(directory / "features")
        extractor.device = device
        return cls(metadata, extractor, checkpoints, weights, str(torch_device))

    # -- inputs --------------------------------------------------------------------------
    def label_indices(self, column: pa.Array | pa.ChunkedArray) -> NDArray[np.int64]:
        """Class index of each label; -1 for null or unseen labels."""
        keys = [label_key(value) for value in column.to_pylist()]
        return np.asarray(
            [-1 if key is None else self.class_index.get(key, -1) for key in keys], dtype=np.int64
        )

    def features(self, batch: pa.RecordBatch | pa.Table) -> torch.Tensor:
        """Dense ``(n, d)`` feature tensor of a batch, on the model's device and dtype."""
        import torch

        matrix = _dense(self.extractor.transform(batch))
        expected = int(self.metadata["input_dim"])
        if matrix.shape[0] and matrix.shape[1] != expected:
            raise ScorerError(
                f"features of width {matrix.shape[1]}, the proxy was trained on width {expected}"
            )
        tensor = torch.from_numpy(matrix.reshape(-1, expected))
        return tensor.to(self.device, self.weights["out.weight"].dtype)

    # -- evaluation ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden activations and logits of every loaded checkpoint.

        Returns
        -------
        h : Tensor, shape ``(n, K, P)`` or ``(n, 1, d)``
            Input of the last layer per checkpoint; for a linear head the
            features themselves, shared by all ``K`` checkpoints.
        logits : Tensor, shape ``(n, K, C)``
        """
        import torch

        with torch.inference_mode():
            w2, b2 = self.weights["out.weight"], self.weights["out.bias"]
            k, n_classes, width = w2.shape
            if self.hidden:
                w1, b1 = self.weights["hidden.weight"], self.weights["hidden.bias"]
                h = torch.relu((x @ w1.reshape(k * width, -1).T).reshape(-1, k, width) + b1)
                logits = torch.einsum("nkp,kcp->nkc", h, w2) + b2
            else:
                h = x[:, None, :]
                logits = (x @ w2.reshape(k * n_classes, width).T).reshape(-1, k, n_classes) + b2
        return h, logits

    def seed_epoch_grid(self, values: torch.Tensor) -> NDArray[np.float64]:
        """Reshape ``(n, K)`` per-checkpoint values to ``(n, n_seeds, n_epochs_loaded)``."""
        array = values.detach().to("cpu", dtype=values.dtype).numpy().astype(np.float64)
        n_loaded = len(self.checkpoints) // self.n_seeds
        return array.reshape(array.shape[0], self.n_seeds, n_loaded)

    def loaded_epochs(self) -> list[int]:
        """Epochs loaded, in order (the same for every seed)."""
        return [c.epoch for c in self.checkpoints if c.seed == 0]


def round_scores(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Round to float32 precision (see module docstring: same selection on any batching)."""
    return np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)
