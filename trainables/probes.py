"""Probes of trained networks: distances between distributions, histograms to draw them, and
statistics of weight matrices and gradients.

Pure functions of samples (numpy arrays or torch tensors, any device); nothing here trains, reads
files or keeps state. Paper 003 A compares a student's weight and bias distributions with its
teacher's, layer by layer and over the whole network: `wasserstein_1` is that comparison for one
pair of samples, `replica_wasserstein` does it for every replica of a stacked model, and
`shared_histograms` bins several samples on common edges so their densities can be overlaid.

The 1-Wasserstein (earth mover's) distance between the empirical distributions of samples a and b
is ∫ |F_a(t) - F_b(t)| dt: for two samples of equal size it is the mean absolute difference of
their sorted values. It needs no binning, is defined for samples of different sizes (a student
with more weights than its teacher), and is in the units of the values (a shift by c costs |c|).

Paper 004 ch. 4 reads a trained network through its weight matrices: `weight_statistics` (norms,
singular values, eigenvalue moduli) and `zero_gradient_fraction` (dead ReLU units).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

ArrayLike = Any  # np.ndarray | Tensor | a sequence of numbers


def as_numpy(values: ArrayLike) -> np.ndarray:
    """A flat float64 array from a tensor (any device, with or without grad) or an array."""
    if isinstance(values, Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def wasserstein_1(a: ArrayLike, b: ArrayLike) -> float:
    """1-Wasserstein distance between the empirical distributions of two samples (flattened)."""
    a, b = as_numpy(a), as_numpy(b)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"samples must be non-empty, but got sizes {a.size} and {b.size}")
    return float(stats.wasserstein_distance(a, b))


def _per_replica(values: Tensor | Sequence[Tensor]) -> Tensor:
    """[R, ...] or a list of [R, ...] tensors -> [R, n]: each replica's values, concatenated."""
    parts = [values] if isinstance(values, Tensor) else list(values)
    if not parts:
        raise ValueError("need at least one tensor of values")
    return torch.cat([p.detach().flatten(1) for p in parts], dim=1)


def replica_wasserstein(a: Tensor | Sequence[Tensor], b: Tensor | Sequence[Tensor]) -> Tensor:
    """W1 between a[r] and b[r] for every replica r, as a float64 tensor [R] on the CPU.

    `a` and `b` are [R, ...] tensors or lists of them (say, every layer's weights): replica r's
    sample is the concatenation of its slices. The two sides may hold different numbers of values.
    """
    sa, sb = _per_replica(a), _per_replica(b)
    if sa.shape[0] != sb.shape[0]:
        raise ValueError(f"replica counts differ: {sa.shape[0]} and {sb.shape[0]}")
    return torch.tensor([wasserstein_1(x, y) for x, y in zip(sa, sb)], dtype=torch.float64)


def shared_histograms(
    samples: Sequence[ArrayLike],
    bins: int = 50,
    value_range: tuple[float, float] | None = None,
    density: bool = True,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Histograms of several samples on the same `bins` + 1 edges: (edges, [heights per sample]).

    The edges span `value_range`, by default the smallest and largest value over all samples, so
    every value of every sample is counted. With `density` the heights integrate to 1 (samples of
    different sizes become comparable); otherwise they are counts.
    """
    if bins < 1:
        raise ValueError(f"`bins` must be >= 1, but got {bins}")
    arrays = [as_numpy(s) for s in samples]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("need at least one sample, and every sample must be non-empty")
    if value_range is None:
        low = min(float(a.min()) for a in arrays)
        high = max(float(a.max()) for a in arrays)
        if high <= low:  # every value equal: a unit-wide bin around it
            low, high = low - 0.5, high + 0.5
        value_range = (low, high)
    edges = np.histogram_bin_edges(arrays[0], bins=bins, range=value_range)
    return edges, [np.histogram(a, bins=edges, density=density)[0] for a in arrays]


# --- weight matrices and gradients (paper 004 ch. 4) ----------------------------------------------


MATRIX_STATISTICS = ("fro_norm", "sv_max", "sv_min", "cond")
"""what `weight_statistics` reports for every layer i, each as `{name}_l{i}`"""
EIGEN_STATISTICS = ("eig_abs_mean", "eig_abs_max", "eig_abs_min", "eig_spread", "eig_cond")
"""what it adds for a square layer"""


def weight_statistics(weights: Sequence[Tensor]) -> dict[str, Tensor]:
    """Per layer l, per replica: Frobenius norm, singular-value range and condition number, and
    for square matrices the statistics of the eigenvalue moduli (the thesis's hypotheses 1 and 2).

    `weights` are [R, n_in, n_out] matrices as the forward pass uses them: the transpose of
    PyTorch's [n_out, n_in], which has the same eigenvalues. A real matrix has complex eigenvalues
    in conjugate pairs, so the thesis works with their moduli |λ| (ch. 4.1.2, App. D):
    - `eig_abs_mean_l{i}`, `eig_abs_max_l{i}`, `eig_abs_min_l{i}`: mean, largest, smallest |λ|;
    - `eig_spread_l{i}` = |λ|_max − |λ|_min, the range all the moduli fall in (Fig. 4.6);
    - `eig_cond_l{i}` = |λ|_max / |λ|_min, the thesis's "conditional number" (App. D), which is
      not the SVD's `cond_l{i}` = σ_max / σ_min unless the matrix is normal; a singular matrix
      makes it inf.
    """
    out: dict[str, Tensor] = {}
    for i, w in enumerate(weights):
        w = w.detach().double()
        sv = torch.linalg.svdvals(w)  # [R, min(n_in, n_out)], descending
        out[f"fro_norm_l{i}"] = torch.linalg.matrix_norm(w, ord="fro")
        out[f"sv_max_l{i}"] = sv[:, 0]
        out[f"sv_min_l{i}"] = sv[:, -1]
        out[f"cond_l{i}"] = sv[:, 0] / sv[:, -1]
        if w.shape[-1] == w.shape[-2]:
            modulus = torch.linalg.eigvals(w).abs()
            largest, smallest = modulus.max(dim=1).values, modulus.min(dim=1).values
            out[f"eig_abs_mean_l{i}"] = modulus.mean(dim=1)
            out[f"eig_abs_max_l{i}"] = largest
            out[f"eig_abs_min_l{i}"] = smallest
            out[f"eig_spread_l{i}"] = largest - smallest
            out[f"eig_cond_l{i}"] = largest / smallest
    return out


def zero_gradient_fraction(layers: Sequence[torch.nn.Module]) -> dict[str, Tensor]:
    """Per layer, per replica: the fraction of weight-gradient entries that are exactly zero
    (dead ReLU units leave whole rows of zeros; tanh almost never does)."""
    out = {}
    for i, layer in enumerate(layers):
        grad = layer.weight.grad
        if grad is not None:
            out[f"zero_grad_l{i}"] = (grad == 0).flatten(1).double().mean(dim=1)
    return out
