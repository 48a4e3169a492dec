"""Plot data that a trainable hands to the service: computing is here, rendering is not.

A trainable's final report may carry `{"artifacts": {name: payload}}`; the driver logs each payload
as `name` (JSON) on the trial's MLflow run and renders it to `name` with `.png` by its `kind`
(`service.plots.render_artifact`). Payloads are small JSON-able dicts, so they travel inside Ray
results from any node, and trainables stay free of matplotlib and MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ARTIFACTS = "artifacts"  # the report key


def _floats(values: Any) -> Any:
    return np.asarray(values, dtype=float).round(6).tolist()


def surface(
    x: Sequence[float],
    y: Sequence[float],
    z: Any,
    *,
    title: str = "",
    x_label: str = "x1",
    y_label: str = "x2",
    z_label: str = "",
    points: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A value on a grid: z[i][j] at (x[j], y[i]); optional points {x, y, c} drawn on top."""
    z_arr = np.asarray(z, dtype=float)
    if z_arr.shape != (len(y), len(x)):
        raise ValueError(
            f"`z` must have shape (len(y), len(x)) = {(len(y), len(x))}, got {z_arr.shape}"
        )
    payload = {
        "kind": "surface", "title": title, "x_label": x_label, "y_label": y_label,
        "z_label": z_label, "x": _floats(x), "y": _floats(y), "z": _floats(z_arr),
    }  # fmt: skip
    if points is not None:
        payload["points"] = {k: _floats(v) for k, v in points.items()}
    return payload


def curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    x_label: str = "x",
    y_label: str = "y",
    log_x: bool = False,
    markers: Sequence[str] = (),
    dashed: Sequence[str] = (),
    colors: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Named lines {label: (x values, y values)}; the labels in `markers` are drawn as points, those
    in `dashed` dashed; `colors` gives labels a colour index, so a model and its target can share
    one."""
    colors = colors or {}
    return {
        "kind": "curves", "title": title, "x_label": x_label, "y_label": y_label, "log_x": log_x,
        "series": [{"label": k, "x": _floats(x), "y": _floats(y), "markers": k in markers,
                    "dashed": k in dashed, "color": colors.get(k)}
                   for k, (x, y) in series.items()],
    }  # fmt: skip


def histogram(
    edges: Sequence[float],
    counts: dict[str, Sequence[float]],
    *,
    title: str = "",
    x_label: str = "",
) -> dict[str, Any]:
    """Histograms sharing bin edges: {label: counts} with len(counts) == len(edges) - 1."""
    for label, c in counts.items():
        if len(c) != len(edges) - 1:
            raise ValueError(
                f"`counts[{label!r}]` must have len(edges) - 1 = {len(edges) - 1} values"
            )
    return {
        "kind": "histogram", "title": title, "x_label": x_label, "edges": _floats(edges),
        "series": [{"label": k, "counts": _floats(c)} for k, c in counts.items()],
    }  # fmt: skip
