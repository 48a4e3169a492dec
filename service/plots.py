"""Rendering of a trial's plot data (`trainables.artifacts`) to PNG; sweep figures: `figures`.

Figures are built with matplotlib's object API on the Agg canvas rather than through `pyplot`, so
plotting touches no global figure state, needs no display and is safe in a server or a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


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
