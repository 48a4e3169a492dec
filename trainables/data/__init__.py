"""Every data set of the catalogue, as pure functions of (generators, parameters).

A sampler draws one replica's points from that replica's generator; `stack` turns per-replica
samples into [R, N, ...] tensors, so replica r's data depends only on its own seed, never on how
many replicas train beside it. Nothing here reads globals or the environment; seeds arrive as
generators. The only files read are the data sets a user points to (`digits.load_mnist`).

- `regression`: the sinusoid (paper 000 §3.3) and the arithmetic tasks on disc, annulus and normal
  inputs (§3.1, §3.2, A.2.3, A.2.5), with their evaluation grid and regions; the GP uses them too.
- `spiral`: the double spiral with entanglement, distance, codimension and noise (paper 004).
- `digits`: scikit-learn's 8×8 digits or MNIST from IDX files, with a seeded split per replica.
- `polynomials`: the Bell polynomial B6 and its scrambled counterparts (paper 003 B).
- `sawtooth`: the sawtooth + spline target of the energy-landscape paper (002).
"""

from __future__ import annotations

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
        return Split(_move(self.x, device), _move(self.y, device))

    def __len__(self) -> int:
        return self.x.shape[1]


def _move(t: Tensor, device: torch.device | str) -> Tensor:
    # Points every replica shares are an expanded view of one copy (MNIST: 190 MB); moving the
    # view as it is would materialise a copy per replica.
    if t.dim() and t.shape[0] > 1 and t.stride(0) == 0:
        return t[0].to(device).expand_as(t)
    return t.to(device)


Sampler = Callable[[torch.Generator, int], tuple[Tensor, Tensor]]


def stack(sampler: Sampler, generators: Sequence[torch.Generator], n: int) -> Split:
    """Draw n points per replica, each from its own generator."""
    xs, ys = zip(*(sampler(g, n) for g in generators))
    return Split(torch.stack(xs), torch.stack(ys))


def uniform(gen: torch.Generator, n: int, dim: int, high: float) -> Tensor:
    """n points [n, dim] uniform on [0, high]^dim (papers 003 A and B)."""
    return torch.rand(n, dim, generator=gen) * high
