"""Rendering of analysis results to PNG files; all numbers are computed in `service.analysis`.

Figures are built with matplotlib's object API on the Agg canvas rather than through `pyplot`, so
plotting touches no global figure state, needs no display and is safe in a server or a test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from service.analysis import CURVE_COLUMNS
from service.conventions import cell_label


@dataclass(frozen=True)
class Overlay:
    """A companion curve on the same axes, e.g. the GP's error against λ (paper 000 Fig. 3)."""

    label: str
    curve: pd.DataFrame
    optimum: pd.DataFrame | None
    x: str


def plot_length_scale_curves(
    curve: pd.DataFrame,
    optimum: pd.DataFrame | None,
    path: str | Path,
    x: str = "sigma_inv",
    metric_label: str = "test_mse",
    by: list[str] | None = None,
    title: str | None = None,
    overlays: Sequence[Overlay] = (),
) -> Path:
    """Draw one metric-vs-x line with its CI band per group, and each group's optimum with its CI.

    `curve` is `analysis.length_scale_curve` output and `optimum` that of `analysis.optimum`;
    `by` defaults to the curve's grouping columns (those that are neither x nor statistics).
    The legend marks an optimum at the edge of the searched range, which deserves a wider search.
    Each overlay is drawn dashed, in its own colours, against its own length-scale column.
    """
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    used = _draw_groups(ax, curve, optimum, x, by, metric_label, "", "-", 0)
    for overlay in overlays:
        used += _draw_groups(
            ax, overlay.curve, overlay.optimum, overlay.x, None, overlay.label,
            f"{overlay.label} ", "--", used,
        )  # fmt: skip
    means = pd.concat([curve["mean"], *(o.curve["mean"] for o in overlays)])
    ax.set_xscale("log")
    if (means > 0).all():
        # Error curves span decades near a bad length scale; a band's low end may reach 0.
        ax.set_yscale("log", nonpositive="clip")
    ax.set_xlabel(" / ".join([x, *(o.x for o in overlays)]))
    ax.set_ylabel(metric_label)
    ax.set_title(title or f"{metric_label} vs {x}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def _draw_groups(
    ax: Any,
    curve: pd.DataFrame,
    optimum: pd.DataFrame | None,
    x: str,
    by: list[str] | None,
    fallback_label: str,
    prefix: str,
    linestyle: str,
    first_color: int,
) -> int:
    """One line and CI band per group, with its optimum; returns how many colours it used."""
    if x not in curve.columns:
        columns = ", ".join(map(str, curve.columns))
        raise ValueError(f"`x` must be a column of the curve, but got {x!r} (columns: {columns})")
    if curve.empty:
        raise ValueError("`curve` must have at least one row, but got an empty frame")
    if by is None:
        by = [c for c in curve.columns if c != x and c not in CURVE_COLUMNS]
    optima = _optima_by_group(optimum, by)
    groups = list(curve.groupby(by, sort=True, dropna=False)) if by else [((), curve)]
    for index, (key, part) in enumerate(groups):
        part = part.sort_values(x)
        color = f"C{(first_color + index) % 10}"
        label = prefix + (cell_label(dict(zip(by, key, strict=True))) if by else fallback_label)
        best = optima.get(tuple(key))
        if best is not None:
            label += _optimum_label(best)
            _draw_optimum(ax, best, color)
        ax.plot(part[x], part["mean"], marker="o", markersize=3, color=color, label=label,
                linestyle=linestyle)  # fmt: skip
        ax.fill_between(part[x], part["ci_low"], part["ci_high"], color=color, alpha=0.2)
    return len(groups)


def _optima_by_group(optimum: pd.DataFrame | None, by: list[str]) -> dict[tuple[Any, ...], Any]:
    if optimum is None or optimum.empty:
        return {}
    missing = [c for c in by if c not in optimum.columns]
    if missing:
        raise ValueError(
            f"`optimum` must have the grouping columns of the curve, but got no {missing} "
            f"(columns: {', '.join(optimum.columns)})"
        )
    return {tuple(row[c] for c in by): row for _, row in optimum.iterrows()}


def _optimum_label(best: pd.Series) -> str:
    edge = ", at edge of search" if bool(best.get("at_edge", False)) else ""
    return f" (opt {best['x_opt']:.3g}{edge})"


def _draw_optimum(ax: Any, best: pd.Series, color: str) -> None:
    ax.axvline(best["x_opt"], color=color, linestyle="--", linewidth=1)
    low, high = best.get("ci_low", math.nan), best.get("ci_high", math.nan)
    if np.isfinite(low) and np.isfinite(high):
        ax.axvspan(low, high, color=color, alpha=0.1, linewidth=0)


def render_artifact(payload: dict[str, Any], path: str | Path) -> Path:
    """Render a trainable's plot data (`trainables.artifacts`) to a PNG, by its `kind`."""
    kind = payload.get("kind")
    fig = Figure(figsize=(6.4, 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if kind == "surface":
        mesh = ax.pcolormesh(payload["x"], payload["y"], np.asarray(payload["z"]), shading="auto")
        fig.colorbar(mesh, ax=ax, label=payload.get("z_label", ""))
        points = payload.get("points")
        if points:
            colour = {"c": points["c"], "cmap": "coolwarm"} if "c" in points else {}
            ax.scatter(points["x"], points["y"], s=6, edgecolors="k", linewidths=0.2, **colour)
    elif kind == "curves":
        for s in payload["series"]:
            style: dict[str, Any] = {}
            if s.get("markers"):
                style.update(linestyle="none", marker=".", markersize=4)
            if s.get("dashed"):
                style["linestyle"] = "--"
            if s.get("color") is not None:
                style["color"] = f"C{s['color'] % 10}"
            ax.plot(s["x"], s["y"], label=s["label"], **style)
        if payload.get("log_x"):
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    elif kind == "histogram":
        edges = np.asarray(payload["edges"])
        for s in payload["series"]:
            ax.stairs(s["counts"], edges, label=s["label"], alpha=0.8)
        ax.legend(fontsize=8)
    else:
        raise ValueError(f"`kind` must be surface, curves or histogram, but got {kind!r}")
    ax.set_xlabel(payload.get("x_label", ""))
    ax.set_ylabel(payload.get("y_label", ""))
    ax.set_title(payload.get("title", ""))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
