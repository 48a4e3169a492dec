"""How a sweep reads in the MLflow UI: its landing view, the parent run's params and results, the
child runs' names.

What MLflow 3.17's UI does, read from its bundle (`mlflow/server/js/build`), decides the design:
- Where a click on an experiment lands is a UI-wide "workflow type" (the sidebar's GenAI / Model
  training switch), read from the URL's `workflowType` and else from the browser's localStorage,
  `genai` by default. No experiment tag overrides it (`mlflow.experimentKind` is written by the UI
  but not read for navigation). So we print a deep link with `workflowType=machine_learning`.
- Which columns the runs table shows lives in localStorage too (Source, Models and Dataset by
  default); the one server-side hook is a *shared view*: an experiment tag
  `mlflow.sharedViewState.<key>` holding the view as JSON, opened with `?viewStateShareKey=<key>`.
  Ours selects the axes, the searched parameters, the objective and the parent's x_opt.
- Parent rows nest their children only while the table is sorted by creation time, so the view
  does not sort by the objective (`smoothsweep best` does).
- The experiment's description is its `mlflow.note.content` tag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from service import conventions as cv

if TYPE_CHECKING:
    from service.spec import Spec

VIEW_KEY = "smoothsweep"
VIEW_TAG = "mlflow.sharedViewState." + VIEW_KEY
DESCRIPTION_TAG = "mlflow.note.content"
DEFAULT_UI = "http://127.0.0.1:5000"  # `smoothsweep ui`'s default address
SYMBOLS = {"sigma_inv": "σ⁻¹", "length_scale": "λ"}  # how the papers write them

# The parent run's results, one metric per statistic and cell (see `summary_metric`).
X_OPT, CI_LOW, CI_HIGH = "x_opt", "x_opt_ci_low", "x_opt_ci_high"
FINISHED, FAILED = "trials_finished", "trials_failed"


def best_metric(objective: str) -> str:
    return f"best_{objective}"


def summary_metric(stat: str, cell: Mapping[str, Any]) -> str:
    """`x_opt` for a sweep without axes, else `x_opt/width_16` or
    `x_opt/entanglement_12.566/width_16` (MLflow's names allow no `=` or `,`; the `/` groups a
    statistic's cells into one section of the run's charts)."""
    if not cell:
        return stat
    return "/".join([stat, *(f"{k}_{cell[k]}" for k in sorted(cell))])


def ui_link(experiment_id: str, base: str = DEFAULT_UI) -> str:
    """The sweep's runs table, in our view, whatever the browser last chose."""
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"
    )


def ui_base(tracking_uri: str) -> str:
    """Where the UI of a store is: the server itself, or `smoothsweep ui` on a local file."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return DEFAULT_UI


def view_state(spec: Spec) -> dict[str, Any]:
    """The shared view: the columns a researcher reads, in reading order."""
    params = [*sorted(spec.axes), *spec.search]
    metrics = [spec.objective.metric]
    metrics += [summary_metric(X_OPT, c) for c in spec.cells()] if _length_scale(spec) else []
    return {"selectedColumns": [f"params.`{p}`" for p in params]
            + [f"metrics.`{m}`" for m in metrics]}  # fmt: skip


def _length_scale(spec: Spec) -> str | None:
    from service.report import LENGTH_SCALES

    return next((n for n in LENGTH_SCALES if n in spec.search), None)


def experiment_tags(spec: Spec) -> dict[str, str]:
    import json

    tags = {VIEW_TAG: json.dumps(view_state(spec))}
    if spec.description:
        tags[DESCRIPTION_TAG] = spec.description
    return tags


def sweep_params(spec: Spec) -> dict[str, str]:
    """The parent run's params: what was swept, over what, with what held fixed."""
    params = {
        "experiment": spec.experiment,
        "objective": f"{spec.objective.mode} {spec.objective.metric}",
        "trials_per_cell": str(spec.trials_per_cell),
        "trials": str(spec.num_trials),
        "cells": str(len(spec.cells())),
        "sampler": f"{spec.sampler} (seed {spec.sampler_seed})",
    }
    for axis in sorted(spec.axes):
        params[f"axis.{axis}"] = ", ".join(map(str, spec.axes[axis]))
    for name, p in spec.search.items():
        if p.type == "categorical":
            shown = ", ".join(map(str, p.choices or []))
        else:
            shown = f"[{p.low:g}, {p.high:g}]" + " log" * p.log + " int" * (p.type == "int")
        params[f"search.{name}"] = shown
    for key, value in sorted(spec.fixed.items()):
        params[f"fixed.{key}"] = str(value)
    return {k: v[:6000] for k, v in params.items()}


def run_name(
    config: Mapping[str, Any], axes: Sequence[str], searched: Sequence[str], number: int
) -> str:
    """A child run's name: its cell, its searched values, its number in the sweep
    (`width=16 σ⁻¹=1.34 lr=5.2e-3 #12`)."""
    parts = [f"{a}={config[a]}" for a in axes if a in config]
    parts += [f"{SYMBOLS.get(k, k)}={_short(config[k])}" for k in searched if k in config]
    return " ".join([*parts, f"#{number}"])


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.3g}" if 1e-2 <= abs(value) < 1e3 or value == 0 else f"{value:.2g}"
    return str(value)


class LiveSummary:
    """Each cell's trials so far, as the parent run's metrics: finished and failed counts and the
    best objective at every ending, x_opt and its CI when `fit` is called (it refits, so the
    tracker calls it now and then, not per trial)."""

    N_BOOT = 100  # a live estimate; the final one is the analysis's, logged when the sweep ends

    def __init__(self, spec: Spec) -> None:
        self.cells = {cv.cell_label(c): c for c in spec.cells()}
        self.metric, self.mode = spec.objective.metric, spec.objective.mode
        self.x = _length_scale(spec)
        self.nuisance = spec.live_nuisance(self.x)
        self.rows: dict[str, list[dict[str, Any]]] = {k: [] for k in self.cells}
        self.finished = dict.fromkeys(self.cells, 0)
        self.failed = dict.fromkeys(self.cells, 0)
        self.best: dict[str, float] = {}
        self.ended = 0
        self.dirty: set[str] = set()  # cells with endings since their last fit
        self.fitted: dict[str, dict[str, float]] = {}  # each cell's last fit, as metrics

    @property
    def unfitted(self) -> bool:
        return bool(self.dirty)

    def add(self, label: str, config: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        if label not in self.cells:
            return
        self.ended += 1
        value = metrics.get(self.metric)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        if metrics.get(cv.STATUS) == "failed" or not finite:
            self.failed[label] += 1
            return
        self.finished[label] += 1
        old = self.best.get(label)
        if old is None or (value < old if self.mode == "min" else value > old):
            self.best[label] = float(value)
        if self.x is not None:
            from service.optimum import trial_row

            self.rows[label].append(
                trial_row(config, metrics, x=self.x, nuisance=self.nuisance, metric=self.metric)
            )
            self.dirty.add(label)

    def counts(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for label, cell in self.cells.items():
            out[summary_metric(FINISHED, cell)] = self.finished[label]
            out[summary_metric(FAILED, cell)] = self.failed[label]
            if label in self.best:
                out[summary_metric(best_metric(self.metric), cell)] = self.best[label]
        return out

    def fit(self) -> dict[str, float]:
        """x_opt and its CI per cell with 3 or more finished trials; only the cells that had
        endings since are refitted (a refit is about a second a cell)."""
        from service.optimum import fit_rows

        for label in sorted(self.dirty):
            rows = self.rows[label]
            if self.x is None or len(rows) < 3:
                continue
            row = fit_rows(rows, x=self.x, nuisance=self.nuisance, metric=self.metric,
                           mode=self.mode, n_boot=self.N_BOOT)  # fmt: skip
            if row is not None:
                self.fitted[label] = optimum_metrics(row, self.cells[label])
        self.dirty.clear()
        return {k: v for values in self.fitted.values() for k, v in values.items()}


def optimum_metrics(row: Mapping[str, Any], cell: Mapping[str, Any]) -> dict[str, float]:
    """One cell's row of an optimum table as parent-run metrics."""
    pairs = ((X_OPT, "x_opt"), (CI_LOW, "ci_low"), (CI_HIGH, "ci_high"))
    return {
        summary_metric(stat, cell): float(row[column])
        for stat, column in pairs
        if isinstance(row.get(column), (int, float)) and math.isfinite(row[column])
    }
