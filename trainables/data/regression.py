"""The regression data sets of paper 000: the sinusoid (§3.3) and the arithmetic tasks (§3.1-A.2.5).

Each comes with its data fields (`SinusoidData`, `ArithmeticData`): the network experiments and the
`gp` experiment build their Configs from them, so that a GP and a network with the same seed and
point counts see exactly the same points, and the two curves (error vs λ, error vs σ⁻¹) compare.

Arithmetic evaluation: o.o.d. and region errors are means over a regular grid of `grid_size`²
points on [-1.5, 1.5]² (Table 1's square), the same for every replica: ood is the grid outside the
unit disc; on the annulus also hole (r < 0.5: outside the data, inside its convex hull), ring
(0.5 ≤ r ≤ 1) and outside (1 < r ≤ 1.5). Region tests use r², so boundaries are exact.

Error against eccentricity (Fig. 2, middle column): `radial_means` averages per-point values over
radius bins [k/20, (k+1)/20), so 0.5 and 1 (the annulus's edges) are bin edges and no bin mixes
two regions (a point at r = 1 exactly falls in [1, 1.05)); `eccentricity_plot` builds the plot
from one replica's squared error on the grid: the paper's dots (−log10 squared error per point
against ‖x‖₂, grouped by region instead of coloured by angle), their mean per bin (our stand-in
for the paper's radially averaged kde) and −log10 of each bin's MSE (the region MSEs' statistic,
dominated by the worst points of the bin). Empty bins are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from trainables import artifacts
from trainables.config import ExperimentConfig, require
from trainables.data import Sampler, Split, stack
from trainables.nn import replica_generators

Operation = Literal["add", "multiply"]
Domain = Literal["disc", "annulus", "normal"]
EXTENT = 1.5  # the evaluation square [-1.5, 1.5]² of Table 1 and Fig. 1
ERROR_FLOOR = 1e-30  # log10 of a squared error is floored here, so an exact fit stays finite
RADIAL_BINS_PER_UNIT = 20  # radius bins of width 0.05: 0.5 and 1 fall on bin edges
MAX_DOTS = 2500  # dots drawn per eccentricity plot: every trial logs its plot data, and 10⁴ dots
# (a 101² grid) would triple that payload; the bins still average every point


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


@dataclass(frozen=True)
class SinusoidData(ExperimentConfig):
    """The sinusoid data set; the `sinusoid` and `gp` experiments share it."""

    train_points: int = 100
    """training points per replica"""
    test_points: int = 2000
    """test points per replica, from the training region"""
    ood_points: int = 2000
    """o.o.d. points per replica, from 2π < |x| ≤ 3π"""
    noise_std: float = 0.25
    """std of the Gaussian label noise ε (the paper's N(0, 0.25), read as a std by its code)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("train_points", "test_points", "ood_points"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(self.noise_std >= 0, "noise_std", ">= 0", self.noise_std)

    def noise_floor(self, metric: str) -> float | None:
        """Against noisy labels no model beats the noise variance (the `_clean` MSEs: no floor)."""
        return self.noise_std**2 if metric in ("train_mse", "test_mse", "ood_mse") else None


def sinusoid_splits(cfg: SinusoidData) -> dict[str, Split]:
    """Train, test and o.o.d. splits, [R, N, 1] each; replica r's data depends only on its seed."""
    gens = replica_generators(cfg.seeds, "data")
    region = sinusoid_sampler(cfg.noise_std, "in")
    return {
        "train": stack(region, gens, cfg.train_points),
        "test": stack(region, gens, cfg.test_points),
        "ood": stack(sinusoid_sampler(cfg.noise_std, "ood"), gens, cfg.ood_points),
    }


# --- arithmetic (paper 000 §3.1, §3.2, A.2.3, A.2.5) ----------------------------------------------


def arithmetic_inputs(gen: torch.Generator, n: int, domain: Domain) -> Tensor:
    """n points [n, 2] uniform on the disc or annulus (A.1's polar recipe), or standard normal."""
    if domain == "normal":
        return torch.randn(n, 2, generator=gen)
    theta = torch.rand(n, generator=gen) * (2 * math.pi)
    low = 0.25 if domain == "annulus" else 0.0  # r² ~ U(low, 1) makes the density uniform in area
    r = torch.sqrt(low + (1 - low) * torch.rand(n, generator=gen))
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)


def target(x: Tensor, operation: Operation) -> Tensor:
    """y [..., 1] for inputs x [..., 2]: x1 + x2 or x1·x2 (noiseless, as in the paper)."""
    y = x[..., 0] + x[..., 1] if operation == "add" else x[..., 0] * x[..., 1]
    return y.unsqueeze(-1)


def _arithmetic(gen: torch.Generator, n: int, *, domain: Domain, operation: Operation):
    x = arithmetic_inputs(gen, n, domain)
    return x, target(x, operation)


def arithmetic_sampler(domain: Domain, operation: Operation) -> Sampler:
    return partial(_arithmetic, domain=domain, operation=operation)


def grid_axis(grid_size: int, extent: float = EXTENT) -> Tensor:
    return torch.linspace(-extent, extent, grid_size)


def grid_points(grid_size: int, extent: float = EXTENT) -> Tensor:
    """[G², 2] with x1 varying fastest: point i·G + j is (axis[j], axis[i])."""
    axis = grid_axis(grid_size, extent)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


@dataclass(frozen=True)
class ArithmeticData(ExperimentConfig):
    """The arithmetic data sets; the `addition` and `gp` experiments share them."""

    operation: Operation = "add"
    """target: "add" is y = x1 + x2 (§3.1), "multiply" is y = x1·x2 (A.2.5)"""
    domain: Domain = "disc"
    """training inputs: unit disc (§3.1), annulus 0.5 ≤ r ≤ 1 (§3.2), standard normal (A.2.3)"""
    train_points: int = 128
    """training points per replica (D = 128 in §3.1)"""
    test_points: int = 1000
    """test points per replica, a fresh sample from the training domain"""
    grid_size: int = 101
    """points per side of the regular grid on [-1.5, 1.5]² for o.o.d./region errors and surface"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("train_points", "test_points"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(self.grid_size >= 2, "grid_size", ">= 2", self.grid_size)


def arithmetic_splits(cfg: ArithmeticData) -> dict[str, Split]:
    """Train and test [R, N, 2] from the domain, and the evaluation grid [R, G², 2] (shared)."""
    gens = replica_generators(cfg.seeds, "data")
    sampler = arithmetic_sampler(cfg.domain, cfg.operation)
    grid = grid_points(cfg.grid_size).expand(cfg.replicas, -1, -1)
    return {
        "train": stack(sampler, gens, cfg.train_points),
        "test": stack(sampler, gens, cfg.test_points),
        "grid": Split(grid, target(grid, cfg.operation)),
    }


def region_masks(points: Tensor) -> dict[str, Tensor]:
    """Boolean masks over points [P, 2]: ood (r > 1), hole (r < 0.5), ring, outside (1 < r ≤ 1.5).

    hole, ring and outside partition the disc of radius 1.5; ood is everything outside the unit
    disc (Table 1's o.o.d. set when the points fill [-1.5, 1.5]²).
    """
    r2 = points.double().pow(2).sum(dim=-1)
    return {
        "ood": r2 > 1.0,
        "hole": r2 < 0.25,
        "ring": (r2 >= 0.25) & (r2 <= 1.0),
        "outside": (r2 > 1.0) & (r2 <= EXTENT**2),
    }


def regions(domain: str) -> tuple[str, ...]:
    """The regions reported for a domain: ood always, the annulus's three rings for the annulus."""
    return ("ood", "hole", "ring", "outside") if domain == "annulus" else ("ood",)


def region_means(
    values: Tensor, points: Tensor, domain: str, suffix: str = "mse"
) -> dict[str, Tensor]:
    """{region}_{suffix}: the mean of values [R, P] over each region's points, per replica [R]."""
    masks = region_masks(points)
    return {f"{name}_{suffix}": values[:, masks[name]].mean(dim=1) for name in regions(domain)}


def log_squared_error(pred: Tensor, y: Tensor) -> Tensor:
    """log10 of the squared error, floored at ERROR_FLOOR (the loss surfaces of Fig. 1, 2, 4)."""
    return torch.log10((pred - y).double().pow(2).clamp_min(ERROR_FLOOR))


def radial_means(
    values: Tensor, points: Tensor, per_unit: int = RADIAL_BINS_PER_UNIT
) -> tuple[Tensor, Tensor, Tensor]:
    """Means of values [R, P] over radius bins [k/per_unit, (k+1)/per_unit) of points [P, 2].

    Returns (bin centres [B], points per bin [B], means [R, B]) for the B non-empty bins. Bins
    compare r² with squared edges, like `region_masks`, so a region boundary on a bin edge is exact.
    """
    require(per_unit >= 1, "per_unit", ">= 1", per_unit)
    r2 = points.double().pow(2).sum(dim=-1)
    bins = math.floor(math.sqrt(r2.max().item()) * per_unit) + 2  # one spare: sqrt may round down
    edges = torch.arange(bins + 1, dtype=torch.float64, device=points.device) / per_unit
    index = torch.bucketize(r2, edges.pow(2), right=True) - 1  # edges[i]² <= r² < edges[i + 1]²
    count = torch.bincount(index, minlength=bins)
    sums = values.new_zeros(values.shape[0], bins, dtype=torch.float64)
    sums.index_add_(1, index, values.double())
    keep = count > 0
    centres = (edges[:-1] + edges[1:]) / 2
    return centres[keep], count[keep], sums[:, keep] / count[keep]


def eccentricity_plot(
    sq_error: Tensor | np.ndarray, points: Tensor | np.ndarray, domain: str, title: str = ""
) -> dict[str, Any]:
    """Fig. 2 (middle): −log10 squared error [P] against ‖x‖₂ of points [P, 2], dots and bins.

    Dots per region (hole, ring, o.o.d. on the annulus; r ≤ 1 and o.o.d. otherwise; at most
    `MAX_DOTS`, every k-th point), the bin means of all points and −log10 of each bin's MSE
    (`radial_means`).
    """
    err = torch.as_tensor(sq_error, dtype=torch.float64).flatten()
    points = torch.as_tensor(points)
    neg_log = -torch.log10(err.clamp_min(ERROR_FLOOR))
    centres, _, means = radial_means(torch.stack([neg_log, err]), points)
    r = points.double().norm(dim=-1)
    masks = region_masks(points)
    if domain == "annulus":
        groups = {"hole (o.o.d., inside the hull)": masks["hole"], "ring (i.i.d.)": masks["ring"],
                  "o.o.d. (outside the hull)": masks["ood"]}  # fmt: skip
    else:
        groups = {"r ≤ 1": ~masks["ood"], "o.o.d. (r > 1)": masks["ood"]}
    thin = torch.zeros_like(r, dtype=torch.bool)
    thin[:: math.ceil(len(r) / MAX_DOTS)] = True
    series = {label: (r[m & thin], neg_log[m & thin]) for label, m in groups.items() if m.any()}
    series["mean per bin"] = (centres, means[0])
    series["−log10 of bin MSE"] = (centres, -torch.log10(means[1].clamp_min(ERROR_FLOOR)))
    # the paper's region colours (yellow, green, red; olive is matplotlib's nearest to yellow)
    colors = dict(zip(groups, (8, 2, 3) if domain == "annulus" else (2, 3)))
    return artifacts.curves(
        series, title=title, x_label="eccentricity ‖x‖₂", y_label="−log10 squared error",
        markers=list(groups), dashed=["−log10 of bin MSE"],
        colors={**colors, "mean per bin": 7, "−log10 of bin MSE": 0},
    )  # fmt: skip
