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
- Labels are noiseless (the paper adds no noise to the arithmetic tasks).
- f_sym averages two forward passes; float addition is commutative, so f_sym is exactly
  symmetric bit for bit.
- The loss surface (Fig. 1, 2, 4) is log10 of the squared error, floored at 1e-30 so an exact
  fit stays finite; the run hands replica 0's surface to the final report as an artifact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from trainables import artifacts, engine
from trainables.config import ExperimentConfig, require
from trainables.data import Sampler, Split, stack
from trainables.nn import NetworkConfig, ReplicaMLP, replica_generators

Operation = Literal["add", "multiply"]
Domain = Literal["disc", "annulus", "normal"]
EXTENT = 1.5  # the evaluation square [-1.5, 1.5]² of Table 1 and Fig. 1
ERROR_FLOOR = 1e-30


@dataclass(frozen=True)
class DataConfig(ExperimentConfig):
    """The arithmetic data sets; shared with the `gp` experiment so both see the same points."""

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


@dataclass(frozen=True)
class Config(NetworkConfig, engine.TrainingConfig, DataConfig):
    fresh_batches: bool = False
    """draw a new batch of batch_size points every step ("D → ∞", §3.2) instead of train_points"""
    batch_size: int = 256
    """points per step when fresh_batches is true (§3.2: 256)"""
    symmetrise: bool = False
    """train f_sym(x) = (f(x1, x2) + f(x2, x1)) / 2, commutative by construction (A.2.4)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)


# --- data -----------------------------------------------------------------------------------------


def sample_inputs(gen: torch.Generator, n: int, domain: Domain) -> Tensor:
    """n points [n, 2] uniform on the disc or annulus (A.1's polar recipe), or standard normal."""
    if domain == "normal":
        return torch.randn(n, 2, generator=gen)
    theta = torch.rand(n, generator=gen) * (2 * math.pi)
    low = 0.25 if domain == "annulus" else 0.0  # r² ~ U(low, 1) makes the density uniform in area
    r = torch.sqrt(low + (1 - low) * torch.rand(n, generator=gen))
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)


def target(x: Tensor, operation: Operation) -> Tensor:
    """y [..., 1] for inputs x [..., 2]."""
    y = x[..., 0] + x[..., 1] if operation == "add" else x[..., 0] * x[..., 1]
    return y.unsqueeze(-1)


def _sample(gen: torch.Generator, n: int, *, domain: Domain, operation: Operation):
    x = sample_inputs(gen, n, domain)
    return x, target(x, operation)


def domain_sampler(domain: Domain, operation: Operation) -> Sampler:
    return partial(_sample, domain=domain, operation=operation)


def grid_axis(grid_size: int, extent: float = EXTENT) -> Tensor:
    return torch.linspace(-extent, extent, grid_size)


def grid_points(grid_size: int, extent: float = EXTENT) -> Tensor:
    """[G², 2] with x1 varying fastest: point i·G + j is (axis[j], axis[i])."""
    axis = grid_axis(grid_size, extent)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def make_data(cfg: DataConfig) -> dict[str, Split]:
    """Train and test [R, N, 2] from the domain, and the evaluation grid [R, G², 2] (shared)."""
    gens = replica_generators(cfg.seeds, "data")
    sampler = domain_sampler(cfg.domain, cfg.operation)
    grid = grid_points(cfg.grid_size).expand(cfg.replicas, -1, -1)
    return {
        "train": stack(sampler, gens, cfg.train_points),
        "test": stack(sampler, gens, cfg.test_points),
        "grid": Split(grid, target(grid, cfg.operation)),
    }


# --- regions --------------------------------------------------------------------------------------


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
def evaluate(model: nn.Module, splits: Mapping[str, Split], domain: str) -> dict[str, Tensor]:
    """train_mse, test_mse, ood_mse and, for the annulus, hole_mse, ring_mse, outside_mse [R]."""
    out = engine.split_metrics(
        model, {k: splits[k] for k in ("train", "test")}, {"mse": engine.mse}
    )
    grid = splits["grid"]
    err = (model(grid.x) - grid.y).pow(2)[..., 0]
    out.update(region_means(err, grid.x[0], domain))
    return out


def log_squared_error(pred: Tensor, y: Tensor) -> Tensor:
    return torch.log10((pred - y).double().pow(2).clamp_min(ERROR_FLOOR))


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


def surface_plot(model: nn.Module, splits: Mapping[str, Split], cfg: Config) -> dict[str, Any]:
    axis, z = loss_surface(model, cfg.operation, cfg.grid_size)
    points = None
    if not cfg.fresh_batches:
        train = splits["train"].x[0].cpu()
        points = {"x": train[:, 0].tolist(), "y": train[:, 1].tolist()}
    title = f"log10 squared error, {cfg.operation} on the {cfg.domain} (replica 0)"
    surface = artifacts.surface(
        axis.tolist(), axis.tolist(), z[0].numpy(), title=title, z_label="log10 error",
        points=points,
    )  # fmt: skip
    return {"loss_surface": surface}


def run(
    config: Mapping[str, Any], report: engine.Reporter = engine.no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    dev = engine.pick_device(device)
    splits = {k: v.to(dev) for k, v in make_data(cfg).items()}
    model = make_model(cfg).to(dev)
    if cfg.fresh_batches:
        sampler = domain_sampler(cfg.domain, cfg.operation)
        batches = engine.fresh_samples(sampler, cfg.batch_size, cfg.seeds, dev)
    else:
        batches = engine.full_batch(splits["train"])
    outcome = engine.train(
        model,
        batches,
        engine.mse,
        partial(evaluate, splits=splits, domain=cfg.domain),
        cfg.schedule,
        report,
        artifacts=partial(surface_plot, splits=splits, cfg=cfg),
    )
    return outcome.metrics
