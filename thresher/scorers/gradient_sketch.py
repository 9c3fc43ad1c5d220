"""The proxy's last-layer loss gradient of each row, exact or projected to a fixed width.

The cross-entropy gradient of the last layer (weights ``W``, shape
``classes x width``, and bias ``b``) at one example factors as
``dW = g h^T`` and ``db = g``, with ``g = softmax(logits) - onehot(label)``
and ``h`` the last layer's input (the hidden layer, or the features of a
linear head). Flattened as the parameters are (``[vec(dW), db]``) it has
``E = classes x (width + 1)`` numbers: a permutation of ``g (x) h~`` with
``h~ = [h, 1]``.

The ``gradient`` embedding has a width fixed before the proxy is trained
(``dim``), whatever the number of classes:

- ``E <= dim``: the exact gradient, followed by ``dim - E`` zeros (zeros
  change neither lengths nor angles);
- otherwise ``R2 vec(g (x) u)`` with ``u = R1 h~`` when ``h~`` is wider
  than ``dim`` (else ``u = h~``): ``R1`` (``dim x (width + 1)``) and ``R2``
  (``dim x classes * min(width + 1, dim)``) have independent ``N(0, 1/dim)``
  entries, seeded by the run seed. The composed map ``R2 (I (x) R1)`` is a
  Gaussian random projection of the Kronecker product, so inner products
  of gradients (and their cosines) are preserved in expectation
  (Johnson-Lindenstrauss), yet neither the Kronecker product of a wide
  ``h~`` nor a ``dim x E`` matrix is ever built: ``R1`` is the influence
  scorer's projection of ``h~``, and the product with the narrow ``u`` is
  taken a bounded number of rows at a time. Memory: ``dim x (width + 1)``
  for ``R1`` and ``dim x classes x min(width + 1, dim)`` for ``R2``.

References
----------
Wang et al., "Diversity Measurement and Subset Selection for Instruction
Tuning Datasets", 2024 (normalised last-layer gradients as the embedding).
Pruthi et al., "Estimating Training Data Influence by Tracing Gradient
Descent", NeurIPS 2020 (the factorisation and its random projection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: Elements of ``g (x) u`` built at once (rows x classes x width) when projecting.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class GradientProjection:
    """How gradients of a proxy with ``classes`` classes and last-layer input ``width`` become ``dim`` numbers.

    ``first`` (``R1``) and ``second`` (``R2``) are None where the module
    docstring's rule keeps that stage exact.
    """

    dim: int
    classes: int
    width: int
    first: torch.Tensor | None
    second: torch.Tensor | None

    @classmethod
    def make(
        cls, dim: int, classes: int, width: int, seed: int, like: torch.Tensor
    ) -> GradientProjection:
        """The seeded projection (on ``like``'s device and dtype)."""
        import torch

        def gaussian(rows: int, columns: int, stream: int) -> torch.Tensor:
            rng = np.random.default_rng([seed, 0x6AD1, stream])
            matrix = rng.standard_normal((rows, columns)) / np.sqrt(dim)
            return torch.from_numpy(matrix).to(like.device, like.dtype)

        if classes * (width + 1) <= dim:
            return cls(dim, classes, width, None, None)
        first = gaussian(dim, width + 1, 1) if width + 1 > dim else None
        narrow = min(width + 1, dim)
        return cls(dim, classes, width, first, gaussian(dim, classes * narrow, 2))

    @property
    def exact(self) -> bool:
        return self.second is None

    def __call__(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``(n, dim)`` vectors from residuals ``g`` ``(n, classes)`` and inputs ``h`` ``(n, width)``."""
        import torch

        n = g.shape[0]
        if self.second is None:
            weights = (g[:, :, None] * h[:, None, :]).reshape(n, -1)
            padding = g.new_zeros((n, self.dim - self.classes * (self.width + 1)))
            return torch.cat([weights, g, padding], dim=1)
        if self.first is None:
            u = torch.cat([h, torch.ones_like(h[:, :1])], dim=1)
        else:
            u = h @ self.first[:, : self.width].T + self.first[:, self.width]
        step = max(1, _CHUNK_ELEMENTS // (self.classes * u.shape[1]))
        parts = [
            (g[i : i + step, :, None] * u[i : i + step, None, :]).reshape(-1, self.second.shape[1])
            @ self.second.T
            for i in range(0, n, step)
        ]
        return torch.cat(parts) if parts else g.new_zeros((0, self.dim))
