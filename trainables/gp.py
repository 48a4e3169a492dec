"""Gaussian-process regression with an RBF kernel (paper 000 Fig. 1-3, Table 1): the GP side.

scikit-learn's GaussianProcessRegressor with a zero mean, an RBF kernel of length scale λ, fixed or
fitted by maximum likelihood, optionally times a fitted amplitude C (the paper's public code fits C;
with a plain RBF and λ large the result is set by the numerical nugget, not by the model).

Data: every regression data set of the paper, drawn by the functions the network experiments use
(`trainables.data.regression`: `sinusoid_splits`, `arithmetic_splits`), so that a GP and a network
with the same seed and point counts see the same points and the two curves (error vs λ, error vs
σ⁻¹) are comparable. `dataset` picks one: "sinusoid" (§3.3), "addition_{disc,annulus,normal}" (§3.1,
§3.2, A.2.3) or "multiplication_{disc,annulus,normal}" (A.2.5).
Target metric: test_mse. One run: `smoothsweep train gp --set length_scale=1.5`.

Choices the paper leaves open, and what we do:
- Metrics per replica: {train,test}_mse and {train,test}_std (mean predictive std), the log
  marginal likelihood, the fitted λ (and C with fit_amplitude). For the sinusoid, ood_* is on
  `ood_points` random points with 2π < |x| ≤ 3π. For the arithmetic sets, ood_* (and, on the
  annulus, hole_*, ring_*, outside_*) are means over the same [-1.5, 1.5]² grid and regions as the
  `addition` experiment (`grid_size`² points; `ood_points` is unused there), and replica 0's
  log-loss surface on that grid is handed to the final report (Fig. 1 bottom, Fig. 2).
- `length_scale`, like `seed`, may be one value per replica: replica r fits with its own λ,
  exactly as it would alone (so trials of a λ sweep can share one run, as networks' trials do).
- Noise: `alpha` None means the true noise variance, noise_std² for the sinusoid; the arithmetic
  sets are noiseless, so there it means scikit-learn's default nugget 1e-10 (Table 1's training
  errors of ~1e-14 need a nugget that small). `noise_std` affects the sinusoid only.
- `train_points` defaults to the sinusoid's 100; the specs set the paper's D = 128 (disc) or
  D = 256 (annulus, Fig. 2). λ by maximum likelihood is bounded to [1e-3, 1e3], C to [1e-5, 1e5].
  On the disc (D = 128) ML with a plain RBF (C = 1) finds λ ≈ 3; fitting C too (C ≈ 1e3-1e4)
  finds λ ≈ 60-130, nearer the paper's "λ ~ 150", which we read as coming from the fitted C.
  With λ held fixed and λ ≳ 5, the 1e-10 nugget makes the likelihood so ill-conditioned that
  L-BFGS may stop at C = 1: fit_amplitude then changes nothing (see `amplitude_fit`).
- A kernel matrix that is not positive definite (Cholesky fails, e.g. λ ≫ 1 with a tiny nugget)
  ends the trial as "diverged" with the reason naming the replica and its λ, like a diverging
  network, not as a crash; so does a non-finite metric. There is no training: the run reports
  once, at step 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, Product

from trainables import artifacts
from trainables.config import PerReplica, require
from trainables.data.regression import (
    ERROR_FLOOR,
    ArithmeticData,
    SinusoidData,
    arithmetic_splits,
    grid_axis,
    region_means,
    regions,
    sinusoid_splits,
)
from trainables.report import DIVERGED, Metric, Reporter, declare, diverged, no_report, summarise

Dataset = Literal[
    "sinusoid",
    "addition_disc",
    "addition_annulus",
    "addition_normal",
    "multiplication_disc",
    "multiplication_annulus",
    "multiplication_normal",
]
SKLEARN_NUGGET = 1e-10
AMPLITUDE_BOUNDS = (1e-5, 1e5)  # wide: on addition the ML amplitude is large (C ~ 1e3 to 1e4)
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (x [R, N, d], y [R, N, 1])


@dataclass(frozen=True)
class Config(SinusoidData):
    length_scale: PerReplica[float] = 1.0
    """RBF length scale λ (the starting point when fit_length_scale is true)"""
    fit_length_scale: bool = False
    """fit λ by maximising the log marginal likelihood instead of holding it fixed"""
    fit_amplitude: bool = False
    """use C·RBF with the amplitude C fitted by maximum likelihood"""
    alpha: float | None = None
    """noise variance added to the kernel's diagonal; None: noise_std² (sinusoid), 1e-10 (others)"""
    dataset: Dataset = "sinusoid"
    """regression data set: sinusoid, addition_* or multiplication_* on disc, annulus or normal"""
    grid_size: int = 101
    """arithmetic sets: points per side of the [-1.5, 1.5]² grid for o.o.d./region errors"""

    def __post_init__(self) -> None:
        super().__post_init__()
        ls = self.length_scale
        require(all(v > 0 for v in self.each("length_scale")), "length_scale", "> 0", ls)
        require(self.alpha is None or self.alpha > 0, "alpha", "> 0 or null", self.alpha)
        require(self.grid_size >= 2, "grid_size", ">= 2", self.grid_size)

    def metrics(self) -> dict[str, Metric]:
        # The predictive std has no better side: a GP sure of a wrong answer is worse, not better.
        arithmetic = self.arithmetic
        places = ("train", "test", *(regions(arithmetic.domain) if arithmetic else ("ood",)))
        fits = ["length_scale_fit", *(["amplitude_fit"] if self.fit_amplitude else [])]
        return declare(
            minimise=[f"{p}_mse" for p in places],
            maximise=["log_marginal_likelihood"],
            diagnostics=[*(f"{p}_std" for p in places), *fits],
        )

    def noise_floor(self, metric: str) -> float | None:
        # the arithmetic sets are noiseless: nothing but the model's error there
        return super().noise_floor(metric) if self.dataset == "sinusoid" else None

    @property
    def noise_variance(self) -> float:
        if self.alpha is not None:
            return self.alpha
        if self.dataset != "sinusoid":
            return SKLEARN_NUGGET
        return max(self.noise_std**2, SKLEARN_NUGGET)

    @property
    def arithmetic(self) -> ArithmeticData | None:
        """The arithmetic data set this `dataset` names (as `addition` sees it); None: sinusoid."""
        if self.dataset == "sinusoid":
            return None
        task, domain = self.dataset.split("_")
        return ArithmeticData(
            seed=self.seed,
            replicas=self.replicas,
            operation="add" if task == "addition" else "multiply",
            domain=domain,  # type: ignore[arg-type]
            train_points=self.train_points,
            test_points=self.test_points,
            grid_size=self.grid_size,
        )


def make_data(cfg: Config) -> Arrays:
    """The splits as numpy arrays [R, N, d]; identical to the network's for a seed.

    Sinusoid: train, test, ood. Arithmetic sets: train, test, grid (the evaluation grid).
    """
    arithmetic = cfg.arithmetic
    splits = sinusoid_splits(cfg) if arithmetic is None else arithmetic_splits(arithmetic)
    return {k: (s.x.double().numpy(), s.y.double().numpy()) for k, s in splits.items()}


def make_kernel(cfg: Config, length_scale: float) -> Kernel:
    bounds = (1e-3, 1e3) if cfg.fit_length_scale else "fixed"
    kernel = RBF(length_scale=length_scale, length_scale_bounds=bounds)
    if cfg.fit_amplitude:
        kernel = ConstantKernel(1.0, AMPLITUDE_BOUNDS) * kernel
    return kernel


def fit_one(
    cfg: Config, x: np.ndarray, y: np.ndarray, length_scale: float
) -> GaussianProcessRegressor:
    """One replica's GP on its points x [N, d], y [N, 1], with its λ."""
    fits = cfg.fit_length_scale or cfg.fit_amplitude
    gp = GaussianProcessRegressor(
        make_kernel(cfg, length_scale),
        alpha=cfg.noise_variance,
        optimizer="fmin_l_bfgs_b" if fits else None,
        normalize_y=False,  # the paper's GP has a zero mean function
    )
    return gp.fit(x, y.ravel())


def fitted_length_scale(gp: GaussianProcessRegressor) -> float:
    kernel = gp.kernel_
    rbf = kernel.k2 if isinstance(kernel, Product) else kernel
    return float(rbf.length_scale)


def fitted_amplitude(gp: GaussianProcessRegressor) -> float:
    kernel = gp.kernel_
    return float(kernel.k1.constant_value) if isinstance(kernel, Product) else 1.0


def replica_metrics(
    cfg: Config, gp: GaussianProcessRegressor, data: Arrays, r: int
) -> tuple[dict[str, float], np.ndarray | None]:
    """One replica's metrics, and its squared error on the grid (arithmetic sets) or None."""
    values = {
        "log_marginal_likelihood": float(gp.log_marginal_likelihood_value_),
        "length_scale_fit": fitted_length_scale(gp),
    }
    if cfg.fit_amplitude:
        values["amplitude_fit"] = fitted_amplitude(gp)
    grid_error = None
    for split, (x, y) in data.items():
        mean, std = gp.predict(x[r], return_std=True)
        sq = (mean - y[r].ravel()) ** 2
        if split != "grid":
            values[f"{split}_mse"] = float(np.mean(sq))
            values[f"{split}_std"] = float(np.mean(std))
            continue
        points, domain = torch.from_numpy(x[r]), cfg.dataset.split("_")[1]
        for suffix, v in (("mse", sq), ("std", std)):
            means = region_means(torch.from_numpy(v)[None], points, domain, suffix)
            values.update({k: float(t) for k, t in means.items()})
        grid_error = sq
    return values, grid_error


def surface_plot(
    cfg: Config, grid_error: np.ndarray, train_x: np.ndarray, length_scale: float
) -> dict[str, Any]:
    """Replica 0's log10 squared error on the grid (Fig. 1 bottom), training points on top."""
    axis = grid_axis(cfg.grid_size).tolist()
    z = np.log10(np.maximum(grid_error, ERROR_FLOOR)).reshape(len(axis), len(axis))
    title = f"GP log10 squared error, {cfg.dataset}, λ={length_scale:g} (replica 0)"
    points = {"x": train_x[:, 0].tolist(), "y": train_x[:, 1].tolist()}
    surface = artifacts.surface(axis, axis, z, title=title, z_label="log10 error", points=points)
    return {"loss_surface": surface}


def run(
    config: Mapping[str, Any], report: Reporter = no_report, device: str | None = None
) -> dict[str, Any]:
    """Fit one GP per replica, each with its own λ; report once (step 1): mean and per replica.

    `device` is accepted for the common signature; scikit-learn fits on the CPU.
    """
    cfg = Config.from_mapping(config)
    data = make_data(cfg)
    length_scales = cfg.each("length_scale")
    per_replica: dict[str, list[float]] = {}
    surface = None
    for r, length_scale in enumerate(length_scales):
        try:
            gp = fit_one(cfg, *(a[r] for a in data["train"]), length_scale)
        except np.linalg.LinAlgError as exc:
            metrics = diverged(f"GP fit failed for replica {r} (λ={length_scale:g}): {exc}")
            report(1, metrics)
            return metrics
        values, grid_error = replica_metrics(cfg, gp, data, r)
        if r == 0 and grid_error is not None:
            surface = surface_plot(cfg, grid_error, data["train"][0][0], length_scale)
        for k, v in values.items():
            per_replica.setdefault(k, []).append(v)
    measured = {k: torch.tensor(v, dtype=torch.float64) for k, v in per_replica.items()}
    metrics: dict[str, Any] = summarise(measured)
    finite = torch.stack([torch.isfinite(v) for v in measured.values()]).all(dim=0)
    bad = (~finite).nonzero().flatten().tolist()
    if bad:
        lambdas = ", ".join(f"{length_scales[r]:g}" for r in bad)
        metrics.update(diverged(f"non-finite GP metrics in replica(s) {bad} (λ={lambdas})"))
    else:
        metrics[DIVERGED] = 0.0
        if surface is not None:
            metrics[artifacts.ARTIFACTS] = surface
    report(1, metrics)
    return metrics
