"""Data sets as pure functions of (generator, parameters): one replica's sample at a time.

`stack` turns per-replica samples into [R, N, ...] tensors. Nothing here reads files, globals or
the environment; seeds arrive as generators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Split:
    """Inputs [R, N, d] and targets ([R, N, k] for regression, [R, N] class indices)."""

    x: Tensor
    y: Tensor

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def __len__(self) -> int:
        return self.x.shape[1]


Sampler = Callable[[torch.Generator, int], tuple[Tensor, Tensor]]


def stack(sampler: Sampler, generators: Sequence[torch.Generator], n: int) -> Split:
    """Draw n points per replica, each from its own generator."""
    xs, ys = zip(*(sampler(g, n) for g in generators))
    return Split(torch.stack(xs), torch.stack(ys))


# --- sinusoid (paper 000 §3.3) --------------------------------------------------------------------


def sinusoid(
    gen: torch.Generator,
    n: int,
    *,
    noise_std: float = 0.25,
    low: float = -2 * math.pi,
    high: float = 2 * math.pi,
    gap: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """y = sin(x) + ε, ε ~ N(0, noise_std²), x uniform on [low, -gap] ∪ [gap, high].

    The paper writes ε ~ N(0, 0.25); its code reads 0.25 as the std, hence the default. `gap` > 0
    gives the o.o.d. set: [-3π, -2π] ∪ [2π, 3π] is low=-3π, high=3π, gap=2π.
    """
    half = high - gap  # length of each side; the two sides are symmetric when low == -high
    u = torch.rand(n, 1, generator=gen)
    if gap > 0:
        side = torch.where(torch.rand(n, 1, generator=gen) < 0.5, -1.0, 1.0)
        x = side * (gap + u * half)
    else:
        x = low + u * (high - low)
    y = torch.sin(x) + noise_std * torch.randn(n, 1, generator=gen)
    return x, y


def sinusoid_sampler(noise_std: float, region: str) -> Sampler:
    """A sampler for the train/test region ([-2π, 2π]) or the o.o.d. region (2π < |x| ≤ 3π)."""
    if region == "ood":
        return lambda g, n: sinusoid(g, n, noise_std=noise_std, high=3 * math.pi, gap=2 * math.pi)
    return lambda g, n: sinusoid(g, n, noise_std=noise_std)


# --- double spiral (paper 004 §2.3) ---------------------------------------------------------------


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
