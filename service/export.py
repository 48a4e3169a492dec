"""Trials as a long table for other tools, and the list of sweeps in a tracking store.

`replica_rows` turns `analysis.load_trials`'s wide frame (one row per trial, `test_mse/r3` columns)
into one row per replica, because replicas (seeds), not trial means, are what R, a spreadsheet or a
mixed model take as observations. `write_export` writes it as CSV or Parquet, atomically, so an
interrupted export never leaves a half file that reads as a short sweep. `list_sweeps` answers
"what is in this store?" without reading every trial's metrics into a frame.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service import conventions as cv
from service.analysis import _collector_paused, _require_sqlite_file, _tracking_errors
from service.errors import SpecError

ID_COLUMNS = ("sweep", "run_id", "trial_id", "status", "cell")
SWEEP_COLUMNS = ("name", "experiment", "trials", "finished", "failed", "status", "started")
FORMATS = ("csv", "parquet")

_SUFFIXES = {".csv": "csv", ".parquet": "parquet"}
_PAGE_SIZE = 1000
_IDS_PER_SEARCH = 100  # experiment ids per search_runs call: keeps the server's query bounded


# --------------------------------------------------------------------------------------------
# One row per replica


def replica_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per replica of each trial: ids, config, `replica` and each metric's value.

    A trial's replicas are 0 .. its highest replica with a value, so a diverged replica in the
    middle stays a row (of NaNs). A metric without per-replica values (a scalar reported once) is
    repeated on each of the trial's rows; a trial with none at all (one replica, or failed before
    reporting) is one row, replica 0, of its plain values.
    """
    metrics = _attr_list(trials, "metrics")
    config = [c for c in _attr_list(trials, "config_columns") if c in trials.columns]
    ids = [c for c in ID_COLUMNS if c in trials.columns]

    bases: dict[str, dict[int, str]] = {}  # metric -> {replica: its column}, in attrs' order
    for name in metrics:
        if name not in trials.columns:
            continue
        parsed = cv.parse_replica_metric(name)
        base, replica = (name, None) if parsed is None else parsed
        columns = bases.setdefault(base, {})
        if replica is not None:
            columns[replica] = name

    ordered = trials.sort_values("trial_id", kind="stable") if "trial_id" in ids else trials
    width = 1 + max((k for cols in bases.values() for k in cols), default=0)
    values = {base: _replica_matrix(ordered, cols, width) for base, cols in bases.items()}
    present = np.zeros((len(ordered), width), dtype=bool)
    for matrix in values.values():
        present |= ~np.isnan(matrix)
    # Highest replica with any value, + 1; 1 (replica 0 alone) for a trial with none.
    counts = np.where(present.any(axis=1), width - np.argmax(present[:, ::-1], axis=1), 1)

    rows = np.repeat(np.arange(len(ordered)), counts)
    replica = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = ordered[ids + config].iloc[rows].reset_index(drop=True)
    out["replica"] = replica.astype("int64")
    for base, matrix in values.items():
        has_replicas = ~np.isnan(matrix).all(axis=1)
        if not has_replicas.any() and base in ordered.columns:
            # Plain only: take the column itself, so its dtype stays.
            out[base] = ordered[base].iloc[rows].reset_index(drop=True)
            continue
        plain = np.full(len(ordered), np.nan)  # a metric logged per replica only: no mean
        if base in ordered.columns:
            plain = ordered[base].to_numpy(dtype=float, na_value=np.nan)
        out[base] = np.where(has_replicas[rows], matrix[rows, replica], plain[rows])

    out.attrs = {**copy.deepcopy(trials.attrs), "metrics": list(bases)}  # these, not `m/rK`
    return out


def _attr_list(trials: pd.DataFrame, key: str) -> list[str]:
    if key not in trials.attrs:
        raise SpecError(
            f"the trials frame has no attrs[{key!r}]: pass the frame `analysis.load_trials` "
            f"returns, not one read back from a file"
        )
    return list(trials.attrs[key] or [])


def _replica_matrix(trials: pd.DataFrame, columns: dict[int, str], width: int) -> np.ndarray:
    """trials x replicas of one metric; NaN where a trial has no value for that replica."""
    matrix = np.full((len(trials), width), np.nan)
    for replica, column in columns.items():
        matrix[:, replica] = trials[column].to_numpy(dtype=float, na_value=np.nan)
    return matrix


# --------------------------------------------------------------------------------------------
# Writing a file


def write_export(frame: pd.DataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write `frame` as CSV or Parquet (`fmt`, or from the suffix), replacing `path` atomically."""
    path = Path(path)
    fmt = export_format(path, fmt)
    if not path.parent.is_dir():
        raise SpecError(
            f"cannot write the export to {path}: the directory {path.parent} does not exist; "
            f"create it or choose another path"
        )
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401  (pandas' Parquet engine)
        except ImportError:
            raise SpecError(
                "writing Parquet needs pyarrow: `pip install pyarrow`, or use `--format csv`"
            ) from None
    # A hidden name beside the target: os.replace is atomic only within one file system.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    table = _json_encoded(frame)
    try:
        if fmt == "csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise SpecError(
            f"cannot write the export to {path} ({exc.strerror or type(exc).__name__}): "
            f"choose a path in a writable directory"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise SpecError(f"`--format` must be csv or parquet, but got {fmt!r}")
        return fmt
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise SpecError(
            f"cannot tell the export format from the suffix {suffix or '(none)'!r} of {path}: "
            f"name the file .csv or .parquet, or pass `--format csv` or `--format parquet`"
        )
    return _SUFFIXES[suffix]


def _json_encoded(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with lists and dicts as JSON text: Parquet cannot store a column of mixed Python
    objects, and CSV would get Python's repr, which no other tool reads."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object and out[column].map(_is_container).any():
            out[column] = out[column].map(lambda v: cv.dumps(v) if _is_container(v) else v)
    # pandas stores attrs in the Parquet metadata as JSON; a value JSON lacks must not fail it.
    out.attrs = json.loads(json.dumps(frame.attrs, default=str))
    return out


def _is_container(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict))


# --------------------------------------------------------------------------------------------
# The sweeps of a store


def list_sweeps(tracking_uri: str) -> pd.DataFrame:
    """The smoothsweep sweeps in a tracking store, newest first: trial counts and parent status.

    Two searches per hundred experiments, each filtered by role on the server: first the
    parent runs (few), then the trials of only the experiments that have one.
    """
    from mlflow.tracking import MlflowClient  # heavy import; only the I/O path needs it

    _require_sqlite_file(tracking_uri)
    with _tracking_errors(tracking_uri), _collector_paused():
        client = MlflowClient(tracking_uri)
        experiments = {
            e.experiment_id: e.name for e in _search_experiments(client) if e.name != "Default"
        }
        parents: dict[str, Any] = {}
        for run in _runs_with_role(client, list(experiments), cv.ROLE_SWEEP):
            old = parents.get(run.info.experiment_id)
            # A resumed sweep can leave several parent runs; the latest is the sweep's state.
            if old is None or (run.info.start_time or 0) > (old.info.start_time or 0):
                parents[run.info.experiment_id] = run
        counts = {eid: {"trials": 0, "FINISHED": 0, "FAILED": 0} for eid in parents}
        for run in _runs_with_role(client, list(parents), cv.ROLE_TRIAL):
            count = counts[run.info.experiment_id]
            count["trials"] += 1
            if run.info.status in count:
                count[run.info.status] += 1

    records = [
        {
            "name": experiments[eid],
            "experiment": parent.data.tags.get(cv.EXPERIMENT),
            "trials": counts[eid]["trials"],
            "finished": counts[eid]["FINISHED"],
            "failed": counts[eid]["FAILED"],
            "status": parent.info.status,
            "started": _iso_utc(parent.info.start_time),
            "_start": parent.info.start_time or 0,
        }
        for eid, parent in parents.items()
    ]
    records.sort(key=lambda r: (-r["_start"], r["name"]))
    frame = pd.DataFrame.from_records(records, columns=[*SWEEP_COLUMNS, "_start"])
    frame = frame.drop(columns="_start")
    return frame.astype({"trials": "int64", "finished": "int64", "failed": "int64"})


def _search_experiments(client: Any) -> Iterator[Any]:
    """Active experiments (search_experiments' default view); one page at a time."""
    token: str | None = None
    while True:
        page = client.search_experiments(max_results=_PAGE_SIZE, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _runs_with_role(client: Any, experiment_ids: Sequence[str], role: str) -> Iterator[Any]:
    """The active runs tagged `role` in these experiments, paged and chunked."""
    for start in range(0, len(experiment_ids), _IDS_PER_SEARCH):
        chunk = list(experiment_ids[start : start + _IDS_PER_SEARCH])
        token: str | None = None
        while True:
            page = client.search_runs(
                chunk,
                filter_string=f"tags.`{cv.ROLE}` = '{role}'",
                max_results=_PAGE_SIZE,
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                break


def _iso_utc(millis: int | None) -> str | None:
    if millis is None:
        return None
    return datetime.fromtimestamp(millis / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
