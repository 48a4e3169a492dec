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
  `ood_points` random points with 2π < |x| ≤ 3π, and {test,ood}_mse_clean is the error against
  sin(x) itself, as `sinusoid` reports it for the network (the noisy-label MSE has a floor of
  noise_std²; the clean one does not, so the GP's curve and the network's compare on it). For the
  arithmetic sets, ood_* (and, on the annulus, hole_*, ring_*, outside_*) are means over the same
  [-1.5, 1.5]² grid and regions as the `addition` experiment (`grid_size`² points; `ood_points`
  is unused there), and replica 0's log-loss surface on that grid is handed to the final report
  (Fig. 1 bottom, Fig. 2).
- `length_scale`, like `seed`, may be one value per replica: replica r fits with its own λ,
  exactly as it would alone (so trials of a λ sweep can share one run, as networks' trials do).
- Noise: `alpha` None means the true noise variance, noise_std² for the sinusoid; the arithmetic
  sets are noiseless, so there it means scikit-learn's default nugget 1e-10. Table 1 pins it: at
  λ = 5 and 50 the errors grow as the nugget squared, and 1e-10 puts them within 1.7x of the
  table, 3e-10 already 6-14x above it. `noise_std` affects the sinusoid only.
- The amplitude: Table 1's λ = 5 and 50 rows need C fitted (the paper's code: ConstantKernel *
  RBF); with C = 1 their o.o.d. MSE is 25x and 3e4x the table's. With λ fixed and λ ≳ 5 the
  likelihood in C is so ill-conditioned that scikit-learn's L-BFGS stops at its start (C = 1),
  and random restarts do not mend it (10 restarts at λ = 50 end at C = 16 to 1.5e3, the
  optimum ~1.5e3). The closed form yᵀK⁻¹y/N is no start either: the nugget is not negligible in
  K's small eigenvalues (it gives C = 1.6 and 49 where the optimum is 12 and 1.4e3). So a fitted
  C starts at the likelihood's maximum at the starting λ (`ml_amplitude`: a log grid, then a
  bounded 1-D search); with λ fixed that is the fit and no L-BFGS runs, with λ fitted L-BFGS
  goes on from there, with 5 restarts by default (`optimizer_restarts`, drawn by the replica's
  seed, so a run is reproducible).
- `train_points` defaults to the sinusoid's 100; the specs set the paper's D = 128 (disc) or
  D = 256 (annulus, Fig. 2). λ by maximum likelihood is bounded to [1e-3, 1e3], C to [1e-5, 1e5].
  On the disc (D = 128) ML with a plain RBF (C = 1) finds λ ≈ 3. Fitting C too, the likelihood
  has a long ridge, C growing with λ, that L-BFGS climbs only part way: from λ = 1 it stops at
  λ ≈ 50-70 (C ≈ 2e3-7e3); 5 restarts reach λ ≈ 60-240, 20 reach λ ≈ 70-320, each a few nats
  higher. The paper's "λ ~ 150" lies on that ridge; we read it as coming from the fitted C.
- Table 1 (`search_spaces/gp_table1.yaml`, seeds 0-7): 11 of its 12 GP entries are within 1.7x
  of the paper's. The 12th, the training MSE at λ = 0.2, is 0.09x (32 seeds: 0.3x): there the
  training error is the nugget's, α(CK + αI)⁻¹y, growing as α² (doubling α quadruples it; the
  test MSE does not move), and heavy-tailed across seeds (a close pair of training points makes
  K nearly singular). Matching it would take α ≈ 3e-10, which the λ = 5 and 50 rows rule out.
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
import scipy.linalg
import torch
from scipy.optimize import minimize_scalar
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, Product

from trainables import artifacts
from trainables.config import PerReplica, require
from trainables.data.regression import (
    ERROR_FLOOR,
    ArithmeticData,
    SinusoidData,
    arithmetic_splits,
    eccentricity_plot,
    grid_axis,
    grid_points,
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
AMPLITUDE_GRID = np.logspace(-5, 5, 41)  # AMPLITUDE_BOUNDS, a quarter decade apart
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (x [R, N, d], y [R, N, 1])


@dataclass(frozen=True)
class Config(SinusoidData):
    length_scale: PerReplica[float] = 1.0
    """RBF length scale λ (the starting point when fit_length_scale is true)"""
    fit_length_scale: bool = False
    """fit λ by maximising the log marginal likelihood instead of holding it fixed"""
    fit_amplitude: bool = False
    """use C·RBF with the amplitude C fitted by maximum likelihood"""
    optimizer_restarts: int | None = None
    """L-BFGS restarts (n_restarts_optimizer) when λ is fitted, seeded per replica; None: 5"""
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
        restarts = self.optimizer_restarts
        require(restarts is None or restarts >= 0, "optimizer_restarts", ">= 0 or null", restarts)

    def metrics(self) -> dict[str, Metric]:
        # The predictive std has no better side: a GP sure of a wrong answer is worse, not better.
        arithmetic = self.arithmetic
        places = ("train", "test", *(regions(arithmetic.domain) if arithmetic else ("ood",)))
        fits = ["length_scale_fit", *(["amplitude_fit"] if self.fit_amplitude else [])]
        clean = [] if arithmetic else ["test_mse_clean", "ood_mse_clean"]
        return declare(
            minimise=[*(f"{p}_mse" for p in places), *clean],
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
    def restarts(self) -> int:
        """L-BFGS restarts as run: none with λ fixed (a fitted C is `ml_amplitude`'s, and no
        optimizer runs); with λ fitted they climb the (λ, C) ridge (see the module docstring)."""
        if self.optimizer_restarts is not None:
            return self.optimizer_restarts
        return 5 if self.fit_length_scale else 0

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


def make_kernel(cfg: Config, length_scale: float, amplitude: float = 1.0) -> Kernel:
    """RBF(λ), times C when the amplitude is fitted; the values given are the optimizer's start.

    With λ fixed there is nothing left for L-BFGS: C is `ml_amplitude`'s and stays fixed."""
    bounds = (1e-3, 1e3) if cfg.fit_length_scale else "fixed"
    kernel = RBF(length_scale=length_scale, length_scale_bounds=bounds)
    if cfg.fit_amplitude:
        c_bounds = AMPLITUDE_BOUNDS if cfg.fit_length_scale else "fixed"
        kernel = ConstantKernel(amplitude, c_bounds) * kernel
    return kernel


def log_marginal_likelihood(k: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """log p(y) of a zero-mean GP with kernel matrix k and nugget α, computed as scikit-learn does
    (Cholesky of k + αI); -inf where that fails, as scikit-learn's optimizer sees it."""
    try:
        chol = scipy.linalg.cholesky(k + alpha * np.eye(len(y)), lower=True)
    except np.linalg.LinAlgError:
        return -np.inf
    z = scipy.linalg.solve_triangular(chol, y, lower=True)
    return float(-0.5 * z @ z - np.log(np.diag(chol)).sum() - 0.5 * len(y) * np.log(2 * np.pi))


def ml_amplitude(k: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """The amplitude C that maximises the likelihood of C·k + αI, within AMPLITUDE_BOUNDS.

    A 1-D search scikit-learn's L-BFGS does not do reliably here (see the module docstring): the
    first maximum of a log grid from below, refined by a bounded search between its neighbours.
    The first, not the highest: as C grows the nugget's share of the diagonal shrinks until the
    Cholesky fails, and just before that rounding makes spikes higher than the real maximum.
    """
    grid = [log_marginal_likelihood(c * k, y, alpha) for c in AMPLITUDE_GRID]
    falls = [i for i in range(len(grid) - 1) if grid[i + 1] < grid[i]]
    best = falls[0] if falls else len(grid) - 1
    logs = np.log(AMPLITUDE_GRID[[max(best - 1, 0), min(best + 1, len(grid) - 1)]])

    def loss(t: float) -> float:
        value = log_marginal_likelihood(np.exp(t) * k, y, alpha)
        return -value if np.isfinite(value) else np.inf

    found = minimize_scalar(loss, bounds=tuple(logs), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x)) if -found.fun > grid[best] else float(AMPLITUDE_GRID[best])


def fit_one(
    cfg: Config, x: np.ndarray, y: np.ndarray, length_scale: float, seed: int = 0
) -> GaussianProcessRegressor:
    """One replica's GP on its points x [N, d], y [N, 1], with its λ; `seed` draws the restarts.

    A fitted amplitude is its maximum-likelihood value for the starting λ: with λ fixed that is
    the fit, with λ fitted L-BFGS starts there and restarts replace it only by a higher likelihood.
    """
    amplitude = 1.0
    if cfg.fit_amplitude:
        amplitude = ml_amplitude(RBF(length_scale)(x), y.ravel(), cfg.noise_variance)
    gp = GaussianProcessRegressor(
        make_kernel(cfg, length_scale, amplitude),
        alpha=cfg.noise_variance,
        optimizer="fmin_l_bfgs_b" if cfg.fit_length_scale else None,
        n_restarts_optimizer=cfg.restarts,
        normalize_y=False,  # the paper's GP has a zero mean function
        random_state=seed,
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
            if cfg.dataset == "sinusoid" and split != "train":  # against sin(x), as `sinusoid`
                values[f"{split}_mse_clean"] = float(np.mean((mean - np.sin(x[r].ravel())) ** 2))
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
    """Replica 0's log10 squared error on the grid (Fig. 1 bottom), training points on top, and
    against eccentricity (Fig. 2 middle), as the `addition` network's plots."""
    axis = grid_axis(cfg.grid_size).tolist()
    z = np.log10(np.maximum(grid_error, ERROR_FLOOR)).reshape(len(axis), len(axis))
    what = f"{cfg.dataset}, λ={length_scale:g} (replica 0)"
    points = {"x": train_x[:, 0].tolist(), "y": train_x[:, 1].tolist()}
    surface = artifacts.surface(
        axis, axis, z, title=f"GP log10 squared error, {what}", z_label="log10 error", points=points
    )
    domain = cfg.dataset.split("_")[1]
    curve = eccentricity_plot(
        grid_error, grid_points(cfg.grid_size), domain, f"GP error vs eccentricity, {what}"
    )
    return {"loss_surface": surface, "error_vs_eccentricity": curve}


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
    for r, (length_scale, seed) in enumerate(zip(length_scales, cfg.seeds)):
        try:
            gp = fit_one(cfg, *(a[r] for a in data["train"]), length_scale, seed)
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
