"""What the scorers built on the proxy classifier share: fit, setup, inputs.

``fit`` trains (or reuses) the shared proxy (:func:`thresher.models.proxy.fit_proxy`)
and keeps only its directory; ``setup`` loads the checkpoints a scorer needs
once per worker; ``inputs`` turns a batch into the feature tensor and class
indices (``-1`` for a null or unseen label).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Device, Mapping
from thresher.devices import resolve_device
from thresher.errors import ScorerError
from thresher.fitting import FitContext
from thresher.io import schema as S
from thresher.models.proxy import ProxyConfig, ProxyModel, fit_proxy, parse_proxy_config
from thresher.scorers.base import Scorer

if TYPE_CHECKING:
    import torch


class ProxyScorer(Scorer):
    """Base class: subclasses set ``name`` and define ``__init__`` (with ``proxy``
    and ``device``), ``output_fields`` and ``score``."""

    requires_fit: ClassVar[bool] = True
    transient_attributes: ClassVar[tuple[str, ...]] = ("model_",)
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "proxy": [Mapping(), None],
        "device": [Device()],
    }

    proxy: dict[str, Any] | None
    device: str

    @property
    def proxy_config(self) -> ProxyConfig:
        """The validated ``proxy`` parameter (ConfigError names a bad field)."""
        return parse_proxy_config(self.proxy, self.name)

    def _check_together(self) -> None:
        self.proxy_config  # noqa: B018 (parsing it checks every field)

    # The columns depend on the proxy's feature source, so this is per instance.
    @property
    def input_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.proxy_config.features.input_column, S.LABEL)

    def needed_epochs(self) -> list[int] | None:
        """Epochs whose checkpoints ``score`` reads (None: all)."""
        return None

    def fit(self, context: FitContext) -> None:
        self.validate_params()
        self.proxy_path_ = str(
            fit_proxy(context, self.proxy_config, device=resolve_device(self.device))
        )

    def setup(self) -> None:
        if getattr(self, "model_", None) is not None:
            return
        path = getattr(self, "proxy_path_", None)
        if path is None:
            raise ScorerError(f"scorer {self.name!r} is not fitted: call fit() before setup()")
        self.model_ = ProxyModel.load(
            Path(path), epochs=self.needed_epochs(), device=resolve_device(self.device)
        )

    @property
    def model(self) -> ProxyModel:
        """The loaded checkpoints (loads them on first use)."""
        self.setup()
        model: ProxyModel = self.model_
        return model

    def inputs(self, batch: pa.RecordBatch) -> tuple[torch.Tensor, NDArray[np.int64]]:
        """Feature tensor ``(n, d)`` and class indices ``(n,)`` (-1: unknown label)."""
        labels = batch.column(batch.schema.get_field_index(S.LABEL))
        return self.model.features(batch), self.model.label_indices(labels)


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class axis (last)."""
    import torch

    return torch.softmax(logits, dim=-1)


def residuals(logits: torch.Tensor, labels: NDArray[np.int64]) -> torch.Tensor:
    """``softmax(logits) - onehot(label)``, shape ``(n, K, C)``; zero one-hot for label -1."""
    import torch

    probabilities = class_probabilities(logits)
    onehot = torch.zeros_like(probabilities)
    known = np.flatnonzero(labels >= 0)
    onehot[known, :, labels[known]] = 1.0
    return probabilities - onehot


def with_unknown_as_nan(
    values: NDArray[np.float64], labels: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Set the rows whose label has no class (``-1``) to NaN."""
    values = np.array(values, dtype=np.float64, copy=True)
    values[labels < 0] = np.nan
    return values


def struct_or_array(columns: list[NDArray[np.float64]], fields: list[pa.Field]) -> pa.Array:
    """One float64 array, or a StructArray of several (the multi-output convention)."""
    arrays = [pa.array(column, pa.float64()) for column in columns]
    if len(arrays) == 1:
        return arrays[0]
    return pa.StructArray.from_arrays(arrays, fields=fields)
