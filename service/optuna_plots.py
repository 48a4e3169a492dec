"""A sweep's trials as Optuna trials, and Optuna's diagnostic plots of each axis cell.

`frozen_trials` turns `analysis.load_trials` rows back into `FrozenTrial`s: for the plots here, and
to warm-start a new sweep's studies from an old sweep's trials (`study.add_trials`). They are told
what the live search told Optuna (`search.StratifiedOptuna._tell`): a diverged configuration is
COMPLETE with the worst value, so that a sampler learns its region is bad (TPE ignores FAIL).

`render_sweep_plots` draws, per cell, parameter importances (PED-ANOVA), a slice plot, the contour
of σ⁻¹ × lr and the optimisation history. Unlike `plots` and `figures`, this goes through pyplot,
because Optuna's matplotlib module does (`plt.subplots`, and `plt.style.use("ggplot")`, which
rewrites the global rcParams); `_pyplot_confined` keeps that out of a long-lived driver.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from service import analysis, figures
from service import conventions as cv
from service.errors import SpecError

log = logging.getLogger(__name__)

TRIAL_ID_ATTR = cv.TRIAL_ID  # user attrs that lead from an Optuna trial back to its MLflow run
RUN_ID_ATTR = cv.PREFIX + "run_id"
# PED-ANOVA compares the top trials' density with all trials'; Optuna's docstring asks for at least
# 5 top trials to be stable, and a top set of more than half the trials says little.
IMPORTANCE_TOP = 5
MIN_IMPORTANCE_TRIALS = 2 * IMPORTANCE_TOP
MIN_CONTOUR_TRIALS = 3  # Optuna interpolates the contour; fewer points give an empty grid
LOG_SPAN = 10.0  # objective values spanning this factor or more are drawn on a log scale

_FINISHED, _FAILED, _KILLED = "FINISHED", "FAILED", "KILLED"
_DIRECTIONS = {"min": "minimize", "max": "maximize"}


# --------------------------------------------------------------------------------------------
# Trials


def frozen_trials(
    trials: pd.DataFrame,
    *,
    search: Mapping[str, Mapping] | None = None,
    metric: str | None = None,
    mode: str | None = None,
) -> list[optuna.trial.FrozenTrial]:
    """One Optuna trial per ended row of `trials`, with the searched values as its params.

    FINISHED rows are COMPLETE with the objective; a diverged one (non-finite objective, or a
    FAILED run whose `diverged` metric is 1: that is how the tracker closes them) is COMPLETE with
    the worst value, ±inf, which Optuna accepts (only NaN is refused) and ranks last. Other
    FAILED/KILLED rows are FAIL; rows still running have no result and are left out.

    `search` ({name: {"low", "high", "log"}}, default `attrs["search"]`) gives the distributions;
    `metric` and `mode` default to the sweep's objective. To warm-start a sweep, pass its own
    search: CMA-ES and multivariate TPE keep a param only where every trial's distribution equals
    the new trials' (Optuna's IntersectionSearchSpace), and an old value outside the new range
    widens the distribution, so such trials then inform only the independent samplers.
    """
    return [t for _, t in _cell_trials(trials, search, metric, mode)]


def cell_studies(trials: pd.DataFrame) -> dict[str, optuna.Study]:
    """An in-memory study per axis cell ("all" without axes), named "<sweep>/<cell>"."""
    sweep = trials.attrs.get("sweep")
    if not sweep:
        raise SpecError("`trials.attrs['sweep']` must name the sweep (load_trials sets it)")
    metric, mode = analysis._objective(trials, None, None)
    studies: dict[str, optuna.Study] = {}
    for cell, trial in _cell_trials(trials, None, metric, mode):
        if cell not in studies:
            with _quiet_optuna():  # "A new study created in memory" per cell is noise here
                studies[cell] = optuna.create_study(
                    study_name=f"{sweep}/{cell}", direction=_DIRECTIONS[mode]
                )
            with _experimental_allowed():
                studies[cell].set_metric_names([metric])  # the plots' axis labels
        studies[cell].add_trial(trial)
    return studies


def _cell_trials(
    trials: pd.DataFrame,
    search: Mapping[str, Mapping] | None,
    metric: str | None,
    mode: str | None,
) -> Iterator[tuple[str, FrozenTrial]]:
    metric, mode = analysis._objective(trials, metric, mode)
    analysis._require_columns(trials, "status", ["status"])
    if metric not in trials.columns and (trials["status"] == _FINISHED).any():
        analysis._require_columns(trials, "metric", [metric])
    search = (trials.attrs.get("search") or {}) if search is None else search
    # One distribution per parameter for every trial, not one per trial: PED-ANOVA splits trials
    # into regimes by their distribution, and samplers take the intersection of trials' spaces.
    distributions = {name: _distribution(trials, name, space) for name, space in search.items()}
    worst = math.inf if mode == "min" else -math.inf
    for row in trials.to_dict("records"):
        ending = _ending(row, metric, worst)
        if ending is None:
            continue
        state, value = ending
        params = {
            name: dist.to_external_repr(float(row[name]))
            for name, dist in distributions.items()
            if not pd.isna(row[name])  # a pooled sweep that did not search it
        }
        trial = optuna.trial.create_trial(
            state=state,
            value=value,
            params=params,
            distributions={name: distributions[name] for name in params},
            user_attrs={TRIAL_ID_ATTR: _text(row.get("trial_id")),
                        RUN_ID_ATTR: _text(row.get("run_id"))},
        )  # fmt: skip
        cell = row.get("cell")
        yield ("all" if pd.isna(cell) else str(cell)), trial


def _ending(row: Mapping[str, Any], metric: str, worst: float) -> tuple[TrialState, Any] | None:
    from trainables.report import DIVERGED  # trainables.report imports torch: only when used

    status = row.get("status")
    value = row.get(metric)
    value = math.nan if value is None or pd.isna(value) else float(value)
    if status == _FINISHED:
        # A missing objective counts as diverged too, as in the live search: a run that stopped
        # before the final evaluation of a final-only metric.
        return TrialState.COMPLETE, value if math.isfinite(value) else worst
    diverged = row.get(DIVERGED)
    if status == _FAILED and diverged is not None and not pd.isna(diverged) and diverged == 1:
        return TrialState.COMPLETE, worst
    if status in (_FAILED, _KILLED):
        return TrialState.FAIL, None
    return None


def _distribution(trials: pd.DataFrame, name: str, space: Mapping) -> BaseDistribution:
    """The searched range, widened to every value in the trials: a later sweep may have searched
    further, and Optuna refuses a param outside its distribution."""
    analysis._require_columns(trials, "search", [name])
    column = trials[name]
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise SpecError(f"`search` must name numeric columns, but {name!r} is {column.dtype}")
    if "low" not in space or "high" not in space:
        raise SpecError(f"`search[{name!r}]` must have low and high, but got {dict(space)}")
    values = column.dropna().to_numpy(dtype=float)
    low = min(float(space["low"]), values.min(initial=math.inf))
    high = max(float(space["high"]), values.max(initial=-math.inf))
    log_ = bool(space.get("log", False))
    if log_ and low <= 0:
        raise SpecError(f"`search[{name!r}]` is log-scaled, so values must be > 0, but got {low}")
    if pd.api.types.is_integer_dtype(column):
        return IntDistribution(math.floor(low), math.ceil(high), log=log_)
    return FloatDistribution(low, high, log=log_)


def _text(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


# --------------------------------------------------------------------------------------------
# Plots


def importance_evaluator(n_trials: int) -> PedAnovaImportanceEvaluator:
    """PED-ANOVA with a top set of `IMPORTANCE_TOP` trials, or Optuna's top 10 % when larger.

    Not fANOVA: it needs scikit-learn, which we do not install, and a random forest on a few dozen
    trials is no steadier.
    """
    if n_trials < MIN_IMPORTANCE_TRIALS:
        raise SpecError(
            f"`n_trials` must be >= {MIN_IMPORTANCE_TRIALS} for importances, but got {n_trials}"
        )
    return PedAnovaImportanceEvaluator(target_quantile=max(0.1, IMPORTANCE_TOP / n_trials))


def render_cell_plots(
    study: optuna.Study, out_dir: Path, *, prefix: str, x: str = "sigma_inv", y: str = "lr"
) -> list[Path]:
    """Write `{prefix}-{importance,slice,contour,history}.png` for one cell; return those written.

    A plot the trials cannot support is skipped, with the reason logged at INFO: importance needs
    2 searched params and `MIN_IMPORTANCE_TRIALS` trials; contour needs x and y searched and
    `MIN_CONTOUR_TRIALS`. Only COMPLETE trials with finite values are drawn: Optuna's history plot
    keeps ±inf (its axis and best-value line then run to infinity) while its other plots drop them
    and failed trials have no value, so the finite ones alone keep the four plots consistent.
    Trial numbers are therefore those among the finite trials.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cell = _Cell.of(study, x, y)
    written: list[Path] = []
    with _pyplot_confined() as plt:
        for kind, draw in _DRAWERS.items():
            drawn = draw(cell)
            if isinstance(drawn, str):
                log.info("%s: no %s plot: %s", study.study_name, kind, drawn)
                continue
            fig = np.ravel(drawn)[0].figure
            fig.suptitle(study.study_name, fontsize="medium")
            path = out_dir / f"{prefix}-{kind}.png"
            fig.savefig(path, format="png", bbox_inches="tight", **figures.FORMATS[".png"])
            plt.close(fig)
            written.append(path)
    return written


def render_sweep_plots(
    trials: pd.DataFrame, out_dir: Path, *, x: str = "sigma_inv", y: str = "lr"
) -> list[Path]:
    """`render_cell_plots` for each cell, prefixed `optuna-<cell>` ("width=16" -> width_16)."""
    paths: list[Path] = []
    used: set[str] = set()
    for cell, study in cell_studies(trials).items():
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", cell).strip("_") or "cell"
        while name in used:  # two labels that differ only in punctuation
            name += "_"
        used.add(name)
        paths += render_cell_plots(study, Path(out_dir), prefix=f"optuna-{name}", x=x, y=y)
    return paths


@dataclass(frozen=True)
class _Cell:
    """What the plots of one cell share: its finite trials as a study, and how to draw them."""

    study: optuna.Study
    metric: str
    distributions: dict[str, BaseDistribution]  # of the searched params, in search order
    x: str
    y: str
    log_values: bool  # the objective reads better on a log axis

    @classmethod
    def of(cls, study: optuna.Study, x: str, y: str) -> _Cell:
        plotted = _finite_study(study)
        done = plotted.get_trials(deepcopy=False)
        return cls(
            study=plotted,
            metric=(study.metric_names or ["objective"])[0],
            distributions={p: d for t in done for p, d in t.distributions.items()},
            x=x,
            y=y,
            log_values=_log_scaled(np.array([t.value for t in done], dtype=float)),
        )

    @property
    def params(self) -> list[str]:
        return list(self.distributions)

    @property
    def n(self) -> int:
        return len(self.study.get_trials(deepcopy=False))


# Each returns the axes it drew, or why it drew nothing.
def _importance(cell: _Cell) -> Any:
    from optuna.visualization.matplotlib import plot_param_importances

    if len(cell.params) < 2 or cell.n < MIN_IMPORTANCE_TRIALS:
        return (f"{len(cell.params)} searched params and {cell.n} finite trials, but it needs 2 "
                f"and {MIN_IMPORTANCE_TRIALS}")  # fmt: skip
    return plot_param_importances(cell.study, evaluator=importance_evaluator(cell.n))


def _slice(cell: _Cell) -> Any:
    from optuna.visualization.matplotlib import plot_slice

    if not cell.n or not cell.params:
        return "no finite trials with searched params"
    axes = plot_slice(cell.study, target_name=cell.metric)
    for ax in np.ravel(axes):
        # The searched range, not the data's: a best value at its edge shows as one, and a single
        # trial does not collapse the axis to a point.
        dist = cell.distributions.get(ax.get_xlabel())
        if dist is not None:
            ax.set_xlim(*_padded(dist))
        if cell.log_values:
            ax.set_yscale("log")
    return axes


def _contour(cell: _Cell) -> Any:
    from optuna.visualization.matplotlib import plot_contour

    x, y = cell.x, cell.y
    if x not in cell.params or y not in cell.params:
        return f"{x!r} and {y!r} must both be searched, but the params are {cell.params}"
    done = cell.study.get_trials(deepcopy=False)
    distinct = min(len({t.params.get(p) for t in done}) for p in (x, y))
    if cell.n < MIN_CONTOUR_TRIALS or distinct < 2:
        return f"{cell.n} finite trials, but it needs {MIN_CONTOUR_TRIALS} and 2 values of x and y"
    # Optuna puts the parameter first by name on the horizontal axis (lr before sigma_inv) and
    # colours linearly: a log objective keeps the optimum's basin from being one flat colour.
    if cell.log_values:
        return plot_contour(cell.study, params=[x, y], target=lambda t: math.log10(t.value),
                            target_name=f"log10 {cell.metric}")  # fmt: skip
    return plot_contour(cell.study, params=[x, y], target_name=cell.metric)


def _history(cell: _Cell) -> Any:
    from optuna.visualization.matplotlib import plot_optimization_history

    if not cell.n:
        return "no finite trials"
    ax = plot_optimization_history(cell.study, target_name=cell.metric)
    if cell.log_values:
        ax.set_yscale("log")
    return ax


_DRAWERS = {"importance": _importance, "slice": _slice, "contour": _contour, "history": _history}


def _finite_study(study: optuna.Study) -> optuna.Study:
    plotted = optuna.create_study(study_name=study.study_name, directions=study.directions)
    if study.metric_names:
        with _experimental_allowed():
            plotted.set_metric_names(study.metric_names)
    plotted.add_trials(
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(math.isfinite(v) for v in t.values)
    )  # fmt: skip
    return plotted


def _padded(dist: Any) -> tuple[float, float]:
    low, high = float(dist.low), float(dist.high)
    if dist.log:
        pad = (high / low) ** 0.03
        return low / pad, high * pad
    pad = 0.03 * (high - low) or 0.5
    return low - pad, high + pad


def _log_scaled(values: np.ndarray) -> bool:
    """Positive values spanning `LOG_SPAN` or more (an MSE across its basin) read on a log axis."""
    return bool(values.size and (values > 0).all() and values.max() >= LOG_SPAN * values.min())


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


@contextmanager
def _experimental_allowed() -> Iterator[None]:
    # Optuna flags its matplotlib plots and `set_metric_names` as experimental on every call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@contextmanager
def _pyplot_confined() -> Iterator[Any]:
    """pyplot for Optuna, with none of its global state left behind: the Agg backend meanwhile (no
    window, safe off the main thread), rcParams restored (Optuna's ggplot style), and every figure
    opened here closed. Not thread-safe, as pyplot is not."""
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    before = set(plt.get_fignums())
    with _experimental_allowed(), matplotlib.rc_context():
        # Optuna pads a one-trial axis by zero: matplotlib warns and widens it, which is right.
        warnings.filterwarnings("ignore", "Attempting to set identical", UserWarning)
        if backend.lower() != "agg":
            plt.switch_backend("agg")
        try:
            yield plt
        finally:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
            if backend.lower() != "agg":
                plt.switch_backend(backend)
