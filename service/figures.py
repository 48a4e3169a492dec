"""Figures for a paper: the metric against x with its smooth, band and optimum, and how that optimum
moves along an axis. All numbers come from `service.analysis` (`optimum_fit`, `optimum_trend`);
this module only draws them.

As in `plots`, figures use matplotlib's object API on the Agg canvas, never `pyplot`: no global
figure state, no display. The format follows the path's suffix: .png (300 dpi), .pdf, .svg. PDFs
embed TrueType fonts, not matplotlib's default Type 3 ones, which journals' PDF checks reject.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerLine2D, HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullLocator

from service import conventions as cv
from service.optimum import OptimumFit

LABELS = {
    "sigma_inv": "σ⁻¹ (length scale)",
    "length_scale": "λ (RBF length scale)",
    "lr": "learning rate",
    "width": "width",
    "entanglement": "entanglement φ_max",
    "test_mse": "test MSE",
    "train_mse": "train MSE",
    "ood_mse": "o.o.d. MSE",
    "test_acc": "test accuracy",
}
FORMATS = {".png": {"dpi": 300}, ".pdf": {}, ".svg": {}}  # suffix -> savefig options
SMALL_MULTIPLES = 4  # from this many groups on, one panel per group
MAX_COLUMNS = 3
FLAGGED = "flagged (edge, gap or below_data): read with care"
_NEUTRAL = "0.35"  # the colour of legend entries that explain an element, not a group
_OVERLAY_COLOURS = ("0.2", "0.55", "#8c564b")
_FINISHED = "FINISHED"


def label(name: str) -> str:
    """How a column reads on an axis: `LABELS`, else the name itself."""
    return LABELS.get(name, name)


@dataclass(frozen=True)
class Overlay:
    """A companion sweep on the same axes in its own style (dashed smooth, hollow markers), e.g.
    the GP's error against λ beside the network's against σ⁻¹."""

    label: str
    trials: pd.DataFrame
    fit: OptimumFit
    x: str
    metric: str | None = None
    """its metric column; None: the figure's metric"""


def plot_optimum(
    trials: pd.DataFrame,
    fit: OptimumFit,
    path: str | Path,
    *,
    x: str,
    metric: str,
    by: Sequence[str] | None = None,
    overlays: Sequence[Overlay] = (),
    title: str | None = None,
    floor: float | None = None,
    x_label: str | None = None,
    metric_label: str | None = None,
) -> Path:
    """The metric against x per group: trial means, their replicas, the smooth `fit` with its
    bootstrap band, and the optimum with its CI. Four or more groups get one panel each.

    `by` defaults to the group columns of `fit.table`; `floor` draws a dotted line (the label
    noise's MSE, say); `title` defaults to the experiment and the trial and replica counts.
    """
    path = _checked_path(path)
    fig = _build_optimum(trials, fit, x=x, metric=metric, by=by, overlays=overlays, title=title,
                         floor=floor, x_label=x_label, metric_label=metric_label)  # fmt: skip
    return _save(fig, path)


def plot_optimum_trend(
    trend: pd.DataFrame,
    path: str | Path,
    *,
    x: str,
    along: str,
    overlay: tuple[str, pd.DataFrame] | None = None,
    title: str | None = None,
    x_label: str | None = None,
    along_label: str | None = None,
) -> Path:
    """x_opt with its CI against the values of `along` (`analysis.optimum_trend` output), one line
    per other group; rows with flags get hollow markers. `overlay` is `(label, trend)` of a
    companion sweep (the GP's λ* per width, say) drawn dashed on the same axes."""
    path = _checked_path(path)
    fig = _build_trend(trend, x=x, along=along, overlay=overlay, title=title, x_label=x_label,
                       along_label=along_label)  # fmt: skip
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# The optimum figure


def _build_optimum(
    trials: pd.DataFrame,
    fit: OptimumFit,
    *,
    x: str,
    metric: str,
    by: Sequence[str] | None = None,
    overlays: Sequence[Overlay] = (),
    title: str | None = None,
    floor: float | None = None,
    x_label: str | None = None,
    metric_label: str | None = None,
) -> Figure:
    groups = _fit_groups(fit, by)
    if not groups:
        raise ValueError("`fit` must hold at least one group, but got an empty table")
    multiples = len(groups) >= SMALL_MULTIPLES
    entries = 4 + (floor is not None) + (0 if multiples else len(groups))
    entries += sum(len(o.fit.table) for o in overlays)
    fig, panels, legend, axes = _panels(len(groups) if multiples else 1, math.ceil(entries / 2))
    done = _finished(trials)
    symbol = _symbol(x, x_label)
    values: list[np.ndarray] = []
    group_handles: list[tuple[Any, str]] = []
    for i, (key, row) in enumerate(groups):
        ax, colour = axes[i if multiples else 0], f"C{i % 10}"
        values += _draw_group(ax, done, fit.smooth, key, row, x, metric, colour, overlay=False)
        entry = _group_text(key, row, symbol)
        if multiples:
            ax.set_title(entry, fontsize="medium")
        else:
            group_handles.append((Line2D([], [], color=colour, marker="o", markersize=4), entry))
    for j, overlay in enumerate(overlays):
        colour = _OVERLAY_COLOURS[j % len(_OVERLAY_COLOURS)]
        o_done, o_metric = _finished(overlay.trials), overlay.metric or metric
        o_symbol = _symbol(overlay.x, None)
        for key, row in _fit_groups(overlay.fit, None):
            for ax in axes:
                values += _draw_group(ax, o_done, overlay.fit.smooth, key, row, overlay.x,
                                      o_metric, colour, overlay=True)  # fmt: skip
            handle = (Line2D([], [], color=colour, linestyle="--", marker="o", markersize=4,
                             markerfacecolor="white"),)  # fmt: skip
            group_handles.append((handle, f"{overlay.label}, {_group_text(key, row, o_symbol)}"))
    if floor is not None:
        for ax in axes:
            ax.axhline(floor, color="0.2", linestyle=":", linewidth=1.2, zorder=1)
        values.append(np.array([floor]))

    sources = [(done, x), *((_finished(o.trials), o.x) for o in overlays)]
    x_values = np.concatenate([frame[name].to_numpy(dtype=float) for frame, name in sources])
    positive = all((v[np.isfinite(v)] > 0).all() for v in values)
    xs = " / ".join(dict.fromkeys(label(n) for n in [x, *(o.x for o in overlays)]))
    for index, ax in enumerate(axes):
        ax.set_xscale("log")
        _decimal_ticks(ax.xaxis, x_values)
        if positive:
            ax.set_yscale("log")
            _decimal_ticks(ax.yaxis, np.concatenate(values))
        ax.grid(True, which="major", alpha=0.3)
        if index + MAX_COLUMNS >= len(axes):  # lowest in its column: sharex hid its ticks
            ax.xaxis.set_tick_params(labelbottom=True)
    if multiples:  # one label per figure: a panel's own would collide with its neighbour's
        panels.supxlabel(x_label or xs)
        panels.supylabel(metric_label or label(metric))
    else:
        axes[0].set_xlabel(x_label or xs)
        axes[0].set_ylabel(metric_label or label(metric))

    handles = _element_handles(fit, floor) + group_handles
    legend.legend(
        [h for h, _ in handles], [t for _, t in handles], loc="upper center", ncols=2,
        frameon=False, fontsize="small", handler_map=_HANDLERS,
    )  # fmt: skip
    fig.suptitle(title if title is not None else _default_title(trials, metric))
    return fig


def _draw_group(
    ax: Any,
    done: pd.DataFrame,
    smooth: pd.DataFrame,
    key: Mapping[str, Any],
    row: pd.Series,
    x: str,
    metric: str,
    colour: str,
    *,
    overlay: bool,
) -> list[np.ndarray]:
    """One group's replicas, means, smooth with band, and optimum; returns the y values drawn."""
    part = _select(done, key)
    xs = part[x].to_numpy(dtype=float)
    replicas = part[_replica_columns(part, metric)].to_numpy(dtype=float)
    means = _means(part, metric)
    face = "white" if overlay else colour
    if replicas.size:
        ax.scatter(np.repeat(xs, replicas.shape[1]), replicas.ravel(), s=5, color=colour,
                   alpha=0.3, linewidths=0, zorder=1)  # fmt: skip
    ax.plot(xs, means, linestyle="none", marker="o", markersize=4, color=colour,
            markerfacecolor=face, markeredgewidth=0.8 if overlay else 0, zorder=3)  # fmt: skip
    curve = _select(smooth, key).sort_values("x")
    columns = [curve[c].to_numpy(dtype=float) for c in ("x", "fit", "band_low", "band_high")]
    grid, fitted, low, high = columns
    ax.fill_between(grid, low, high, color=colour, alpha=0.12 if overlay else 0.2, linewidth=0,
                    zorder=0)  # fmt: skip
    ax.plot(grid, fitted, color=colour, linestyle="--" if overlay else "-",
            linewidth=1.3 if overlay else 1.6, zorder=2)  # fmt: skip
    best_x, best_y = float(row["x_opt"]), float(row["metric_at_opt"])
    ci = float(row["ci_low"]), float(row["ci_high"])
    if all(map(math.isfinite, ci)):  # a percentile CI need not bracket x_opt: no error bar
        ax.plot(ci, [best_y, best_y], color=colour, linewidth=1.8, marker="|", markersize=9,
                markeredgewidth=1.8, zorder=4)  # fmt: skip
    ax.plot([best_x], [best_y], linestyle="none", marker="D", markersize=7, color=colour,
            markerfacecolor=face, markeredgecolor="black" if not overlay else colour,
            markeredgewidth=0.8 if not overlay else 1.4, zorder=5 if overlay else 6)  # fmt: skip
    return [replicas.ravel(), means, fitted, low, high, np.array([best_y])]


def _element_handles(fit: OptimumFit, floor: float | None) -> list[tuple[Any, str]]:
    """Legend entries that explain each element once, drawn in a neutral colour."""
    methods = list(dict.fromkeys(fit.table["method"].astype(str)))
    method = "; ".join(m for m in methods if m != "smooth")
    smooth = f"smooth, {method}, 95% bootstrap band" if method else "smooth, 95% bootstrap band"
    line = {"color": _NEUTRAL, "linestyle": "none"}
    handles: list[tuple[Any, str]] = [
        (Line2D([], [], marker="o", markersize=4, markeredgewidth=0, **line), "trial means"),
        (Line2D([], [], marker="o", markersize=2.5, alpha=0.4, markeredgewidth=0, **line),
         "replicas"),
        ((Patch(color=_NEUTRAL, alpha=0.25, linewidth=0), Line2D([], [], color=_NEUTRAL)), smooth),
        ((_CI_HANDLE, Line2D([], [], marker="D", markersize=6, markeredgecolor="black", **line)),
         "optimum, 95% CI"),
    ]  # fmt: skip
    if floor is not None:
        handles.append((Line2D([], [], color="0.2", linestyle=":"), "label-noise floor"))
    return handles


_CI_HANDLE = Line2D([], [], color=_NEUTRAL, marker="|", markersize=9, markeredgewidth=1.8)
# tuples draw their parts on top of one another; the CI's caps sit at both ends of the bar
_HANDLERS = {tuple: HandlerTuple(ndivide=1), _CI_HANDLE: HandlerLine2D(numpoints=2)}


def _panels(n: int, legend_rows: int) -> tuple[Figure, Any, Any, list[Any]]:
    """One panel, or small multiples on a grid of up to `MAX_COLUMNS` with shared axes; the key
    gets a subfigure of its own below them (an "outside" legend collides with a `supxlabel`)."""
    ncols = min(MAX_COLUMNS, n)
    nrows = math.ceil(n / ncols)
    width, height = (6.4, 4.2) if n == 1 else (2.7 * ncols + 0.5, 2.3 * nrows + 0.6)
    key = 0.2 * legend_rows + 0.15
    fig = Figure(figsize=(width, height + key), layout="constrained")
    FigureCanvasAgg(fig)
    panels, legend = fig.subfigures(2, 1, height_ratios=[height, key])
    grid = panels.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax in grid[n:]:
        panels.delaxes(ax)
    return fig, panels, legend, list(grid[:n])


def _default_title(trials: pd.DataFrame, metric: str) -> str:
    done = _finished(trials)
    replicas = len(_replica_columns(trials, metric))
    count = f"{len(done)} finished trials" + (f" × {replicas} replicas" if replicas else "")
    config = trials.attrs.get("config_columns")
    fixed = [
        f"{c}={_value(done[c].iloc[0])}"
        for c in ("steps", "width")
        if c in done.columns and (config is None or c in config) and done[c].nunique() == 1
    ]
    return " · ".join(p for p in [trials.attrs.get("experiment"), count, ", ".join(fixed)] if p)


# --------------------------------------------------------------------------------------------
# The trend figure


def _build_trend(
    trend: pd.DataFrame,
    *,
    x: str,
    along: str,
    overlay: tuple[str, pd.DataFrame] | None = None,
    title: str | None = None,
    x_label: str | None = None,
    along_label: str | None = None,
) -> Figure:
    if along not in trend.columns or "x_opt" not in trend.columns:
        raise ValueError(
            f"`trend` must have the columns {along!r} and 'x_opt' (optimum_trend output), but got "
            f"{', '.join(map(str, trend.columns))}"
        )
    series = [
        (_key_text(key) or _symbol(x, x_label) + "*", part, f"C{i % 10}", "-", "o")
        for i, (key, part) in enumerate(_frame_groups(trend, _trend_groups(trend, along)))
    ]
    if overlay is not None:
        name, frame = overlay
        series += [
            (", ".join(p for p in [name, _key_text(key)] if p), part,
             _OVERLAY_COLOURS[i % len(_OVERLAY_COLOURS)], "--", "s")
            for i, (key, part) in enumerate(_frame_groups(frame, _trend_groups(frame, along)))
        ]  # fmt: skip
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    frames = [part for _, part, *_ in series]
    positions = pd.concat([f[along] for f in frames])
    numeric = pd.api.types.is_numeric_dtype(positions)
    log_along = numeric and bool((positions > 0).all())
    ys = pd.concat([f[c] for f in frames for c in ("x_opt", "ci_low", "ci_high")]).astype(float)
    log_y = bool((ys[np.isfinite(ys)] > 0).all())

    handles, flagged_any = [], False
    for i, (text, part, colour, style, marker) in enumerate(series):
        part = part.sort_values(along)
        a = _dodged(part[along], i, len(series), log_along) if numeric else part[along]
        y = part["x_opt"].to_numpy(dtype=float)
        flagged = part["flags"].fillna("").astype(str).str.len().to_numpy() > 0
        flagged_any |= bool(flagged.any())
        ax.plot(a, y, color=colour, linestyle=style, linewidth=1.4, zorder=2)
        ax.vlines(a, part["ci_low"], part["ci_high"], color=colour, linewidth=1.4, zorder=2)
        marks = {"linestyle": "none", "marker": marker, "markersize": 7, "color": colour}
        ax.plot(a[~flagged], y[~flagged], zorder=3, **marks)
        ax.plot(a[flagged], y[flagged], markerfacecolor="white", markeredgewidth=1.5, zorder=3,
                **marks)  # fmt: skip
        handles.append((Line2D([], [], **{**marks, "linestyle": style}), text))
    if flagged_any:
        handles.append((Line2D([], [], linestyle="none", marker="o", markersize=7, color=_NEUTRAL,
                               markerfacecolor="white", markeredgewidth=1.5), FLAGGED))  # fmt: skip
    if log_along:
        ax.set_xscale("log")
        ticks = np.unique(positions.to_numpy(dtype=float))
        if ticks.size <= 8:  # few axis values (widths): label them, not the decades
            ax.set_xticks(ticks, [_value(t) for t in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
    if log_y:
        ax.set_yscale("log")
        _decimal_ticks(ax.yaxis, ys.to_numpy())
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel(along_label or label(along))
    ax.set_ylabel(f"optimal {x_label or label(x)}, 95% CI")
    ax.legend([h for h, _ in handles], [t for _, t in handles], fontsize="small", frameon=False,
              loc="best")  # fmt: skip
    methods = [m for m in dict.fromkeys(trend.get("method", pd.Series(dtype=str)).astype(str))
               if m != "smooth"]  # fmt: skip
    methods = "; ".join(methods)
    default = f"optimal {_symbol(x, x_label)} against {along_label or label(along)}"
    fig.suptitle(title if title is not None else default + (f" ({methods})" if methods else ""))
    return fig


def _trend_groups(trend: pd.DataFrame, along: str) -> list[str]:
    columns = list(trend.columns)
    return [c for c in columns[: columns.index("x_opt")] if c != along]


def _dodged(a: pd.Series, i: int, n: int, log: bool) -> np.ndarray:
    """Series sharing axis values are shifted apart by 1.5% of the axis each, so that their CI
    bars do not hide one another."""
    values = a.to_numpy(dtype=float)
    if n == 1:
        return values
    shift = (i - (n - 1) / 2) * 0.015
    if log:
        return values * math.exp(shift * max(np.log(values.max() / values.min()), 1.0))
    return values + shift * max(np.ptp(values), 1.0)


# --------------------------------------------------------------------------------------------
# Shared helpers


def _decimal_ticks(axis: Any, values: np.ndarray) -> None:
    """On a log axis spanning at most two decades (an error near its optimum, a searched range),
    label ticks as decimals (0.05, 0.1, 0.2) and label some minor ones: 10⁻¹ alone says little."""
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size or (span := math.log10(values.max() / values.min())) > 2:
        return
    shown = (1, 2, 5) if span > 1 else (1, 2, 3, 5, 7) if span > 0.5 else tuple(range(1, 10))

    def text(value: float, _: Any) -> str:
        if value <= 0:
            return ""
        mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
        return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in shown) else ""

    axis.set_major_formatter(FuncFormatter(text))
    axis.set_minor_formatter(FuncFormatter(text))


def _checked_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"`path` must end in .png, .pdf or .svg, but got {str(path)!r}")
    return path


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    with matplotlib.rc_context({"pdf.fonttype": 42}):  # TrueType, not Type 3 (see the docstring)
        fig.savefig(path, format=suffix[1:], **FORMATS[suffix])
    return path


def _fit_groups(fit: OptimumFit, by: Sequence[str] | None) -> list[tuple[dict, pd.Series]]:
    columns = list(fit.table.columns)
    if by is None:
        by = columns[: columns.index("x_opt")]
    missing = [c for c in by if c not in columns or c not in fit.smooth.columns]
    if missing:
        raise ValueError(f"`by` must name group columns of the fit, but got {missing} "
                         f"(fit.table columns: {', '.join(columns)})")  # fmt: skip
    return [({c: row[c] for c in by}, row) for _, row in fit.table.iterrows()]


def _frame_groups(frame: pd.DataFrame, by: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    if not by:
        return [({}, frame)]
    return [(dict(zip(by, key, strict=True)), part)
            for key, part in frame.groupby(by, sort=True, dropna=False)]  # fmt: skip


def _select(frame: pd.DataFrame, key: Mapping[str, Any]) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in key.items():
        series = frame[column]
        mask &= series.isna().to_numpy() if pd.isna(value) else (series == value).to_numpy()
    return frame[mask]


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    if "status" not in trials.columns:
        raise ValueError("`trials` must have a status column (load_trials output), but got none")
    return trials[trials["status"] == _FINISHED]


def _replica_columns(trials: pd.DataFrame, metric: str) -> list[str]:
    parsed = [(cv.parse_replica_metric(str(c)), str(c)) for c in trials.columns]
    return [c for p, c in sorted((p, c) for p, c in parsed if p is not None and p[0] == metric)]


def _means(part: pd.DataFrame, metric: str) -> np.ndarray:
    if metric in part.columns:
        return part[metric].to_numpy(dtype=float)
    replicas = _replica_columns(part, metric)
    if not replicas:
        raise ValueError(f"`metric` must be a column of the trials (or have replica columns "
                         f"{metric}/r0, ...), but got {metric!r}")  # fmt: skip
    with np.errstate(all="ignore"):
        return np.nanmean(part[replicas].to_numpy(dtype=float), axis=1)


def _symbol(name: str, override: str | None) -> str:
    """The short form of a label: 'σ⁻¹ (length scale)' -> 'σ⁻¹'."""
    return (override or label(name)).split(" (")[0]


def _group_text(key: Mapping[str, Any], row: pd.Series, symbol: str) -> str:
    flags = str(row.get("flags") or "")
    text = f"{symbol}* = {float(row['x_opt']):.3g}" + (f" [{flags}]" if flags else "")
    group = _key_text(key)
    return f"{group}: {text}" if group else text


def _key_text(key: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in key.items())


def _value(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)
