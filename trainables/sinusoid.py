"""Sinusoid regression (paper 000 §3.3, Fig. 3 bottom): a tanh net with σ-normalised weights.

y = sin(x) + ε on [-2π, 2π]; o.o.d. on [-3π, -2π] ∪ [2π, 3π]. Small σ⁻¹ (large weights) fits
the noise, large σ⁻¹ (small weights) underfits: test MSE against σ⁻¹ has an interior optimum, as
test MSE against λ does for the GP (`gp` experiment, same data for the same seed).

Target metric: test_mse. One run: `smoothsweep train sinusoid --set sigma_inv=1.0`.
The paper does not give the number of training points; 100 keeps the noise visible against a
width-1000 net (the regime where the optimum is interior), and the test set is large so that the
curve's noise comes from the models, not from the evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from trainables import engine
from trainables.config import ExperimentConfig, require
from trainables.data import Split, sinusoid_sampler, stack
from trainables.nn import ReplicaMLP, replica_generators


@dataclass(frozen=True)
class Config(ExperimentConfig):
    width: int = 1000
    """hidden units per layer"""
    depth: int = 1
    """hidden layers (1 = the paper's two-layer network)"""
    sigma_inv: float = 1.0
    """length scale σ⁻¹: weights are rescaled to std σ/√fan_in in every forward pass"""
    activation: Literal["tanh", "relu"] = "tanh"
    """tanh gives the GP correspondence; relu is the paper's contrast"""
    normalise: bool = True
    """σ-normalise the weights (eq. 7); false trains a plain MLP and ignores sigma_inv"""
    bias_norm: bool = True
    """normalise hidden biases and scale the output bias by σ, as the paper's code does"""
    lr: float = 1e-3
    """Adam learning rate"""
    lr_decay: float = 0.9
    """multiply the learning rate by this every decay_every steps"""
    decay_every: int = 500
    """steps between learning-rate decays (the paper's code: 500)"""
    steps: int = 3000
    """full-batch optimizer steps (the paper trains 50,000; the specs' profiles set it)"""
    eval_every: int = 500
    """steps between evaluations (each one is a report to the scheduler)"""
    train_points: int = 100
    """training points per replica"""
    test_points: int = 2000
    """test points per replica, from the training region"""
    ood_points: int = 2000
    """o.o.d. points per replica, from 2π < |x| ≤ 3π"""
    noise_std: float = 0.25
    """std of the Gaussian label noise ε"""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.width >= 1, "width", ">= 1", self.width)
        require(self.depth >= 1, "depth", ">= 1", self.depth)
        require(self.sigma_inv > 0, "sigma_inv", "> 0", self.sigma_inv)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.steps >= 1, "steps", ">= 1", self.steps)
        require(self.eval_every >= 1, "eval_every", ">= 1", self.eval_every)
        require(self.train_points >= 1, "train_points", ">= 1", self.train_points)
        require(self.noise_std >= 0, "noise_std", ">= 0", self.noise_std)

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
    """Train, test and o.o.d. splits, [R, N, 1] each; replica r's data depends only on seed + r."""
    gens = replica_generators(cfg.seeds, "data")
    region = sinusoid_sampler(cfg.noise_std, "in")
    return {
        "train": stack(region, gens, cfg.train_points),
        "test": stack(region, gens, cfg.test_points),
        "ood": stack(sinusoid_sampler(cfg.noise_std, "ood"), gens, cfg.ood_points),
    }


def make_model(cfg: Config) -> ReplicaMLP:
    return ReplicaMLP(
        [1, *[cfg.width] * cfg.depth, 1],
        replica_generators(cfg.seeds, "init"),
        activation=cfg.activation,
        sigma_inv=cfg.sigma_inv if cfg.normalise else None,
        bias_norm=cfg.bias_norm,
    )


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
        engine.mse,
        lambda m: engine.split_metrics(m, splits, {"mse": engine.mse}),
        cfg.schedule,
        report,
    )
    return outcome.metrics
