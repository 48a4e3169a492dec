"""Double-spiral classification (paper 004 ch. 2.3, 4): entanglement against width and σ⁻¹.

Two Archimedean spirals r = ±bφ, φ ∈ [φ_min, entanglement]; harder to separate as the entanglement
(φ_max) grows. An MLP of given depth and width, tanh or ReLU, plain or σ-normalised (which joins
this data set with paper 000's length scale), softmax / cross-entropy.
Metrics: train/test accuracy and loss, and each layer's Frobenius norm (the thesis's hypothesis 1:
the norm grows with the data's complexity).

Target metric: test_acc (max). One run: `smoothsweep train spiral --set entanglement=12.57`.
The thesis trains with mini-batches and leaves the schedule open; full-batch Adam with the paper-000
decay converges on these sizes and keeps replicas exactly independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch

from trainables import artifacts, attacks, engine, probes
from trainables.config import require
from trainables.data import Split, spiral, spiral_embedding, stack
from trainables.nn import NetworkConfig, ReplicaMLP, replica_generators


@dataclass(frozen=True)
class Config(NetworkConfig, engine.TrainingConfig):
    width: int = 64
    depth: int = 2
    lr: float = 1e-2
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

    noise_stds: tuple[float, ...] = (0.1, 0.3)
    """input-noise std values for noise_acc_<std> (final evaluation)"""
    fgsm_eps: tuple[float, ...] = (0.05, 0.1, 0.2)
    """L∞ sizes for fgsm_acc_<eps> (final evaluation)"""
    bim_eps: tuple[float, ...] = (0.05, 0.1, 0.2)
    """L∞ sizes for bim_acc_<eps>: iterative FGSM, step 0.5·ε, clipped to the ε-ball"""
    bim_steps: int = 10
    """iterations of BIM"""

    objective: ClassVar[str] = "test_acc"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.entanglement > self.phi_min, "entanglement", "> phi_min", self.entanglement)
        require(self.distance > 0, "distance", "> 0", self.distance)
        require(self.codimension >= 0, "codimension", ">= 0", self.codimension)
        for name in ("train_points", "test_points"):
            n = getattr(self, name)
            require(n > 0 and n % 2 == 0, name, "even and > 0 (two balanced classes)", n)
        for name in ("noise_stds", "fgsm_eps", "bim_eps"):
            values = getattr(self, name)
            require(all(v >= 0 for v in values), name, "a list of values >= 0", list(values))
        require(self.bim_steps >= 1, "bim_steps", ">= 1", self.bim_steps)

    @property
    def input_dim(self) -> int:
        return 2 + self.codimension


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
    return cfg.make_mlp(cfg.input_dim, 2)


@torch.no_grad()
def evaluate(model: ReplicaMLP, splits: Mapping[str, Split]) -> dict[str, torch.Tensor]:
    """Accuracy and loss per split, and each layer's weight statistics (thesis ch. 4.1)."""
    metrics = engine.split_metrics(
        model, splits, {"acc": engine.accuracy, "loss": engine.cross_entropy}
    )
    metrics.update(probes.weight_statistics(model.effective_weights()))
    return metrics


def robustness(model: ReplicaMLP, test: Split, cfg: Config) -> dict[str, torch.Tensor]:
    """Test accuracy under input noise, FGSM and BIM at every configured size (thesis ch. 4.3)."""
    noise = attacks.noise_attack(replica_generators(cfg.seeds, "noise"))
    bim = partial(attacks.bim, steps=cfg.bim_steps)
    out = {}
    for prefix, attack, sizes, clean in (
        ("noise_acc", noise, cfg.noise_stds, False),
        ("fgsm_acc", attacks.fgsm, cfg.fgsm_eps, True),
        ("bim_acc", bim, cfg.bim_eps, True),
    ):
        accs = attacks.robust_accuracy(model, test.x, test.y, attack, sizes, require_clean=clean)
        out.update({f"{prefix}_{eps:g}": acc for eps, acc in accs.items()})
    return out


@torch.no_grad()
def boundary_plot(model: ReplicaMLP, splits: Mapping[str, Split]) -> dict[str, Any]:
    """Replica 0's P(class 1) over the plane with its test points (only without codimension)."""
    test = splits["test"]
    if test.x.shape[-1] != 2:
        return {}
    lim = float(test.x[0].abs().max()) * 1.1
    axis = torch.linspace(-lim, lim, 80, device=test.x.device)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    logits = model(grid.expand(model.replicas, -1, -1))[0]
    prob = torch.softmax(logits, dim=-1)[:, 1].view(80, 80)
    points = {"x": test.x[0, :, 0], "y": test.x[0, :, 1], "c": test.y[0].double()}
    return {
        "decision_boundary": artifacts.surface(
            axis.tolist(), axis.tolist(), prob.tolist(), title="P(class 1), replica 0",
            z_label="P(class 1)", points={k: v.tolist() for k, v in points.items()},
        )
    }  # fmt: skip


def run(
    config: Mapping[str, Any], report: engine.Reporter = engine.no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    dev = engine.pick_device(device)
    splits = {k: v.to(dev) for k, v in make_data(cfg).items()}
    model = make_model(cfg).to(dev)
    outcome = engine.train(
        model,
        engine.full_batch(splits["train"]),
        engine.cross_entropy,
        partial(evaluate, splits=splits),
        cfg.schedule,
        report,
        grad_probe=lambda m: probes.zero_gradient_fraction(m.layers),
        final_evaluate=partial(robustness, test=splits["test"], cfg=cfg),
        artifacts=partial(boundary_plot, splits=splits),
    )
    return outcome.metrics
