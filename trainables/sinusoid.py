"""Sinusoid regression (paper 000 §3.3, Fig. 3 bottom): a tanh net with σ-normalised weights.

y = sin(x) + ε on [-2π, 2π]; o.o.d. on [-3π, -2π] ∪ [2π, 3π]. Small σ⁻¹ (large weights) fits
the noise, large σ⁻¹ (small weights) underfits: test MSE against σ⁻¹ has an interior optimum, as
test MSE against λ does for the GP (`gp` experiment, same data for the same seed).

Target metric: test_mse. One run: `smoothsweep train sinusoid --set sigma_inv=1.0`.
The paper does not give the number of training points; 100 keeps the noise visible against a
width-1000 net (the regime where the optimum is interior), and the test set is large so that the
curve's noise comes from the models, not from the evaluation. Training is full batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from trainables import artifacts, engine
from trainables.config import ExperimentConfig, require
from trainables.data import Split, sinusoid_sampler, stack
from trainables.nn import NetworkConfig, ReplicaMLP, replica_generators


@dataclass(frozen=True)
class DataConfig(ExperimentConfig):
    """The sinusoid data set; shared with the `gp` experiment so both see the same points."""

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


@dataclass(frozen=True)
class Config(NetworkConfig, engine.TrainingConfig, DataConfig):
    pass


def make_data(cfg: DataConfig) -> dict[str, Split]:
    """Train, test and o.o.d. splits, [R, N, 1] each; replica r's data depends only on seed + r."""
    gens = replica_generators(cfg.seeds, "data")
    region = sinusoid_sampler(cfg.noise_std, "in")
    return {
        "train": stack(region, gens, cfg.train_points),
        "test": stack(region, gens, cfg.test_points),
        "ood": stack(sinusoid_sampler(cfg.noise_std, "ood"), gens, cfg.ood_points),
    }


def evaluate(model: ReplicaMLP, splits: Mapping[str, Split]) -> dict[str, Any]:
    return engine.split_metrics(model, splits, {"mse": engine.mse})


def fit_plot(model: ReplicaMLP, splits: Mapping[str, Split]) -> dict[str, Any]:
    """Replica 0's learned function against sin(x) and its training points, on [-3π, 3π]."""
    x = torch.linspace(-3 * math.pi, 3 * math.pi, 400, device=splits["train"].x.device)
    pred = model(x.view(1, -1, 1).expand(model.replicas, -1, 1))[0, :, 0]
    train = splits["train"]
    return {
        "fit": artifacts.curves(
            {
                "network (replica 0)": (x.tolist(), pred.tolist()),
                "sin(x)": (x.tolist(), torch.sin(x).tolist()),
                "training points": (train.x[0, :, 0].tolist(), train.y[0, :, 0].tolist()),
            },
            title="learned function", x_label="x", y_label="y", markers=["training points"],
        )
    }  # fmt: skip


def run(
    config: Mapping[str, Any], report: engine.Reporter = engine.no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    return engine.train_full_batch(
        cfg, cfg.make_mlp(1, 1), make_data(cfg), engine.mse, evaluate, report, device, fit_plot
    )
