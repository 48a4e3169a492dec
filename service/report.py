"""What a finished sweep answers: its best configs and its optimum-length-scale curve.

Glue between `analysis` (DataFrames), `plots` (PNG) and `tracking` (the PNG on the parent run,
where the MLflow UI shows it). Used by `smoothsweep run` at the end of a sweep and by
`smoothsweep curves`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from service import analysis, plots
from service.tracking import SweepRecord

LENGTH_SCALES = ("sigma_inv", "length_scale")


@dataclass(frozen=True)
class Summary:
    trials: pd.DataFrame
    best: pd.DataFrame
    curve: pd.DataFrame | None
    optimum: pd.DataFrame | None
    png: Path | None
    overlay_optimum: pd.DataFrame | None = None


def default_x(trials: pd.DataFrame) -> str | None:
    """The length scale the sweep searched (σ⁻¹ or λ), else its first numeric search key."""
    searched = list(trials.attrs.get("search", {}))
    for name in (*LENGTH_SCALES, *searched):
        if name in searched:
            return name
    return None


def summarise(
    sweep: str,
    tracking_uri: str,
    *,
    out: str | Path | None = None,
    x: str | None = None,
    by: list[str] | None = None,
    metric: str | None = None,
    top: int = 1,
    log_to_mlflow: bool = True,
) -> Summary:
    trials = analysis.load_trials(sweep, tracking_uri)
    by = list(trials.attrs.get("axes", [])) if by is None else by
    best = analysis.best_configs(trials, metric=metric, by=by or None, top=top)
    x = x or default_x(trials)
    if x is None or out is None:
        return Summary(trials, best, None, None, None)
    finished = trials[trials["status"] == "FINISHED"]
    if finished.empty:
        return Summary(trials, best, None, None, None)
    curve = analysis.length_scale_curve(trials, x=x, metric=metric, by=by or None)
    optimum = analysis.optimum(trials, x=x, metric=metric, by=by or None)
    overlay, overlay_optimum = _overlay(trials.attrs.get("overlay"), tracking_uri, metric)
    png = plots.plot_length_scale_curves(
        curve,
        optimum,
        out,
        x=x,
        metric_label=metric or trials.attrs.get("objective_metric", "metric"),
        by=by or None,
        title=sweep,
        overlays=[overlay] if overlay is not None else [],
    )
    if log_to_mlflow:
        record = SweepRecord(tracking_uri, sweep)
        record.parent_run_id = trials.attrs.get("parent_run_id")
        if record.parent_run_id:
            record.log_artifact(png)
    return Summary(trials, best, curve, optimum, Path(png), overlay_optimum)


def _overlay(
    sweep: str | None, tracking_uri: str, metric: str | None
) -> tuple[plots.Overlay | None, pd.DataFrame | None]:
    """The companion sweep's curve over all its trials (one group), labelled by its experiment."""
    if not sweep:
        return None, None
    trials = analysis.load_trials(sweep, tracking_uri)
    x = default_x(trials)
    if x is None or not (trials["status"] == "FINISHED").any():
        return None, None
    curve = analysis.length_scale_curve(trials, x=x, metric=metric)
    optimum = analysis.optimum(trials, x=x, metric=metric)
    label = trials.attrs.get("experiment") or sweep
    return plots.Overlay(label, curve, optimum, x), optimum.assign(sweep=sweep)
