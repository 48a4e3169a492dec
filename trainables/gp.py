"""Gaussian-process regression with an RBF kernel (paper 000 Fig. 1-3, Table 1): the GP side.

scikit-learn's GaussianProcessRegressor with a zero mean, an RBF kernel of length scale λ, fixed or
fitted by maximum likelihood, optionally times a fitted amplitude C (the paper's public code fits C;
with a plain RBF and λ large the result is set by the numerical nugget, not by the model).

Data: the sinusoid data set, drawn by `trainables.sinusoid.make_data`, so that a GP and a network
with the same seed see the same points and the two curves (error vs λ, error vs σ⁻¹) are comparable.
Target metric: test_mse. One run: `smoothsweep train gp --set length_scale=1.5`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, Product

from trainables import engine, sinusoid
from trainables.config import require


@dataclass(frozen=True)
class Config(sinusoid.DataConfig):
    length_scale: float = 1.0
    """RBF length scale λ (the starting point when fit_length_scale is true)"""
    fit_length_scale: bool = False
    """fit λ by maximising the log marginal likelihood instead of holding it fixed"""
    fit_amplitude: bool = False
    """use C·RBF with the amplitude C fitted by maximum likelihood"""
    alpha: float | None = None
    """noise variance added to the kernel's diagonal; None means noise_std² (the true noise)"""
    dataset: Literal["sinusoid"] = "sinusoid"
    """which regression data set (more arrive with the addition experiment)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.length_scale > 0, "length_scale", "> 0", self.length_scale)
        require(self.alpha is None or self.alpha > 0, "alpha", "> 0 or null", self.alpha)

    @property
    def noise_variance(self) -> float:
        return self.alpha if self.alpha is not None else max(self.noise_std**2, 1e-10)


def make_data(cfg: Config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The sinusoid splits as numpy arrays [R, N, 1]; identical to the network's for a seed."""
    splits = sinusoid.make_data(cfg)
    return {k: (s.x.double().numpy(), s.y.double().numpy()) for k, s in splits.items()}


def make_kernel(cfg: Config) -> Kernel:
    bounds = (1e-3, 1e3) if cfg.fit_length_scale else "fixed"
    kernel = RBF(length_scale=cfg.length_scale, length_scale_bounds=bounds)
    if cfg.fit_amplitude:
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * kernel
    return kernel


def fit_one(cfg: Config, x: np.ndarray, y: np.ndarray) -> GaussianProcessRegressor:
    fits = cfg.fit_length_scale or cfg.fit_amplitude
    gp = GaussianProcessRegressor(
        make_kernel(cfg),
        alpha=cfg.noise_variance,
        optimizer="fmin_l_bfgs_b" if fits else None,
        normalize_y=False,  # the paper's GP has a zero mean function
    )
    return gp.fit(x, y.ravel())


def fitted_length_scale(gp: GaussianProcessRegressor) -> float:
    kernel = gp.kernel_
    rbf = kernel.k2 if isinstance(kernel, Product) else kernel
    return float(rbf.length_scale)


def run(
    config: Mapping[str, Any], report: engine.Reporter = engine.no_report, device: str | None = None
) -> dict[str, Any]:
    """Fit one GP per replica; report once (step 1) with the mean and per-replica metrics."""
    cfg = Config.from_mapping(config)
    data = make_data(cfg)
    per_replica: dict[str, list[float]] = {}
    for r in range(cfg.replicas):
        gp = fit_one(cfg, *(a[r] for a in data["train"]))
        values = {"log_marginal_likelihood": float(gp.log_marginal_likelihood_value_)}
        values["length_scale_fit"] = fitted_length_scale(gp)
        for split, (x, y) in data.items():
            mean, std = gp.predict(x[r], return_std=True)
            values[f"{split}_mse"] = float(np.mean((mean - y[r].ravel()) ** 2))
            values[f"{split}_std"] = float(np.mean(std))
        for k, v in values.items():
            per_replica.setdefault(k, []).append(v)
    metrics = engine.summarise({k: torch.tensor(v) for k, v in per_replica.items()})
    metrics["diverged"] = 0.0 if all(math.isfinite(v) for v in metrics.values()) else 1.0
    report(1, metrics)
    return metrics
