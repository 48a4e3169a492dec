"""Addition (and multiplication) of two reals (paper 000 §3.1, §3.2, §3.4, A.1, A.2.3-A.2.5).

A two-layer MLP (one hidden layer) learns y = x1 + x2, or y = x1·x2 (A.2.5), with the squared loss
of eq. 3. ReLU with plain weights is the §3.1 width sweep (Fig. 1 top, Table 1); tanh with the
σ-normalised weights of eq. 7 is the §3.4 σ⁻¹ sweep (Fig. 4). Training inputs come from the unit
disc (§3.1), the annulus 0.5 ≤ r ≤ 1 (§3.2) or a standard normal (A.2.3); `symmetrise` trains
f_sym(x) = (f(x1, x2) + f(x2, x1)) / 2 (A.2.4). The hand-set ReLU weights of eq. 1 (`eq1_solution`)
represent x1 + x2 exactly: the class holds the solution that training does not find.

Target metric: test_mse. One run: `smoothsweep train addition --set activation=relu --set
normalise=false --set width=256`.

Choices the paper leaves open, and what we do:
- Defaults are the network fields' defaults (tanh, σ-normalised, width 1000) and a 3,000-step
  budget; the specs set ReLU for Fig. 1 and the `paper` profiles carry the paper's 50,000 steps.
  The learning rate decays by 0.9 every 500 steps, as in the paper's public code (A.1 says only
  "decay 0.9").
- With finite data (D = 128 by default) training is full batch: the paper gives no batch size,
  and 128 points are one batch. `fresh_batches` draws a new batch of `batch_size` (256, §3.2)
  every step instead ("D → ∞"); train_mse is then measured on a fixed sample of `train_points`
  from the training domain, drawn like the finite training set.
- Test points are a fresh uniform sample from the training domain (`test_points`; the paper does
  not say how many). o.o.d. and region errors are means over a regular grid of `grid_size`²
  points on [-1.5, 1.5]², the same for every replica and the same grid as the loss surface:
  ood_mse is over grid points with r > 1 (Table 1's [-1.5, 1.5]² minus the disc, for every
  domain, so the normal domain's o.o.d. is not outside its support). For the annulus we also
  report hole_mse (r < 0.5: outside the data, inside its convex hull), ring_mse (0.5 ≤ r ≤ 1) and
  outside_mse (1 < r ≤ 1.5: the disc of radius 1.5 minus the unit disc, so the square's corners
  count for ood_mse but not for outside_mse). Region tests use r², so boundaries are exact.
- Labels are noiseless (the paper adds no noise to the arithmetic tasks). The data sets, the grid
  and the regions live in `trainables.data.regression`, which the `gp` experiment shares.
- f_sym averages two forward passes; float addition is commutative, so f_sym is exactly
  symmetric bit for bit.
- The loss surface (Fig. 1, 2, 4) is log10 of the squared error, floored at 1e-30 so an exact
  fit stays finite; the run hands replica 0's surface to the final report as an artifact, with
  its error against eccentricity on the same grid (`error_vs_eccentricity`, Fig. 2 middle):
  −log10 squared error per grid point against ‖x‖₂, grouped by region rather than coloured by
  angle, its mean in radius bins of 0.05 (for the paper's radially averaged kde) and −log10 of
  each bin's MSE (`regression.eccentricity_plot`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from trainables import artifacts, engine
from trainables.config import require
from trainables.data import Split
from trainables.data.regression import (
    EXTENT,
    ArithmeticData,
    Operation,
    arithmetic_inputs,
    arithmetic_splits,
    eccentricity_plot,
    grid_axis,
    grid_points,
    log_squared_error,
    region_means,
    regions,
    target,
)
from trainables.nn import NetworkConfig, ReplicaMLP
from trainables.report import Metric, Reporter, declare, no_report


@dataclass(frozen=True)
class Config(NetworkConfig, engine.TrainingConfig, ArithmeticData):
    fresh_batches: bool = False
    """draw a new batch of batch_size points every step ("D → ∞", §3.2) instead of train_points"""
    batch_size: int = 256
    """points per step when fresh_batches is true (§3.2: 256)"""
    symmetrise: bool = False
    """train f_sym(x) = (f(x1, x2) + f(x2, x1)) / 2, commutative by construction (A.2.4)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)

    def metrics(self) -> dict[str, Metric]:
        places = ("train", "test", *regions(self.domain))
        return declare(minimise=[f"{p}_mse" for p in places])


def make_data(cfg: Config) -> dict[str, Split]:
    """Train and test from the domain, and the evaluation grid (`regression.arithmetic_splits`)."""
    return arithmetic_splits(cfg)


def make_batches(cfg: Config) -> engine.BatchSource:
    """Full batch on the finite training set, or a fresh sample from the domain every step."""
    if not cfg.fresh_batches:
        return engine.FullBatch()
    inputs = partial(arithmetic_inputs, domain=cfg.domain)
    return engine.FreshSamples(inputs, cfg.batch_size, partial(target, operation=cfg.operation))


# --- model ----------------------------------------------------------------------------------------


class Symmetrised(nn.Module):
    """f_sym(x) = (f(x1, x2) + f(x2, x1)) / 2 around a replica model (paper 000 A.2.4)."""

    def __init__(self, inner: ReplicaMLP) -> None:
        super().__init__()
        self.inner = inner
        self.replicas = inner.replicas

    def forward(self, x: Tensor) -> Tensor:
        return (self.inner(x) + self.inner(x.flip(-1))) / 2


def make_model(cfg: Config) -> nn.Module:
    mlp = cfg.make_mlp(2, 1)
    return Symmetrised(mlp) if cfg.symmetrise else mlp


def eq1_solution(
    alpha: float = 2.0, beta: float = -0.5, gamma: float = 4.0, delta: float = -0.25
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Paper eq. 1: ReLU weights (W1 [2, 4], b1 [4], W2 [4, 1], b2 [1]) computing x1 + x2.

    α, γ > 0 and β, δ < 0: α⁻¹·relu(α·x1) + β⁻¹·relu(β·x1) = x1, and likewise for x2. Shapes are
    those of one replica of `ReplicaLinear` (x @ W + b).
    """
    require(alpha > 0 and gamma > 0, "alpha, gamma", "> 0", (alpha, gamma))
    require(beta < 0 and delta < 0, "beta, delta", "< 0", (beta, delta))
    w1 = torch.tensor([[alpha, beta, 0.0, 0.0], [0.0, 0.0, gamma, delta]])
    w2 = torch.tensor([[1 / alpha], [1 / beta], [1 / gamma], [1 / delta]])
    return w1, torch.zeros(4), w2, torch.zeros(1)


# --- evaluation -----------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, data: engine.Data, domain: str) -> engine.Measured:
    """train_mse, test_mse, ood_mse and, for the annulus, hole_mse, ring_mse, outside_mse [R]."""
    out = engine.split_metrics(model, {k: data[k] for k in ("train", "test")}, {"mse": engine.mse})
    out.update(region_means(grid_error(model, data["grid"]), data["grid"].x[0], domain))
    return out


def grid_error(model: nn.Module, grid: Split) -> Tensor:
    """Squared error [R, G²] on the evaluation grid."""
    return (model(grid.x) - grid.y).pow(2)[..., 0]


@torch.no_grad()
def loss_surface(
    model: nn.Module, operation: Operation, grid_size: int = 101, extent: float = EXTENT
) -> tuple[Tensor, Tensor]:
    """The log-loss surface of Fig. 1, 2, 4: (axis [G], log10 squared error [R, G, G]).

    z[r, i, j] is replica r's error at (x1, x2) = (axis[j], axis[i]).
    """
    device = next(model.parameters()).device
    points = grid_points(grid_size, extent).to(device)
    x = points.expand(model.replicas, -1, -1)
    z = log_squared_error(model(x), target(x, operation))
    return grid_axis(grid_size, extent), z.view(-1, grid_size, grid_size).cpu()


@torch.no_grad()
def grid_plots(
    model: nn.Module, data: engine.Data, final: engine.Measured, replica: int, cfg: Config
) -> dict[str, Any]:
    """One replica's loss surface, with its training points when the training set is finite, and
    its error against eccentricity on the same grid (Fig. 2, middle column)."""
    axis, z = loss_surface(model, cfg.operation, cfg.grid_size)
    points = None
    if not cfg.fresh_batches:
        train = data["train"].x[replica].cpu()
        points = {"x": train[:, 0].tolist(), "y": train[:, 1].tolist()}
    which = f"{cfg.operation} on the {cfg.domain} (seed {cfg.seeds[replica]})"
    surface = artifacts.surface(
        axis.tolist(), axis.tolist(), z[replica].numpy(), title=f"log10 squared error, {which}",
        z_label="log10 error", points=points,
    )  # fmt: skip
    err, grid = grid_error(model, data["grid"])[replica].cpu(), data["grid"].x[replica].cpu()
    curve = eccentricity_plot(err, grid, cfg.domain, f"error vs eccentricity, {which}")
    return {"loss_surface": surface, "error_vs_eccentricity": curve}


def make_task(cfg: Config) -> engine.Task:
    return engine.Task(
        make_model(cfg),
        make_data(cfg),
        engine.mse,
        partial(evaluate, domain=cfg.domain),
        batches=make_batches(cfg),
        artifacts=partial(grid_plots, cfg=cfg),
    )


def run(
    config: Mapping[str, Any], report: Reporter = no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    return engine.run(cfg, make_task(cfg), report, device)
