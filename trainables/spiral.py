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
from typing import Any, ClassVar, Literal

import torch

from trainables import engine
from trainables.config import ExperimentConfig, require
from trainables.data import Split, spiral, spiral_embedding, stack
from trainables.nn import ReplicaMLP, replica_generators


@dataclass(frozen=True)
class Config(ExperimentConfig):
    width: int = 64
    """hidden units per layer"""
    depth: int = 2
    """hidden layers"""
    activation: Literal["tanh", "relu"] = "tanh"
    """hidden non-linearity"""
    normalise: bool = True
    """σ-normalise the weights (paper 000 eq. 7); false trains a plain MLP"""
    sigma_inv: float = 1.0
    """length scale σ⁻¹ (used when normalise is true)"""
    bias_norm: bool = True
    """normalise hidden biases and scale the output bias by σ"""
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
    lr: float = 1e-2
    """Adam learning rate"""
    lr_decay: float = 0.9
    """multiply the learning rate by this every decay_every steps"""
    decay_every: int = 500
    """steps between learning-rate decays"""
    steps: int = 3000
    """full-batch optimizer steps"""
    eval_every: int = 500
    """steps between evaluations"""

    objective: ClassVar[str] = "test_acc"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.width >= 1, "width", ">= 1", self.width)
        require(self.depth >= 1, "depth", ">= 1", self.depth)
        require(self.sigma_inv > 0, "sigma_inv", "> 0", self.sigma_inv)
        require(self.entanglement > self.phi_min, "entanglement", "> phi_min", self.entanglement)
        require(self.distance > 0, "distance", "> 0", self.distance)
        require(self.codimension >= 0, "codimension", ">= 0", self.codimension)
        require(self.train_points % 2 == 0, "train_points", "even", self.train_points)
        require(self.test_points % 2 == 0, "test_points", "even", self.test_points)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.steps >= 1, "steps", ">= 1", self.steps)

    @property
    def input_dim(self) -> int:
        return 2 + self.codimension

    @property
    def schedule(self) -> engine.Schedule:
        return engine.Schedule(
            steps=self.steps,
            lr=self.lr,
            lr_decay=self.lr_decay,
            decay_every=self.decay_every,
            eval_every=self.eval_every,
        )


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
    return ReplicaMLP(
        [cfg.input_dim, *[cfg.width] * cfg.depth, 2],
        replica_generators(cfg.seeds, "init"),
        activation=cfg.activation,
        sigma_inv=cfg.sigma_inv if cfg.normalise else None,
        bias_norm=cfg.bias_norm,
    )


@torch.no_grad()
def evaluate(model: ReplicaMLP, splits: Mapping[str, Split]) -> dict[str, torch.Tensor]:
    metrics = engine.split_metrics(
        model, splits, {"acc": engine.accuracy, "loss": engine.cross_entropy}
    )
    for i, w in enumerate(model.effective_weights()):
        metrics[f"fro_norm_l{i}"] = torch.linalg.matrix_norm(w, ord="fro")
    return metrics


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
    )
    return outcome.metrics
