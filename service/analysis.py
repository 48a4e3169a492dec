"""MLflow -> pandas, and the questions users ask of a sweep: best configs, and the optimum σ⁻¹.

`load_trials` is the one I/O boundary: it reads a sweep's runs into a DataFrame (one row per trial,
typed config columns, final metrics) with the sweep's tags in `df.attrs`. Everything else here is
DataFrame in, DataFrame out, so it can be tested on hand-built frames and reused on exported CSVs.
A bad argument (a column the trials lack, `top < 1`, ...) is a one-line `SpecError` naming it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from service import conventions as cv
from service.errors import SpecError, TrackingError, tracking_error
from service.optimum import OPTIMUM_COLUMNS as OPTIMUM_COLUMNS  # re-exported: public names
from service.optimum import SMOOTH_COLUMNS as SMOOTH_COLUMNS
from service.optimum import OptimumFit, fit_optimum

# Bookkeeping columns of every trial row; all other columns are config keys or metrics.
BASE_COLUMNS = ("sweep", "run_id", "trial_id", "status", "failure_reason", "cell")
CURVE_COLUMNS = ("mean", "sem", "ci_low", "ci_high", "n")

_FINISHED = "FINISHED"
_PAGE_SIZE = 1000


# --------------------------------------------------------------------------------------------
# I/O boundary


def load_trials(sweep: str | Sequence[str], tracking_uri: str) -> pd.DataFrame:
    """Read every trial run of `sweep` from the tracking store into one typed DataFrame.

    Config values come from the JSON tag (not from MLflow params, which are strings), so an int
    axis stays an int and groups compare exactly. Sweep-level facts (objective, axes, search
    ranges, parent run) go to `df.attrs`, where the other functions here take their defaults.

    Several sweeps of one experiment and objective (a width study run as one sweep per width,
    say) pool into one frame: `sweep` is a column to group by, the axes are the union of theirs
    and the searched ranges span all of them; `attrs["sweeps"]` lists them.
    """
    if not isinstance(sweep, str):
        return pool([load_trials(s, tracking_uri) for s in sweep])
    with _collector_paused():
        return _load_trials(sweep, tracking_uri)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """MLflow builds ~40 ORM objects per run; at 10,000 runs Python's cyclic collector, rescanning
    them again and again, takes half of the load (benchmarks/analysis.py). None of them is
    cyclic garbage worth collecting during the read."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_trials(sweep: str, tracking_uri: str) -> pd.DataFrame:
    from mlflow.tracking import MlflowClient  # heavy import; only the I/O path needs it

    _require_sqlite_file(tracking_uri)
    with _tracking_errors(tracking_uri):
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(sweep)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            raise TrackingError(_unknown_sweep_message(client, sweep, tracking_uri))
        runs = _search_runs(client, experiment.experiment_id)

    parents = [r for r in runs if r.data.tags.get(cv.ROLE) == cv.ROLE_SWEEP]
    if not parents:
        raise TrackingError(
            f"experiment {sweep!r} at {tracking_uri} has no sweep run "
            f"(tag {cv.ROLE}={cv.ROLE_SWEEP}): it was not written by smoothsweep"
        )
    # A resumed sweep could leave several parent runs; the latest holds the current tags.
    parent = max(parents, key=lambda r: r.info.start_time or 0)
    trials = [r for r in runs if r.data.tags.get(cv.ROLE) == cv.ROLE_TRIAL]

    records = [_trial_record(sweep, run) for run in trials]
    configs = [_config_of(run) for run in trials]
    config_columns = _ordered_union(configs)
    metrics = [
        {**r.data.metrics, **cv.parse_replicas_tag(r.data.tags.get(cv.REPLICAS))} for r in trials
    ]
    metric_columns = sorted(_ordered_union(metrics), key=_metric_sort_key)

    frame = pd.DataFrame.from_records(records, columns=list(BASE_COLUMNS))
    for key in config_columns:
        frame[key] = _typed_column([c.get(key) for c in configs])
    for key in metric_columns:
        frame[key] = pd.Series([m.get(key, math.nan) for m in metrics], dtype="float64")
    frame = frame.sort_values("trial_id", kind="stable").reset_index(drop=True)
    frame.attrs.update(_sweep_attrs(sweep, parent))
    frame.attrs["config_columns"] = config_columns
    frame.attrs["metrics"] = metric_columns
    return frame


def load_lineage(sweep: str, tracking_uri: str) -> pd.DataFrame:
    """`load_trials` of a sweep pooled with the sweeps it extends (`smoothsweep extend`), newest
    first: an extended sweep's optimum is that of all their trials."""
    frames = [load_trials(sweep, tracking_uri)]
    seen = {sweep}
    while (earlier := frames[-1].attrs.get("extends")) and earlier not in seen:
        seen.add(earlier)
        frames.append(load_trials(earlier, tracking_uri))
    return frames[0] if len(frames) == 1 else pool(frames)


def pool(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Trials of several sweeps as one frame (see `load_trials`); the first sweep's attrs lead."""
    if not frames:
        raise SpecError("`sweep` must name at least one sweep, but got none")
    first = frames[0].attrs
    for frame in frames[1:]:
        for key in ("experiment", "objective_metric", "objective_mode"):
            if frame.attrs.get(key) != first.get(key):
                raise SpecError(
                    f"sweeps {first.get('sweep')!r} and {frame.attrs.get('sweep')!r} differ in "
                    f"{key} ({first.get(key)!r} vs {frame.attrs.get(key)!r}): pool sweeps of one "
                    f"experiment and objective"
                )
    pooled = pd.concat(frames, ignore_index=True)
    attrs = dict(first)
    attrs["sweeps"] = [f.attrs.get("sweep") for f in frames]
    attrs["axes"] = _ordered_union([f.attrs.get("axes") or [] for f in frames])
    search: dict[str, dict[str, Any]] = {}
    for frame in frames:
        for name, space in (frame.attrs.get("search") or {}).items():
            old = search.get(name, space)
            search[name] = {**space, "low": min(old["low"], space["low"]),
                            "high": max(old["high"], space["high"])}  # fmt: skip
    attrs["search"] = search
    attrs["config_columns"] = _ordered_union([f.attrs.get("config_columns") or [] for f in frames])
    attrs["metrics"] = _ordered_union([f.attrs.get("metrics") or [] for f in frames])
    pooled.attrs.update(attrs)
    return pooled


@contextmanager
def _tracking_errors(tracking_uri: str) -> Iterator[None]:
    """Turn MLflow's failures into a one-line TrackingError that names the URI.

    They are the user's to fix (a server that is down, a mistyped URI), not bugs of ours; the
    original exception stays chained for debugging.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        raise tracking_error(exc, tracking_uri) from exc


def _require_sqlite_file(tracking_uri: str) -> None:
    """Refuse a SQLite URI whose file is missing: MLflow would create an empty store there."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    if path and path != ":memory:" and not Path(path).is_file():
        raise TrackingError(
            f"no MLflow tracking store at {tracking_uri}: the file {path} does not exist"
        )


def _unknown_sweep_message(client: Any, sweep: str, tracking_uri: str) -> str:
    # MLflow's own "Default" experiment is in every store and is never a sweep.
    names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
    known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none"
    return (
        f"no sweep named {sweep!r} in the tracking store {tracking_uri} (sweeps there: {known}); "
        f"browse them with `smoothsweep ui --tracking-uri {tracking_uri}`"
    )


def _search_runs(client: Any, experiment_id: str, page_size: int = _PAGE_SIZE) -> list[Any]:
    """All active runs of an experiment; `search_runs` returns one page at a time."""
    runs: list[Any] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id], max_results=page_size, page_token=token, order_by=["start_time ASC"]
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _trial_record(sweep: str, run: Any) -> dict[str, Any]:
    tags = run.data.tags
    return {
        "sweep": sweep,
        "run_id": run.info.run_id,
        "trial_id": tags.get(cv.TRIAL_ID),
        "status": run.info.status,
        "failure_reason": tags.get(cv.FAILURE_REASON),
        "cell": tags.get(cv.CELL),
    }


def _config_of(run: Any) -> dict[str, Any]:
    raw = run.data.tags.get(cv.CONFIG)
    if raw is None:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TrackingError(
            f"run {run.info.run_id} has a malformed {cv.CONFIG} tag ({exc.msg}); "
            "it was not written by smoothsweep"
        ) from exc
    return config if isinstance(config, dict) else {}


def _typed_column(values: list[Any]) -> pd.Series:
    """A column that keeps JSON's types: ints stay ints even where some trials lack the key."""
    present = [v for v in values if v is not None]
    missing = len(present) < len(values)
    if present and all(isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="boolean" if missing else "bool")
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="Int64" if missing else "int64")
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
    if present and all(isinstance(v, str) for v in present):
        return pd.Series(values, dtype="str")
    return pd.Series(values, dtype="object")


def _ordered_union(mappings: Sequence[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for mapping in mappings:
        seen.update(dict.fromkeys(mapping))
    return list(seen)


def _metric_sort_key(name: str) -> tuple[str, int]:
    # The plain (mean) name first, then replicas in numeric order: r2 before r10.
    parsed = cv.parse_replica_metric(name)
    return (name, -1) if parsed is None else parsed


def _sweep_attrs(sweep: str, parent: Any) -> dict[str, Any]:
    tags = parent.data.tags
    search = json.loads(tags.get(cv.SEARCH) or "{}")
    return {
        "sweep": tags.get(cv.SWEEP, sweep),
        "experiment": tags.get(cv.EXPERIMENT),
        "objective_metric": tags.get(cv.OBJECTIVE_METRIC),
        "objective_mode": tags.get(cv.OBJECTIVE_MODE),
        "axes": list(json.loads(tags.get(cv.AXES) or "[]")),
        "search": {
            name: {
                "low": float(space["low"]),
                "high": float(space["high"]),
                "log": bool(space.get("log", False)),
            }
            for name, space in search.items()
        },
        "parent_run_id": parent.info.run_id,
        "overlay": tags.get(cv.OVERLAY),
        "extends": tags.get(cv.EXTENDS),
        "nuisance": json.loads(tags[cv.NUISANCE]) if cv.NUISANCE in tags else None,
    }


# --------------------------------------------------------------------------------------------
# Best configurations


def best_configs(
    trials: pd.DataFrame,
    metric: str | None = None,
    mode: str | None = None,
    by: Sequence[str] | None = None,
    top: int = 1,
) -> pd.DataFrame:
    """The `top` best finished trials per axis cell, so each cell's winner can be rerun or compared.

    `metric` and `mode` default to the sweep's objective; `mode` falls back to "min" for any other
    metric. Failed trials and non-finite metrics (diverged runs) never win.
    """
    metric, mode = _objective(trials, metric, mode)
    _require_columns(trials, "metric", [metric])
    groups = _group_columns(trials, by)
    if top < 1:
        raise SpecError(f"`top` must be >= 1, but got {top}")

    done = _finished(trials)
    done = done[np.isfinite(done[metric].to_numpy(dtype=float))]
    ranked = done.sort_values(metric, ascending=mode == "min", kind="stable")
    best = ranked.groupby(groups, sort=False, dropna=False).head(top) if groups else ranked[:top]

    config = [c for c in _config_columns(trials) if c != metric]
    columns = _unique([*groups, *config, metric, "cell", "trial_id", "run_id"])
    columns = [c for c in columns if c in best.columns]
    order = [*groups, metric] if groups else [metric]
    ascending = [True] * len(groups) + [mode == "min"]
    return best.sort_values(order, ascending=ascending, kind="stable")[columns].reset_index(
        drop=True
    )


# --------------------------------------------------------------------------------------------
# Length-scale curves


def length_scale_curve(
    trials: pd.DataFrame,
    x: str = "sigma_inv",
    metric: str | None = None,
    by: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean and t-interval of a metric at each x value, per group: the curve users plot.

    Statistics pool every replica of every finished trial at that x, because replicas (seeds),
    not trial-level means, are the independent draws. Non-finite replica values are dropped.
    """
    metric, _ = _objective(trials, metric, None)
    _require_columns(trials, "x", [x])
    values = _value_columns(trials, metric)
    groups = _group_columns(trials, by, exclude=x)
    if not 0 < confidence < 1:
        raise SpecError(f"`confidence` must satisfy 0 < confidence < 1, but got {confidence}")

    keys = [*groups, x]
    long = _finished(trials)[[*keys, *values]].melt(
        id_vars=keys, var_name="_column", value_name="_value"
    )
    long = long[np.isfinite(long["_value"].to_numpy(dtype=float))]
    table = (
        long.groupby(keys, sort=True, dropna=False)["_value"]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
    )
    n = table["n"].to_numpy()
    sem = table["std"].to_numpy() / np.sqrt(n)  # std is NaN for n == 1, so sem is too
    with np.errstate(invalid="ignore"):
        half = stats.t.ppf((1 + confidence) / 2, n - 1) * sem
    half = np.where(n > 1, half, 0.0)  # one value: the interval is the point itself
    table["sem"] = sem
    table["ci_low"] = table["mean"] - half
    table["ci_high"] = table["mean"] + half
    table["n"] = table["n"].astype("int64")
    return table[[*keys, *CURVE_COLUMNS]]


# --------------------------------------------------------------------------------------------
# Optimum with uncertainty (the estimator: service/optimum.py)


def optimum(
    trials: pd.DataFrame,
    x: str = "sigma_inv",
    metric: str | None = None,
    by: Sequence[str] | None = None,
    bounds: tuple[float, float] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    edge_fraction: float = 0.05,
    *,
    mode: str | None = None,
    nuisance: Sequence[str] | None = None,
    at: Mapping[str, float] | None = None,
    gap_fraction: float = 0.15,
) -> pd.DataFrame:
    """Per group, the x that optimises the metric, with a bootstrap CI and honesty flags.

    Nuisance parameters (default: the sweep's `nuisance`, else every searched parameter besides x)
    are profiled out: at each x, the best the smooth over (log x, log nuisance) achieves. `at`
    slices instead: {"lr": 0.001} evaluates that smooth at lr = 0.001. `method` says which.
    `fit` says how the optimum was found: "smooth" (an interior minimum of the curve), "edge" (an
    end of the sampled range) or "best" (too few trials to smooth: the best one). `flags` holds
    "edge"
    (at or within `edge_fraction` of an end of the searched range: widen it), "gap" (no trial
    within a gap wider than `gap_fraction` of the sampled log range around x_opt) and "below_data"
    ("above_data" for max): the smooth promises a metric beyond the best trial by more than its CI.
    """
    return optimum_fit(
        trials, x, metric, by, bounds, n_boot, seed, edge_fraction,
        mode=mode, nuisance=nuisance, at=at, gap_fraction=gap_fraction,
    ).table  # fmt: skip


def optimum_fit(
    trials: pd.DataFrame,
    x: str = "sigma_inv",
    metric: str | None = None,
    by: Sequence[str] | None = None,
    bounds: tuple[float, float] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    edge_fraction: float = 0.05,
    *,
    mode: str | None = None,
    nuisance: Sequence[str] | None = None,
    at: Mapping[str, float] | None = None,
    gap_fraction: float = 0.15,
) -> OptimumFit:
    """`optimum`'s table, and the smooth (with its bootstrap band) that defines it, per group."""
    metric, mode = _objective(trials, metric, mode)
    _require_columns(trials, "x", [x])
    values = _value_columns(trials, metric)
    groups = _group_columns(trials, by, exclude=x)
    if n_boot < 0:
        raise SpecError(f"`n_boot` must be >= 0, but got {n_boot}")
    if not 0 <= edge_fraction < 0.5:
        raise SpecError(
            f"`edge_fraction` must satisfy 0 <= edge_fraction < 0.5, got {edge_fraction}"
        )
    at = dict(at or {})
    profiled = default_nuisance(trials, x, at) if nuisance is None else list(nuisance)
    for name in [*profiled, *at]:
        if name == x or name in groups:
            raise SpecError(f"`nuisance`/`at` must not name x or a group column, but got {name!r}")
    _require_columns(trials, "nuisance", [*profiled, *at])
    bounds = _search_bounds(trials, x) if bounds is None else _checked_bounds(bounds)
    return fit_optimum(
        _finished(trials), x=x, values=values, groups=groups, mode=mode, nuisance=profiled, at=at,
        bounds=bounds, n_boot=n_boot, seed=seed, edge_fraction=edge_fraction,
        gap_fraction=gap_fraction,
    )  # fmt: skip


def default_nuisance(trials: pd.DataFrame, x: str, at: Mapping[str, float] = {}) -> list[str]:
    """The parameters profiled out unless told otherwise: the spec's `nuisance` when it names
    them, else every numeric searched parameter besides x (and those sliced `at` a value)."""
    named = trials.attrs.get("nuisance")
    searched = list((trials.attrs.get("search") or {}).keys())
    chosen = searched if named is None else list(named)
    return [n for n in chosen if n != x and n not in at and n in trials.columns]


def optimum_trend(
    trials: pd.DataFrame,
    x: str = "sigma_inv",
    along: str = "width",
    metric: str | None = None,
    by: Sequence[str] | None = None,
    table: pd.DataFrame | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """x_opt with its CI at each value of an axis (`along`), per other group: how the optimum
    moves with width, data or entanglement. The columns of `optimum`, sorted along the axis.
    `table`: an `optimum` table of the same trials grouped by the axis already (reused)."""
    _require_columns(trials, "along", [along])
    others = [c for c in _group_columns(trials, by, exclude=x) if c != along]
    if table is None or not {*others, along} <= set(table.columns):
        table = optimum(trials, x=x, metric=metric, by=[*others, along], **kwargs)
    return table.sort_values([*others, along], kind="stable").reset_index(drop=True)


def _search_bounds(trials: pd.DataFrame, x: str) -> tuple[float, float] | None:
    space = (trials.attrs.get("search") or {}).get(x)
    if not space:
        return None
    return _checked_bounds((space["low"], space["high"]))


def _checked_bounds(bounds: Sequence[float]) -> tuple[float, float]:
    low, high = (float(b) for b in bounds)
    if not 0 < low < high:
        raise SpecError(f"`bounds` must satisfy 0 < low < high, but got (low={low}, high={high})")
    return low, high


# --------------------------------------------------------------------------------------------
# Validation and selection shared by the functions above


def _objective(trials: pd.DataFrame, metric: str | None, mode: str | None) -> tuple[str, str]:
    """The metric and mode to use: the sweep's objective unless the caller names another."""
    objective = trials.attrs.get("objective_metric")
    if metric is None:
        if objective is None:
            raise SpecError(
                "`metric` must be given when the trials carry no objective_metric in attrs, "
                "but got None"
            )
        metric = objective
    if mode is None:
        mode = (trials.attrs.get("objective_mode") if metric == objective else None) or "min"
    if mode not in ("min", "max"):
        raise SpecError(f"`mode` must be 'min' or 'max', but got {mode!r}")
    return metric, mode


def _require_columns(trials: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    for column in columns:
        if column not in trials.columns:
            raise SpecError(
                f"`{name}` must be a column of the trials, but got {column!r} "
                f"(columns: {', '.join(map(str, trials.columns))})"
            )


def _value_columns(trials: pd.DataFrame, metric: str) -> list[str]:
    """The per-replica columns of a metric, else its plain (mean) column."""
    replicas = [
        (parsed[1], str(c))
        for c in trials.columns
        if (parsed := cv.parse_replica_metric(str(c))) is not None and parsed[0] == metric
    ]
    if replicas:
        return [c for _, c in sorted(replicas)]
    _require_columns(trials, "metric", [metric])
    return [metric]


def _group_columns(
    trials: pd.DataFrame, by: str | Sequence[str] | None, exclude: str | None = None
) -> list[str]:
    """Grouping columns: the sweep's axes by default (minus the curve's own x)."""
    if by is None:
        columns = [c for c in trials.attrs.get("axes") or [] if c != exclude]
    else:
        columns = [by] if isinstance(by, str) else list(by)
        if exclude is not None and exclude in columns:
            raise SpecError(f"`by` must not contain the x column {exclude!r}, but got {columns}")
    _require_columns(trials, "by", columns)
    return columns


def _iter_groups(
    frame: pd.DataFrame, groups: list[str]
) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    if not groups:
        yield {}, frame
        return
    for key, part in frame.groupby(groups, sort=True, dropna=False):
        yield dict(zip(groups, key, strict=True)), part


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    _require_columns(trials, "status", ["status"])
    return trials[trials["status"] == _FINISHED]


def _config_columns(trials: pd.DataFrame) -> list[str]:
    """Config keys: recorded by `load_trials`; for a hand-built frame, all non-metric columns."""
    recorded = trials.attrs.get("config_columns")
    if recorded is not None:
        return [c for c in recorded if c in trials.columns]
    metrics = set(trials.attrs.get("metrics") or [])
    return [
        str(c)
        for c in trials.columns
        if c not in BASE_COLUMNS and c not in metrics and cv.parse_replica_metric(str(c)) is None
    ]


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
