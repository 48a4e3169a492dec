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
from trainables.data import Split
from trainables.data.regression import SinusoidData, sinusoid_splits
from trainables.nn import NetworkConfig, ReplicaMLP
from trainables.report import Metric, Reporter, declare, no_report


@dataclass(frozen=True)
class Config(NetworkConfig, engine.TrainingConfig, SinusoidData):
    def metrics(self) -> dict[str, Metric]:
        return declare(minimise=["train_mse", "test_mse", "ood_mse", "test_mse_clean",
                                 "ood_mse_clean"])  # fmt: skip


def make_data(cfg: Config) -> dict[str, Split]:
    return sinusoid_splits(cfg)


def make_model(cfg: Config) -> ReplicaMLP:
    return cfg.make_mlp(1, 1)


@torch.no_grad()
def evaluate(model: ReplicaMLP, data: engine.Data) -> engine.Measured:
    """MSE against the noisy labels per split, and against sin(x) itself (`_clean`: the error
    paper 000's figures show, free of the label-noise floor) on the test and o.o.d. points."""
    splits = {k: data[k] for k in ("train", "test", "ood")}
    out = engine.split_metrics(model, splits, {"mse": engine.mse})
    for name in ("test", "ood"):
        x = data[name].x
        out[f"{name}_mse_clean"] = engine.mse(model(x), torch.sin(x))
    return out


def fit_plot(
    model: ReplicaMLP, data: engine.Data, final: engine.Measured, replica: int
) -> dict[str, Any]:
    """One replica's learned function against sin(x) and its training points, on [-3π, 3π]."""
    x = torch.linspace(-3 * math.pi, 3 * math.pi, 400, device=data["train"].x.device)
    pred = model(x.view(1, -1, 1).expand(model.replicas, -1, 1))[replica, :, 0]
    train = data["train"].x[replica, :, 0], data["train"].y[replica, :, 0]
    return {
        "fit": artifacts.curves(
            {
                "network": (x.tolist(), pred.tolist()),
                "sin(x)": (x.tolist(), torch.sin(x).tolist()),
                "training points": (train[0].tolist(), train[1].tolist()),
            },
            title="learned function", x_label="x", y_label="y", markers=["training points"],
        )
    }  # fmt: skip


def make_task(cfg: Config) -> engine.Task:
    return engine.Task(make_model(cfg), make_data(cfg), engine.mse, evaluate, artifacts=fit_plot)


def run(
    config: Mapping[str, Any], report: Reporter = no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    return engine.run(cfg, make_task(cfg), report, device)
