"""Double-spiral classification (paper 004 ch. 2.3, 4): entanglement against width and σ⁻¹.

Two Archimedean spirals r = ±bφ, φ ∈ [φ_min, entanglement]; harder to separate as the entanglement
(φ_max) grows. An MLP of given depth and width, tanh or ReLU, plain or σ-normalised (which joins
this data set with paper 000's length scale), softmax / cross-entropy.
Metrics: train/test accuracy and loss, each layer's weight statistics (`probes.weight_statistics`:
Frobenius norm, the thesis's hypothesis 1: the norm grows with the data's complexity; singular
values and their condition number; for square layers the eigenvalue moduli, hypothesis 2: their
mean, max and min, the spread |λ|max − |λ|min of Fig. 4.6 and the thesis's condition number
|λ|max / |λ|min of App. D) and fraction of exactly-zero weight gradients (Fig. 4.8), and at the
final evaluation the test accuracy under noise, FGSM and BIM (thesis ch. 4.3;
`trainables.robustness`, shared with `digits_robustness`). Data: `trainables.data.spiral`.

Target metric: test_acc (max). One run: `smoothsweep train spiral --set entanglement=12.57`.

The thesis's own configuration is the spec `spiral_thesis`: plain (`normalise=false`) nets of 5
hidden layers of 50, tanh and ReLU, arms 2 apart (its ch. 4.3), φ_max = 2π, 4π, 8π, all trained
alike. Only a plain net can show hypothesis 1: σ-normalisation (the default, and the `spiral` spec,
which searches σ⁻¹) rescales every layer to std σ/√n_in, pinning its norm at ≈ σ·√n_out whatever
the data.

Choices the thesis leaves open, and what we do:
- optimiser, learning rate, schedule, batch size, epochs, data sizes: the thesis trains
  mini-batches for epochs and names none of them. The defaults here train full batch (`batch_size`
  0) with Adam and paper 000's decay, which converges on these sizes; `spiral_thesis` uses
  mini-batches of 100 with Adam at a constant 3e-3 (no schedule is named), 300 epochs of 1000
  points, which fits φ_max = 8π (mean test accuracy 0.93 tanh, 0.98 ReLU). Replicas stay
  independent either way: each draws its batches from its own seed.
- φ_min: only "some φ_min > 0" (Fig. 3.1); 0.5. The φ_max of Fig. 4.4 are not in the text.
- distance: its eq. 2.7 is the shortest distance between the two arms; we set the radial gap
  between neighbouring arms (πb), which that distance approaches as the arms wind outwards.
- random noise (ch. 4.3.1): the thesis shifts each test point by a bounded random amount per axis;
  we add Gaussian noise of std `noise_stds`.
- "vanishing gradients" (ch. 4.2, Fig. 4.8): the fraction of weight-gradient entries exactly 0,
  per layer, on the training batch of each evaluation step.
- the eigenvalues are those of W as the forward pass uses it ([n_in, n_out], the transpose of
  PyTorch's Linear weight: the same eigenvalues); only square (hidden-to-hidden) layers have them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch

from trainables import artifacts, engine, probes, robustness
from trainables.config import PerReplica, require
from trainables.data import Split, stack
from trainables.data.spiral import spiral, spiral_embedding
from trainables.nn import NetworkConfig, ReplicaMLP, replica_generators
from trainables.report import Metric, Reporter, declare, no_report
from trainables.robustness import RobustnessConfig

CLASSES = 2


@dataclass(frozen=True)
class Config(NetworkConfig, engine.TrainingConfig, RobustnessConfig):
    width: int = 64
    depth: int = 2
    lr: PerReplica[float] = 1e-2
    entanglement: float = 3 * math.pi
    """φ_max: how far the spirals wind (3π is one and a half turns)"""
    phi_min: float = 0.5
    """φ_min: start of the arms, away from the crowded origin"""
    distance: float = 1.0
    """gap between neighbouring arms of the two spirals"""
    codimension: int = 0
    """extra dimensions the plane is embedded into by a fixed random isometry"""
    noise: float = 0.0
    """std of Gaussian noise added to the inputs"""
    train_points: int = 1000
    """training points per replica (half per class)"""
    test_points: int = 1000
    """test points per replica"""
    batch_size: int = 0
    """mini-batch size, drawn with replacement per replica; 0 trains full batch"""
    noise_stds: tuple[float, ...] = (0.1, 0.3)
    fgsm_eps: tuple[float, ...] = (0.05, 0.1, 0.2)
    bim_eps: tuple[float, ...] = (0.05, 0.1, 0.2)

    objective: ClassVar[str] = "test_acc"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.entanglement > self.phi_min, "entanglement", "> phi_min", self.entanglement)
        require(self.distance > 0, "distance", "> 0", self.distance)
        require(self.codimension >= 0, "codimension", ">= 0", self.codimension)
        for name in ("train_points", "test_points"):
            n = getattr(self, name)
            require(n > 0 and n % 2 == 0, name, "even and > 0 (two balanced classes)", n)
        require(self.batch_size >= 0, "batch_size", ">= 0 (0 = full batch)", self.batch_size)

    @property
    def input_dim(self) -> int:
        return 2 + self.codimension

    @property
    def layer_sizes(self) -> list[int]:
        return [self.input_dim, *[self.width] * self.depth, CLASSES]

    def metrics(self) -> dict[str, Metric]:
        layers = []  # per layer: `probes.weight_statistics` and `probes.zero_gradient_fraction`
        sizes = self.layer_sizes
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            square = probes.EIGEN_STATISTICS if n_in == n_out else ()
            layers += [f"{m}_l{i}" for m in (*probes.MATRIX_STATISTICS, *square, "zero_grad")]
        return {
            **declare(
                minimise=["train_loss", "test_loss"],
                maximise=["train_acc", "test_acc"],
                diagnostics=layers,
            ),  # fmt: skip
            **self.robustness_metrics(),
        }


def make_data(cfg: Config) -> dict[str, Split]:
    """Train and test splits: x [R, N, 2 + codimension], labels [R, N]."""
    gens = replica_generators(cfg.seeds, "data")
    sampler = partial(
        spiral,
        entanglement=cfg.entanglement,
        phi_min=cfg.phi_min,
        distance=cfg.distance,
        codimension=cfg.codimension,
        noise=cfg.noise,
        embedding=spiral_embedding(cfg.codimension) if cfg.codimension else None,
    )
    return {
        "train": stack(sampler, gens, cfg.train_points),
        "test": stack(sampler, gens, cfg.test_points),
    }


def make_model(cfg: Config) -> ReplicaMLP:
    return cfg.make_mlp(cfg.input_dim, CLASSES)


@torch.no_grad()
def evaluate(model: ReplicaMLP, data: engine.Data) -> engine.Measured:
    """Accuracy and loss per split, and each layer's weight statistics (thesis ch. 4.1)."""
    splits = {k: data[k] for k in ("train", "test")}
    metrics = engine.split_metrics(
        model, splits, {"acc": engine.accuracy, "loss": engine.cross_entropy}
    )
    metrics.update(probes.weight_statistics(model.effective_weights()))
    return metrics


def gradient_sparsity(model: ReplicaMLP) -> engine.Measured:
    """Each layer's fraction of exactly-zero weight gradients (dead ReLU units)."""
    return probes.zero_gradient_fraction(model.layers)


@torch.no_grad()
def boundary_plot(model: ReplicaMLP, test: Split, replica: int = 0) -> dict[str, Any]:
    """One replica's P(class 1) over the plane with its test points (only without codimension)."""
    if test.x.shape[-1] != 2:
        return {}
    r = replica
    lim = float(test.x[r].abs().max()) * 1.1
    axis = torch.linspace(-lim, lim, 80, device=test.x.device)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    logits = model(grid.expand(model.replicas, -1, -1))[r]
    prob = torch.softmax(logits, dim=-1)[:, 1].view(80, 80)
    points = {"x": test.x[r, :, 0], "y": test.x[r, :, 1], "c": test.y[r].double()}
    return {
        "decision_boundary": artifacts.surface(
            axis.tolist(), axis.tolist(), prob.tolist(), title=f"P(class 1), replica {r}",
            z_label="P(class 1)", points={k: v.tolist() for k, v in points.items()},
        )
    }  # fmt: skip


def plots(
    model: ReplicaMLP, data: engine.Data, final: engine.Measured, replica: int, cfg: Config
) -> dict[str, Any]:
    """One replica's decision boundary, and its test accuracy against noise std and ε."""
    label = robustness.replica_label(cfg, replica)
    title = f"test accuracy ({cfg.activation})"
    return {
        **boundary_plot(model, data["test"], replica),
        **robustness.curves(cfg, final, replica, label=label, title=title),
    }


def make_task(cfg: Config) -> engine.Task:
    return engine.Task(
        make_model(cfg),
        make_data(cfg),
        engine.cross_entropy,
        evaluate,
        batches=engine.Minibatches(cfg.batch_size) if cfg.batch_size else engine.FullBatch(),
        grad_probe=gradient_sparsity,
        final_evaluate=partial(robustness.evaluate, cfg=cfg),
        artifacts=partial(plots, cfg=cfg),
    )


def run(
    config: Mapping[str, Any], report: Reporter = no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    return engine.run(cfg, make_task(cfg), report, device)
