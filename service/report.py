"""What a finished sweep answers: its best configs and its optimum-length-scale curve.

Glue between `analysis` (DataFrames), `plots` (PNG) and `tracking` (the PNG on the parent run,
where the MLflow UI shows it). Used by `smoothsweep run` at the end of a sweep and by
`smoothsweep curves`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from service import analysis, figures
from service.tracking import SweepRecord

LENGTH_SCALES = ("sigma_inv", "length_scale")


@dataclass(frozen=True)
class Summary:
    trials: pd.DataFrame
    best: pd.DataFrame
    optimum: pd.DataFrame | None = None
    figure: Path | None = None
    trend: pd.DataFrame | None = None
    trend_figure: Path | None = None
    overlay_optimum: pd.DataFrame | None = None
    along: str | None = None
    x: str | None = None

    def warnings(self) -> list[str]:
        """One line per optimum that needs a careful reader: at an edge, in a gap, or a smooth
        that promises more than any trial delivered."""
        lines = []
        for frame in (self.optimum, self.overlay_optimum):
            if frame is None:
                continue
            keys = list(frame.columns[: list(frame.columns).index("x_opt")])
            keys += ["sweep"] if "sweep" in frame.columns else []  # the overlay's
            for _, row in frame.iterrows():
                if row.get("flags"):
                    where = ", ".join(f"{k}={row[k]}" for k in keys)
                    lines.append(
                        f"warning: x_opt {row['x_opt']:.3g}{' (' + where + ')' if where else ''} "
                        f"is flagged {row['flags']}: {_advice(row['flags'])}"
                    )
        lines += self.extend_commands()
        return lines

    def extend_commands(self) -> list[str]:
        """For an optimum at an edge of the searched range: the `extend` that widens that side
        (tenfold on a log range, by its width on a linear one), keeping every trial so far."""
        space = (self.trials.attrs.get("search") or {}).get(self.x or "")
        sweep = self.trials.attrs.get("sweep")
        if self.optimum is None or space is None or not sweep:
            return []
        sides: dict[str, float] = {}
        low, high, log = space["low"], space["high"], space.get("log", False)
        middle = math.sqrt(low * high) if log else (low + high) / 2
        for _, row in self.optimum.iterrows():
            if "edge" in str(row.get("flags") or "").split(","):
                if row["x_opt"] >= middle:
                    sides["high"] = high * 10 if log else high + (high - low)
                else:
                    sides["low"] = low / 10 if log else low - (high - low)
        if not sides:
            return []
        sets = " ".join(f"--set search.{self.x}.{k}={v:.4g}" for k, v in sorted(sides.items()))
        return [f"widen it, keeping these trials: smoothsweep extend {sweep} {sets}"]


def _advice(flags: str) -> str:
    said = {
        "edge": "the optimum is at the edge of the searched range: widen it",
        "gap": "no trial near it: add trials there (or resume with more)",
        "below_data": "the smooth promises more than any trial reached: read it as a guess",
        "above_data": "the smooth promises more than any trial reached: read it as a guess",
    }
    return "; ".join(said[f] for f in flags.split(",") if f in said)


def default_x(trials: pd.DataFrame) -> str | None:
    """The length scale the sweep searched (σ⁻¹ or λ), else its first numeric search key."""
    searched = list(trials.attrs.get("search", {}))
    for name in (*LENGTH_SCALES, *searched):
        if name in searched:
            return name
    return None


def trend_axis(trials: pd.DataFrame, x: str) -> str | None:
    """An axis with at least two values to draw the optimum against (width first), if any."""
    axes = [a for a in trials.attrs.get("axes", []) if a != x and a in trials.columns]
    axes = sorted(axes, key=lambda a: (a != "width", a))
    for axis in axes:
        if trials[axis].nunique() >= 2:
            return axis
    return None


def summarise(
    sweep: str | list[str],
    tracking_uri: str,
    *,
    out: str | Path | None = None,
    x: str | None = None,
    by: list[str] | None = None,
    metric: str | None = None,
    top: int = 1,
    along: str | None = None,
    at: dict[str, float] | None = None,
    nuisance: list[str] | None = None,
    log_to_mlflow: bool = False,
) -> Summary:
    """Best configurations and, when the sweep searched a length scale, the optimum against it
    (profiled over the nuisance parameters, or sliced `at` a value), drawn to `out`; with an axis
    of two or more values (`along`, default: width if swept) the optimum against that axis too,
    drawn beside it (`<out stem>-trend<suffix>`). `log_to_mlflow` puts the figures on the sweep's
    parent run, where the MLflow UI shows them."""
    if isinstance(sweep, str):
        trials = analysis.load_lineage(sweep, tracking_uri)  # with the sweeps it extends
    else:
        trials = analysis.load_trials(sweep, tracking_uri)
    by = list(trials.attrs.get("axes", [])) if by is None else by
    best = analysis.best_configs(trials, metric=metric, by=by or None, top=top)
    x = x or default_x(trials)
    if x is None or out is None or not (trials["status"] == "FINISHED").any():
        return Summary(trials, best)
    groups = [b for b in by if b != x]
    fit = analysis.optimum_fit(trials, x=x, metric=metric, by=groups, at=at, nuisance=nuisance)
    along = along or trend_axis(trials, x)
    overlay = _overlay(trials.attrs.get("overlay"), tracking_uri, metric, along)
    metric = metric or trials.attrs.get("objective_metric", "metric")
    figure = figures.plot_optimum(
        trials, fit, out, x=x, metric=metric, by=groups,
        overlays=[overlay.figure] if overlay else [], floor=noise_floor(trials, metric),
    )  # fmt: skip
    trend = trend_figure = None
    if along is not None:
        trend = analysis.optimum_trend(
            trials, x=x, along=along, metric=metric, by=groups, table=fit.table, at=at,
            nuisance=nuisance,
        )  # fmt: skip
        path = Path(out)
        gp = None
        if overlay is not None:
            # The GP has no width: its λ* is one value, the same at every width of the trend.
            flat = [overlay.optimum.assign(**{along: v}) for v in trend[along].unique()]
            gp = (overlay.label, overlay.trend if overlay.trend is not None else pd.concat(flat))
        trend_figure = figures.plot_optimum_trend(
            trend, path.with_name(f"{path.stem}-trend{path.suffix}"), x=x, along=along, overlay=gp
        )
    if log_to_mlflow and isinstance(sweep, str):
        record = SweepRecord(tracking_uri, sweep)
        record.parent_run_id = trials.attrs.get("parent_run_id")
        if record.parent_run_id:
            for path in filter(None, (figure, trend_figure)):
                record.log_artifact(path)
            record.log_metrics(_optimum_metrics(fit.table, groups), step=len(trials))
    return Summary(
        trials, best, fit.table, Path(figure), trend, trend_figure and Path(trend_figure),
        overlay.optimum if overlay else None, along, x,
    )  # fmt: skip


def _optimum_metrics(table: pd.DataFrame, groups: list[str]) -> dict[str, float]:
    """The final optimum of each cell, as the parent run's metrics (the live ones' last value)."""
    from service.mlflow_view import optimum_metrics

    values: dict[str, float] = {}
    for _, row in table.iterrows():
        values.update(optimum_metrics(row, {g: _plain(row[g]) for g in groups}))
    return values


def noise_floor(trials: pd.DataFrame, metric: str) -> float | None:
    """The label-noise floor of the metric, as the experiment knows it, for the first trial's
    config (the floor does not move with the searched parameters)."""
    import trainables

    experiment = trials.attrs.get("experiment")
    if not experiment or trials.empty:
        return None
    module = trainables.load(experiment)
    columns = [c for c in analysis._config_columns(trials) if c in trials.columns]
    config = {c: _plain(trials[c].iloc[0]) for c in columns}
    try:
        return module.Config.from_mapping(config).noise_floor(metric)
    except Exception:  # a config this code no longer accepts: no floor, not a failure
        return None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True)
class _Overlay:
    label: str
    figure: Any  # figures.Overlay
    optimum: pd.DataFrame
    trend: pd.DataFrame | None


def _overlay(
    sweep: str | None, tracking_uri: str, metric: str | None, along: str | None
) -> _Overlay | None:
    """The companion sweep (the GP on the same points), labelled by its experiment."""
    if not sweep:
        return None
    trials = analysis.load_trials(sweep, tracking_uri)
    x = default_x(trials)
    if x is None or not (trials["status"] == "FINISHED").any():
        return None
    fit = analysis.optimum_fit(trials, x=x, metric=metric, by=[])
    label = {"gp": "GP"}.get(
        trials.attrs.get("experiment") or "", trials.attrs.get("experiment") or sweep
    )
    along_too = along is not None and along in trials.columns and trials[along].nunique() >= 2
    trend = analysis.optimum_trend(trials, x=x, along=along, metric=metric) if along_too else None
    return _Overlay(label, figures.Overlay(label, trials, fit, x), fit.table.assign(sweep=sweep),
                    trend)  # fmt: skip


OPTUNA_DIR = "optuna"  # the parent run's folder of Optuna's plots


def render_optuna_plots(sweep: str, tracking_uri: str) -> list[str]:
    """Optuna's importance, slice, contour (σ⁻¹ × lr) and history plots of each cell, rebuilt from
    the sweep's MLflow runs (`service.optuna_plots`), on the parent run under `optuna/`; returns
    the artifact paths."""
    import tempfile

    from service.optuna_plots import render_sweep_plots

    trials = analysis.load_trials(sweep, tracking_uri)
    x = default_x(trials) or "sigma_inv"
    others = [k for k in trials.attrs.get("search", {}) if k != x]
    y = "lr" if "lr" in others else (others[0] if others else "lr")
    record = SweepRecord(tracking_uri, sweep)
    record.parent_run_id = trials.attrs.get("parent_run_id")
    with tempfile.TemporaryDirectory(prefix="smoothsweep-optuna-") as tmp:
        paths = render_sweep_plots(trials, Path(tmp), x=x, y=y)
        for path in paths:
            record.log_artifact(path, OPTUNA_DIR)
    return [f"{OPTUNA_DIR}/{p.name}" for p in paths]


PLOTS_PER_CELL = 3  # the best configurations of each cell get their plots as PNG when a sweep ends


def render_trial_plots(
    sweep: str,
    tracking_uri: str,
    *,
    top: int | None = PLOTS_PER_CELL,
    trial: str | None = None,
) -> list[str]:
    """Render the plot data (JSON) of trials to PNG beside it on their runs; returns the run ids.

    By default the `top` best finished configurations of each cell (`top=None`: every trial), or
    the one whose key (`smoothsweep.trial_id`) is `trial`. A PNG already there is not redone.
    """
    import tempfile

    from mlflow.tracking import MlflowClient

    from service.errors import SpecError
    from service.plots import render_artifact

    trials = analysis.load_trials(sweep, tracking_uri)
    if trial is not None:
        chosen = trials[trials["trial_id"] == trial]
        if chosen.empty:
            raise SpecError(f"sweep {sweep!r} has no trial {trial!r} (see `smoothsweep best`)")
    elif top is None:
        chosen = trials
    else:
        by = list(trials.attrs.get("axes", [])) or None
        chosen = analysis.best_configs(trials, by=by, top=top) if len(trials) else trials
    client = MlflowClient(tracking_uri)
    done = []
    for run_id in chosen["run_id"]:
        names = {a.path for a in client.list_artifacts(run_id)}
        todo = sorted(n for n in names if n.endswith(".json") and n[:-5] + ".png" not in names)
        with tempfile.TemporaryDirectory(prefix="smoothsweep-plots-") as tmp:
            for name in todo:
                local = client.download_artifacts(run_id, name, tmp)
                payload = json.loads(Path(local).read_text())
                try:
                    png = render_artifact(payload, Path(tmp) / f"{name[:-5]}.png")
                except (ValueError, KeyError, TypeError):
                    continue  # plot data of a kind this version cannot draw: the JSON stays
                client.log_artifact(run_id, str(png))
        done.append(run_id)
    return done
