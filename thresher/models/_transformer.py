"""A small GPT-style causal transformer, the reference LM's network.

Pre-LayerNorm blocks (attention then a GELU MLP), learned absolute
positions, output projection tied to the token embedding, no dropout
(the model is small and trained for a short time; no dropout also makes
training deterministic for a seed). Attention is causal, so right padding
never changes the outputs at the real positions of a sequence.

References
----------
Radford et al., "Language Models are Unsupervised Multitask Learners"
(GPT-2), 2019. Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of the network.

    Attributes
    ----------
    vocab_size : int
        Number of token ids (the tokenizer's vocabulary).
    d_model : int
        Width of the residual stream; ``n_heads`` must divide it.
    n_layers, n_heads : int
        Blocks and attention heads per block.
    context_length : int
        Longest sequence the model reads (learned positions).
    """

    vocab_size: int
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    context_length: int = 256

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "context_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Block(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.ln_attention = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.projection = nn.Linear(d, d)
        self.ln_mlp = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cached(x, None)[0]

    def cached(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The block on ``x`` after the positions whose keys and values ``cache`` holds.

        Without a cache the positions attend causally among themselves; with
        one, ``x`` is the next position(s) and attends to the cached ones too.
        Returns the output and the keys and values of every position so far.
        """
        batch, length, width = x.shape
        q, k, v = self.qkv(self.ln_attention(x)).split(width, dim=2)
        heads = (batch, length, self.n_heads, width // self.n_heads)
        q, k, v = (t.view(heads).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        if cache is None or length == 1:  # one new position sees every cached one
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        else:
            mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=x.device).tril(
                k.shape[2] - length
            )
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.projection(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.down(F.gelu(self.up(self.ln_mlp(x)))), (k, v)


class CausalTransformer(nn.Module):
    """Token ids ``(batch, length)`` -> next-token logits and final hidden states."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.context_length, config.d_model)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.ln_final = nn.LayerNorm(config.d_model)
        self.apply(_init_weights)
        # GPT-2: scale the residual projections by depth.
        for block in self.blocks:
            assert isinstance(block, _Block)
            for layer in (block.projection, block.down):
                nn.init.normal_(layer.weight, std=0.02 / (2 * config.n_layers) ** 0.5)

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        """Final (normalised) hidden states, shape ``(batch, length, d_model)``."""
        length = ids.shape[1]
        if length > self.config.context_length:
            raise ValueError(
                f"sequence of {length} tokens is longer than the context ({self.config.context_length})"
            )
        positions = torch.arange(length, device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits from hidden states (tied output projection)."""
        return hidden @ self.token_embedding.weight.T

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden_states(ids)
        return self.logits(hidden), hidden

    def greedy(self, ids: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """The ``n_tokens`` tokens greedy decoding appends to each row of ``ids`` (no padding).

        The prompt runs once; each decoded token then runs alone against the
        cached keys and values of the positions before it, and only the last
        position's logits are computed. The most likely token is taken
        (``argmax``: the lowest id on a tie).
        """
        batch, length = ids.shape
        if length + n_tokens - 1 > self.config.context_length:
            raise ValueError(
                f"{length} prompt tokens plus {n_tokens} decoded tokens exceed the context "
                f"({self.config.context_length})"
            )
        decoded = torch.empty((batch, n_tokens), dtype=torch.long, device=ids.device)
        positions = torch.arange(length, device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        caches: list[tuple[torch.Tensor, torch.Tensor]] = []
        for block in self.blocks:
            assert isinstance(block, _Block)
            x, cache = block.cached(x, None)
            caches.append(cache)
        for step in range(n_tokens):
            following = self.logits(self.ln_final(x[:, -1])).float().argmax(dim=-1)
            decoded[:, step] = following
            if step == n_tokens - 1:
                break
            position = torch.full((1,), length + step, device=ids.device, dtype=torch.long)
            x = (self.token_embedding(following) + self.position_embedding(position))[:, None]
            for index, block in enumerate(self.blocks):
                assert isinstance(block, _Block)
                x, caches[index] = block.cached(x, caches[index])
        return decoded

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
