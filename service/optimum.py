"""Where the optimum lies: the metric against one parameter x, nuisance parameters profiled out.

The question users ask is "which σ⁻¹ is best, and how sure are we". The trials of a cell vary in x
(σ⁻¹) and in nuisance parameters that Optuna searched beside it (lr); averaging over whatever lr TPE
tried would let a poor lr at a good σ⁻¹ pull the curve up. In the tuning playbook's terms x is the
scientific parameter and lr a nuisance one, and the curve users mean is either the **profile**, the
best achievable metric at each x with the nuisances optimised out, or a **slice** at a fixed value.

Both come from one smooth of the loss (log of an error; minus the metric for "max") over
u = log x and v = log of each nuisance (standardised to the sampled box). With no nuisance it is a
local regression: at each point of a grid in u the nearest trials get tricube weights and a
quadratic in du is fitted by weighted least squares. With nuisances, a group of up to
`GP_MAX_TRIALS` trials (a sweep's cell, typically tens) gets a GP surrogate over (u, v), whose
minimum over the sampled v box at each u is the profile (a slice reads it at the given v); a larger
group gets local quadratics in (du, v), which then have trials enough per coefficient, and whose
minimum over the v its window sampled is the profile. The optimum is the minimum of that curve
over the grid, refined between grid points. A bootstrap over trials and over replicas within
trials refits everything, so its CI covers the profiling, the seeds and where the searcher sampled.
Why a surrogate for small groups: tests/service/test_optimum.py shows it on a lopsided valley.

`fit_optimum` returns the table and the curves; `optimum`, `optimum_trend` are the public views.
Each group draws from its own generator seeded with `seed`, so a group's numbers do not depend on
which other groups are present. Windows hold at most `MAX_WINDOW` trials, so the cost of a fit
grows with the grid, not with the sweep (10,000 trials: benchmarks/analysis.py).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from service.errors import SpecError

OPTIMUM_COLUMNS = (
    "x_opt", "ci_low", "ci_high", "ci_ratio", "metric_at_opt", "metric_ci_low", "metric_ci_high",
    "n_trials", "method", "fit", "at_edge", "flags",
)  # fmt: skip
SMOOTH_COLUMNS = ("x", "fit", "band_low", "band_high")
GRID = 64  # points in log x on which the smooth is evaluated (and refined between them)
SPAN = 0.5  # fraction of the trials in each local fit
MAX_WINDOW = 300  # at most this many (nearest) trials in a local fit
V_GRID = 9  # points per nuisance dimension when the profile is taken over two of them
GP_MAX_TRIALS = 400  # up to this many trials in a group, a GP surrogate profiles (see _gp_curve)
GP_V_GRID = 17  # points per profiled dimension at which the surrogate is read


@dataclass(frozen=True)
class OptimumFit:
    """The optimum per group (`OPTIMUM_COLUMNS`), and the smooth that defines it per group
    (`SMOOTH_COLUMNS`: the fitted metric on a grid of x, with its bootstrap band)."""

    table: pd.DataFrame
    smooth: pd.DataFrame


def trial_row(
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    x: str,
    nuisance: Sequence[str],
    metric: str,
) -> dict[str, Any]:
    """One finished trial as `fit_rows` takes it: x, the nuisance values, and the metric per
    replica (`test_mse/r3`), or its mean where the replicas were not reported."""
    values = {k: v for k, v in metrics.items() if k.startswith(metric + "/r")}
    if not values and metric in metrics:
        values = {metric: metrics[metric]}
    return {x: config.get(x), **{n: config.get(n) for n in nuisance}, **values}


def fit_rows(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str,
    nuisance: Sequence[str],
    metric: str,
    mode: str,
    n_boot: int,
    seed: int = 0,
) -> pd.Series | None:
    """The optimum of one cell from its `trial_row`s, as the analysis fits it (None: no fit);
    what the live estimates (a precision target, the parent run's x_opt) refit as trials end."""
    frame = pd.DataFrame(list(rows))
    values = [c for c in frame.columns if c.startswith(metric)]
    table = fit_optimum(
        frame, x=x, values=values, groups=[], mode=mode, nuisance=nuisance, n_boot=n_boot,
        seed=seed,
    ).table  # fmt: skip
    return None if table.empty else table.iloc[0]


def fit_optimum(
    frame: pd.DataFrame,
    *,
    x: str,
    values: Sequence[str],
    groups: Sequence[str],
    mode: str,
    nuisance: Sequence[str] = (),
    at: Mapping[str, float] | None = None,
    bounds: tuple[float, float] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    edge_fraction: float = 0.05,
    gap_fraction: float = 0.15,
) -> OptimumFit:
    """Per group of finished trials (`frame`: x, nuisance columns, per-replica `values`)."""
    at = dict(at or {})
    dims = [*nuisance, *at]
    if len(dims) > 2:
        raise SpecError(
            f"`nuisance` and `at` may name at most 2 parameters besides x, but got {dims}: "
            f"slice the others at a value (--at NAME=VALUE)"
        )
    method = _method_label(nuisance, at)
    rows, curves = [], []
    for key, part in _groups(frame, list(groups)):
        replicas, counts = _compact(part[list(values)].to_numpy(dtype=float))
        keep = counts > 0
        xs = part[x].to_numpy(dtype=float)[keep]
        if xs.size == 0:
            continue
        coords = [xs, *(part[d].to_numpy(dtype=float)[keep] for d in dims)]
        for name, column in zip([x, *dims], coords):
            if (column <= 0).any():
                raise SpecError(f"`{name}` must be positive for a fit in log {name}, but got "
                                f"{column.min()}")  # fmt: skip
        surface = _Surface(
            np.log(xs), np.log(np.stack(coords[1:], axis=1)) if dims else np.zeros((xs.size, 0)),
            replicas[keep], counts[keep], mode, n_profiled=len(nuisance),
            slice_at=[math.log(at[d]) for d in at],
        )  # fmt: skip
        estimate = surface.estimate(surface.means)
        rng = np.random.default_rng(seed)
        boot = [surface.estimate(*surface.resample(rng)) for _ in range(n_boot)]
        rows.append({**key, **_row(surface, estimate, boot, bounds, xs, edge_fraction,
                                   gap_fraction, method)})  # fmt: skip
        curves.append(_curve(key, surface, estimate, boot))
    table = pd.DataFrame(rows, columns=[*groups, *OPTIMUM_COLUMNS])
    table = table.astype({"n_trials": "int64", "at_edge": "bool"})
    smooth = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=[*groups, *SMOOTH_COLUMNS]
    )  # fmt: skip
    return OptimumFit(table, smooth)


def _method_label(nuisance: Sequence[str], at: Mapping[str, float]) -> str:
    parts = [f"profile({', '.join(nuisance)})"] if nuisance else []
    parts += [f"slice({k}={v:g})" for k, v in at.items()]
    return " ".join(parts) or "smooth"


@dataclass(frozen=True)
class _Estimate:
    u_opt: float
    loss: float
    fit: str  # "smooth" (interior minimum), "edge" (an end of the sampled range), "best"
    curve: np.ndarray  # the profile (or slice) on the grid, in loss units


class _Surface:
    """One group's trials, and the estimator that is bootstrapped over them.

    The loss is lower-is-better: log of an error (an optimum in log x is then near a parabola),
    the error itself when it can be zero or negative, or minus the metric for mode "max".
    """

    def __init__(
        self,
        u: np.ndarray,
        v: np.ndarray,
        replicas: np.ndarray,
        counts: np.ndarray,
        mode: str,
        n_profiled: int,
        slice_at: Sequence[float],
    ) -> None:
        self.u, self.replicas, self.counts, self.mode = u, replicas, counts, mode
        finite = replicas[np.isfinite(replicas)]
        self.log = mode == "min" and bool((finite > 0).all())
        self.means = np.nansum(replicas, axis=1) / counts
        # standardised nuisance coordinates: a unit box per dimension, so one ridge suits all
        self.v_low, self.v_span = v.min(axis=0), np.ptp(v, axis=0) + 1e-12
        self.v = (v - self.v_low) / self.v_span
        self.n_profiled = n_profiled
        self.slice_at = (np.asarray(slice_at) - self.v_low[n_profiled:]) / self.v_span[n_profiled:]
        self.grid = np.linspace(u.min(), u.max(), GRID)
        self._gp: tuple[Any, float] | None = None  # the surrogate's kernel, once fitted

    def loss(self, means: np.ndarray) -> np.ndarray:
        if self.log:
            return np.log(means)
        return means if self.mode == "min" else -means

    def metric_of(self, loss: np.ndarray | float) -> Any:
        if self.log:
            return np.exp(loss)
        return loss if self.mode == "min" else -loss

    def promises_too_much(self, estimate: _Estimate, boot: list[_Estimate]) -> bool:
        """The smooth's optimum beats the best trial by more than can be told from noise: more than
        its own bootstrap CI, twice the best trial's standard error, and a quarter (in the loss's
        units: log for errors). A smooth does dip below sampled points between them; a dip that
        deep is an extrapolation into a gap (or a poor fit), not a measurement."""
        loss = self.loss(self.means)
        ok = np.isfinite(loss)
        if not ok.any():
            return False
        best = int(np.argmin(np.where(ok, loss, np.inf)))
        values = self.replicas[best, : self.counts[best]]
        spread = float(np.std(values, ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
        se = spread / abs(self.means[best]) if self.log else spread
        half = float(np.subtract(*np.percentile([b.loss for b in boot], [97.5, 2.5]))) / 2
        return bool(loss[best] - estimate.loss > max(half, 2 * se, math.log(1.25)))

    def resample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Trials with replacement, and each one's replicas with replacement."""
        n, width = self.replicas.shape
        index = rng.integers(0, n, size=n)
        counts = self.counts[index]
        picks = (rng.random((n, width)) * counts[:, None]).astype(np.int64)
        draws = self.replicas[index[:, None], picks]
        slots = np.arange(width)
        means = np.where(slots < counts[:, None], draws, 0.0).sum(axis=1) / counts
        return means, index

    def estimate(self, means: np.ndarray, index: np.ndarray | None = None) -> _Estimate:
        u = self.u if index is None else self.u[index]
        v = self.v if index is None else self.v[index]
        loss = self.loss(means)
        ok = np.isfinite(loss)
        u, v, loss = u[ok], v[ok], loss[ok]
        p = _n_basis(v.shape[1])
        if np.unique(u).size < max(5, p + 2):
            best = int(np.argmin(loss))
            curve = np.full(GRID, np.nan)
            return _Estimate(float(u[best]), float(loss[best]), "best", curve)
        if v.shape[1] and self.u.size <= GP_MAX_TRIALS:
            curve = self._gp_curve(u, v, loss)
        else:
            curve = self._curve(u, v, loss)
        k = int(np.nanargmin(curve))
        if k in (0, GRID - 1):
            return _Estimate(float(self.grid[k]), float(curve[k]), "edge", curve)
        y0, y1, y2 = curve[k - 1 : k + 2]  # refine: the vertex through the three nearest values
        step = self.grid[1] - self.grid[0]
        bend = y0 - 2 * y1 + y2
        shift = 0.5 * step * (y0 - y2) / bend if bend > 0 else 0.0
        value = y1 - (y0 - y2) ** 2 / (8 * bend) if bend > 0 else y1
        return _Estimate(float(self.grid[k] + shift), float(value), "smooth", curve)

    def _gp_curve(self, u: np.ndarray, v: np.ndarray, loss: np.ndarray) -> np.ndarray:
        """The profile (or slice) of a GP surrogate of the loss over (u, v), on the grid.

        With tens of trials over two dimensions a local quadratic has a handful of trials per
        coefficient, and the profile, a minimum over v of that fit, lands on whichever corner the
        noise bends down: the bootstrap CI came out 5-100x wide on 16-24-trial sinusoid cells.
        A GP's mean reverts to a pessimistic prior away from the trials (`_gp_prior`), so a
        minimum over v cannot run off into an unsampled corner. Its kernel (an RBF per dimension,
        an amplitude and a noise level no lower than the replicas show) is fitted once by maximum
        likelihood, on the first (full-data) call; the bootstrap refits reuse it, so each draw is
        one [n, n] solve.
        """
        z = self._gp_inputs(u, v)
        if self._gp is None:
            self._gp = _fit_gp_kernel(z, loss, self._seed_noise())
        kernel, noise = self._gp
        centre = _gp_prior(loss)
        gram = kernel(z) + noise * np.eye(z.shape[0])
        weights = np.linalg.solve(gram, loss - centre)
        points = self._gp_points()  # [G, M, 1 + d]
        flat = points.reshape(-1, points.shape[-1])
        mean = kernel(flat, z) @ weights + centre
        return mean.reshape(points.shape[:2]).min(axis=1)

    def _seed_noise(self) -> float:
        """A trial mean's typical variance from its replicas, in the loss's units: the least
        noise the surrogate may assume. Left free, maximum likelihood can pick a noise near zero
        and a short length scale that threads every trial, and the bootstrap's duplicated
        trials then swing that interpolant to errors far below any measured."""
        many = self.counts > 1
        if not many.any():
            return 0.0
        values = np.where(np.arange(self.replicas.shape[1]) < self.counts[:, None],
                          self.replicas, np.nan)[many]  # fmt: skip
        var = np.nanvar(values, axis=1, ddof=1) / self.counts[many]
        if self.log:
            var = var / self.means[many] ** 2  # the delta method: var(log m) ≈ var(m) / m²
        return float(np.nanmedian(var))

    def _gp_inputs(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        scale = self.grid[-1] - self.grid[0] or 1.0
        return np.column_stack([(u - self.grid[0]) / scale, v])

    def _gp_points(self) -> np.ndarray:
        """Per grid point in u, the v at which the surrogate is read: a grid over the sampled box
        in the profiled dimensions, the given values in the sliced ones."""
        m, d = self.n_profiled, self.v.shape[1]
        axes = [np.linspace(0.0, 1.0, GP_V_GRID)] * m
        unit = np.array(list(itertools.product(*axes))) if m else np.zeros((1, 0))
        vs = np.concatenate([unit, np.broadcast_to(self.slice_at, (unit.shape[0], d - m))], axis=1)
        gu = self._gp_inputs(self.grid, np.zeros((GRID, d)))[:, :1]  # [G, 1]
        return np.concatenate(
            [np.broadcast_to(gu[:, None, :], (GRID, vs.shape[0], 1)),
             np.broadcast_to(vs[None], (GRID, *vs.shape))], axis=2,
        )  # fmt: skip

    def _curve(self, u: np.ndarray, v: np.ndarray, loss: np.ndarray) -> np.ndarray:
        """The profile (or slice) of the local fits, on the grid.

        The k nearest trials of a grid point are a contiguous run of the trials sorted by u, so
        each window is found by a binary search, not a [grid × trials] distance matrix; the
        normal equations are batched matmuls of the basis laid out [grid, term, trial].
        """
        n, d = v.shape
        p = _n_basis(d)
        k = min(n, MAX_WINDOW, max(3 * p, math.ceil(SPAN * n)))
        order = np.argsort(u, kind="stable")
        us, vs, ls = u[order], v[order], loss[order]
        near = _nearest_windows(us, self.grid, k)[:, None] + np.arange(k)  # [G, k]
        du = us[near] - self.grid[:, None]
        r = np.abs(du)
        r /= r.max(axis=1, keepdims=True) * 1.0001 + 1e-12
        w = np.clip(1 - r**3, 0, None) ** 3  # tricube
        basis = _basis(du, vs[near], axis=1)  # [G, p, k]
        weighted = basis * w[:, None, :]
        a = np.matmul(weighted, basis.transpose(0, 2, 1))
        a += 1e-6 * np.eye(p) * np.maximum(np.trace(a, axis1=1, axis2=2), 1e-12)[:, None, None] / p
        b = np.matmul(weighted, ls[near][..., None])
        coef = np.linalg.solve(a, b)[..., 0]  # [G, p]
        # The profile looks for the best nuisance value only where the window's trials sampled
        # it: a quadratic's minimum past them is an extrapolation, and picking the best of such
        # guesses at every x is what made the profile's bootstrap CI wide.
        local = vs[near]  # [G, k, d]
        return self._at_du0(coef, d, local.min(axis=1), local.max(axis=1))

    def _at_du0(self, coef: np.ndarray, d: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Each local fit at du = 0 is a quadratic in v: its minimum over the box its window
        sampled (`low`..`high`, [G, d], for the profiled dimensions) at the given values of the
        sliced ones."""
        if d == 0:
            return coef[:, 0]
        m = self.n_profiled
        if m == 1 and d == 1:
            # one profiled dimension: the vertex of the parabola where it lies in the box
            c1, c2 = coef[:, _V1[0]], coef[:, _V2[0]]
            lo, hi = low[:, 0], high[:, 0]
            vertex = np.where(c2 > 0, np.clip(-c1 / (2 * np.where(c2 > 0, c2, 1)), lo, hi), lo)
            vs_all = np.stack([lo, hi, vertex], axis=1)
            values = coef[:, :1] + c1[:, None] * vs_all + c2[:, None] * vs_all**2
            return values.min(axis=1)
        unit = np.array(list(itertools.product(*[np.linspace(0.0, 1.0, V_GRID)] * m)))  # [M, m]
        profiled = low[:, None, :m] + unit[None] * (high - low)[:, None, :m]  # [G, M, m]
        sliced = np.broadcast_to(self.slice_at, (*profiled.shape[:2], d - m))
        vs = np.concatenate([profiled, sliced], axis=2)  # [G, M, d]
        basis = _basis(np.zeros(vs.shape[:2]), vs)  # [G, M, p]
        return np.einsum("gp,gmp->gm", coef, basis).min(axis=1)


GP_PRIOR_QUANTILE = 0.9


def _gp_prior(loss: np.ndarray) -> float:
    """The surrogate's constant prior mean: a high quantile of the losses, not their mean. Away
    from the trials the GP reverts to it, and a searcher crowds its trials into the good region,
    so a mean prior made every unsampled corner look nearly optimal and the profile, a minimum,
    went looking there."""
    return float(np.quantile(loss, GP_PRIOR_QUANTILE))


def _fit_gp_kernel(z: np.ndarray, loss: np.ndarray, least_noise: float) -> tuple[Any, float]:
    """An amplitude × anisotropic RBF kernel and a noise variance of at least `least_noise`, by
    maximum marginal likelihood (scikit-learn, three restarts from a fixed seed: the same data,
    the same fit)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    var = float(np.var(loss)) or 1.0
    floor = max(least_noise, 1e-6 * var)
    kernel = ConstantKernel(var, (1e-3 * var, 1e2 * var)) * RBF(
        np.full(z.shape[1], 0.3), (0.05, 10.0)
    ) + WhiteKernel(max(0.1 * var, 2 * floor), (floor, max(var, 2 * floor)))
    gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(z, loss - _gp_prior(loss))
    fitted = gp.kernel_
    return fitted.k1, float(fitted.k2.noise_level)


_V1, _V2 = (3,), (4,)  # where a single nuisance's linear and square terms sit in the basis


def _n_basis(d: int) -> int:
    return 3 + 3 * d + d * (d - 1) // 2


def _nearest_windows(us: np.ndarray, grid: np.ndarray, k: int) -> np.ndarray:
    """For each grid point, where the k sorted points nearest to it start: the smallest start s
    with grid - us[s] <= us[s + k] - grid, found by a vectorised binary search."""
    n = us.size
    at = np.searchsorted(us, grid)
    lo, hi = np.clip(at - k, 0, n - k), np.clip(at, 0, n - k)
    while (open_ := lo < hi).any():
        mid = (lo + hi) // 2
        move = (grid - us[mid]) > (us[np.minimum(mid + k, n - 1)] - grid)
        move &= mid + k < n
        lo = np.where(open_ & move, mid + 1, lo)
        hi = np.where(open_ & ~move, mid, hi)
    return lo


def _basis(du: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
    """1, du, du², then per nuisance v, v², du·v, then the v_j·v_l cross terms, stacked on
    `axis` ([…, p] by default)."""
    terms = [np.ones_like(du), du, du * du]
    d = v.shape[-1]
    for j in range(d):
        terms += [v[..., j], v[..., j] ** 2, du * v[..., j]]
    for j, m in itertools.combinations(range(d), 2):
        terms.append(v[..., j] * v[..., m])
    return np.stack(terms, axis=axis)


def _row(
    surface: _Surface,
    estimate: _Estimate,
    boot: list[_Estimate],
    bounds: tuple[float, float] | None,
    xs: np.ndarray,
    edge_fraction: float,
    gap_fraction: float,
    method: str,
) -> dict[str, Any]:
    if boot:
        low, high = np.percentile(np.exp([b.u_opt for b in boot]), [2.5, 97.5])
        m_low, m_high = np.sort(surface.metric_of(np.percentile([b.loss for b in boot],
                                                                [2.5, 97.5])))  # fmt: skip
    else:
        low = high = m_low = m_high = math.nan
    metric_at = float(surface.metric_of(estimate.loss))
    b_low, b_high = bounds or (float(xs.min()), float(xs.max()))
    at_edge = estimate.fit == "edge" or _near_edge(estimate.u_opt, b_low, b_high, edge_fraction)
    flags = []
    if at_edge:
        flags.append("edge")
    if _in_gap(estimate.u_opt, surface.u, gap_fraction):
        flags.append("gap")
    if estimate.fit == "smooth" and boot and surface.promises_too_much(estimate, boot):
        flags.append("below_data" if surface.mode == "min" else "above_data")
    return {
        "x_opt": math.exp(estimate.u_opt),
        "ci_low": float(low),
        "ci_high": float(high),
        "ci_ratio": float(high / low) if boot and low > 0 else math.nan,
        "metric_at_opt": metric_at,
        "metric_ci_low": float(m_low),
        "metric_ci_high": float(m_high),
        "n_trials": int(xs.size),
        "method": method,
        "fit": estimate.fit,
        "at_edge": bool(at_edge),
        "flags": ",".join(flags),
    }


def _curve(
    key: Mapping[str, Any], surface: _Surface, estimate: _Estimate, boot: list[_Estimate]
) -> pd.DataFrame:
    """The smooth on its grid in metric units, with a 95% band from the bootstrap fits (taken on
    the loss's scale, the log for errors, so it never goes negative)."""
    curves = np.array([b.curve for b in boot]) if boot else np.full((1, GRID), np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no curve at all: too few trials ("best")
        low, high = np.nanpercentile(curves, [2.5, 97.5], axis=0)
    band = np.sort(np.stack([surface.metric_of(low), surface.metric_of(high)]), axis=0)
    return pd.DataFrame(
        {
            **{k: [v] * GRID for k, v in key.items()},
            "x": np.exp(surface.grid),
            "fit": surface.metric_of(estimate.curve),
            "band_low": band[0],
            "band_high": band[1],
        }
    )


def _near_edge(u_opt: float, low: float, high: float, edge_fraction: float) -> bool:
    log_low, log_high = math.log(low), math.log(high)
    margin = edge_fraction * (log_high - log_low)
    return bool(u_opt - log_low <= margin or log_high - u_opt <= margin)


def _in_gap(u_opt: float, u: np.ndarray, gap_fraction: float) -> bool:
    """No trial within a gap wider than `gap_fraction` of the sampled log range around u_opt."""
    span = u.max() - u.min()
    if span <= 0:
        return False
    left, right = u[u <= u_opt], u[u >= u_opt]
    if left.size == 0 or right.size == 0:
        return False
    return bool(right.min() - left.max() > gap_fraction * span)


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's finite values moved to the front (NaN after), and how many there are."""
    finite = np.isfinite(values)
    order = np.argsort(~finite, axis=1, kind="stable")
    compact = np.take_along_axis(np.where(finite, values, np.nan), order, axis=1)
    return compact, finite.sum(axis=1)


def _groups(frame: pd.DataFrame, groups: list[str]):
    if not groups:
        yield {}, frame
        return
    for key, part in frame.groupby(groups, sort=True, dropna=False):
        yield dict(zip(groups, key, strict=True)), part
