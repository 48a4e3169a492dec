"""The double spiral (paper 004 §2.3): arms r = ±bφ, harder to separate as they wind."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def spiral(
    gen: torch.Generator,
    n: int,
    *,
    entanglement: float,
    phi_min: float = 0.5,
    distance: float = 1.0,
    codimension: int = 0,
    noise: float = 0.0,
    embedding: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Two Archimedean spirals r = ±bφ, φ ~ U(φ_min, entanglement); n points, classes balanced.

    `distance` is the gap between neighbouring arms: along any ray the two spirals alternate every
    πb, so b = distance/π. `codimension` > 0 embeds the plane into 2 + codimension dimensions by
    `embedding` (a fixed orthogonal map, see `spiral_embedding`) before noise is added.
    """
    if n % 2:
        raise ValueError(f"`n` must be even (balanced classes), but got {n}")
    half = n // 2
    b = distance / math.pi
    phi = phi_min + torch.rand(n, generator=gen) * (entanglement - phi_min)
    label = torch.cat([torch.zeros(half, dtype=torch.long), torch.ones(half, dtype=torch.long)])
    r = b * phi * torch.where(label == 0, 1.0, -1.0)
    x = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=1)
    if codimension:
        if embedding is None:
            raise ValueError("`embedding` is required when codimension > 0 (see spiral_embedding)")
        x = x @ embedding
    x = x + noise * torch.randn(x.shape, generator=gen)
    order = torch.randperm(n, generator=gen)
    return x[order], label[order]


def spiral_embedding(codimension: int, seed: int = 0) -> Tensor:
    """A fixed random isometry R² → R^(2+codim): the first two rows of an orthogonal matrix."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(2 + codimension, 2 + codimension, generator=gen))
    return q[:2]
