"""The long export on hand-built trials, atomic file writes, and `list_sweeps` on a real store."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from service import conventions as cv
from service import export
from service.errors import SpecError, TrackingError

NAN = math.nan
METRICS = [
    "ood_mse",
    "test_mse",
    "test_mse/r0",
    "test_mse/r1",
    "train_mse",
    "train_mse/r0",
    "train_mse/r1",
]  # fmt: skip  (load_trials' order: plain name, then its replicas)


def _trials(rows: list[dict], metrics: list[str] = METRICS) -> pd.DataFrame:
    """A trials frame as `load_trials` shapes it, with its attrs."""
    frame = pd.DataFrame(rows)
    frame.attrs.update(
        {"sweep": "demo", "config_columns": ["width", "lr", "act"], "metrics": metrics}
    )
    return frame


def _row(trial: int, status: str, width: int, **metrics: float) -> dict:
    return {
        "sweep": "demo",
        "run_id": f"run{trial}",
        "trial_id": f"t_{trial:05d}",
        "status": status,
        "failure_reason": "diverged" if status == "FAILED" else None,
        "cell": f"width={width}",
        "width": width,
        "lr": 0.1 * width,
        "act": "tanh",
        **metrics,
    }


# --------------------------------------------------------------------------------------------
# replica_rows


def test_replica_rows_splits_replicas_repeats_plain_metrics_and_keeps_a_bare_trial():
    failed = {m: NAN for m in METRICS}  # failed before reporting: only NaN plain values
    finished = {
        "ood_mse": 7.0,  # reported once: no per-replica values
        "test_mse": 2.0, "test_mse/r0": 1.0, "test_mse/r1": 3.0,
        "train_mse": 1.0, "train_mse/r0": 0.5, "train_mse/r1": 1.5,
    }  # fmt: skip
    # The failed trial comes first, so the trial_id order is the function's doing.
    trials = _trials([_row(1, "FAILED", 20, **failed), _row(0, "FINISHED", 10, **finished)])

    long = export.replica_rows(trials)

    expected = pd.DataFrame(
        {
            "sweep": ["demo"] * 3,
            "run_id": ["run0", "run0", "run1"],
            "trial_id": ["t_00000", "t_00000", "t_00001"],
            "status": ["FINISHED", "FINISHED", "FAILED"],
            "cell": ["width=10", "width=10", "width=20"],
            "width": np.array([10, 10, 20], dtype="int64"),
            "lr": [1.0, 1.0, 2.0],
            "act": ["tanh"] * 3,
            "replica": np.array([0, 1, 0], dtype="int64"),
            "ood_mse": [7.0, 7.0, NAN],
            "test_mse": [1.0, 3.0, NAN],
            "train_mse": [0.5, 1.5, NAN],
        }
    )
    pd.testing.assert_frame_equal(long, expected)
    assert long.attrs["sweep"] == "demo"
    assert long.attrs["config_columns"] == ["width", "lr", "act"]
    assert long.attrs["metrics"] == ["ood_mse", "test_mse", "train_mse"]  # the long columns
    assert trials.attrs["metrics"] == METRICS  # the input is left alone


def test_replica_rows_counts_each_trials_own_replicas_and_keeps_a_diverged_middle_one():
    metrics = ["test_mse", "test_mse/r0", "test_mse/r1", "test_mse/r2"]
    # Trial 0: three replicas, the middle one diverged (NaN). Trial 1 (pooled from a sweep of two
    # replicas) has no r2 column value and must not get a third row.
    rows = [
        _row(0, "FINISHED", 10, **dict(zip(metrics, [2.0, 1.0, NAN, 3.0]))),
        _row(1, "FINISHED", 10, **dict(zip(metrics, [5.0, 4.0, 6.0, NAN]))),
    ]

    long = export.replica_rows(_trials(rows, metrics))

    assert long["trial_id"].tolist() == ["t_00000"] * 3 + ["t_00001"] * 2
    assert long["replica"].tolist() == [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(long["test_mse"], [1.0, NAN, 3.0, 4.0, 6.0])


def test_replica_rows_refuses_a_frame_without_load_trials_attrs():
    frame = pd.DataFrame([_row(0, "FINISHED", 10, test_mse=1.0)])
    with pytest.raises(SpecError, match=r"attrs\['metrics'\].*load_trials"):
        export.replica_rows(frame)


# --------------------------------------------------------------------------------------------
# write_export


def _table() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "trial_id": ["t_0", "t_1", "t_2"],
            "width": np.array([10, 20, 30], dtype="int64"),
            "replica": np.array([0, 1, 0], dtype="int64"),
            "test_mse": [0.5, NAN, 1.5],
        }
    )
    frame.attrs["sweep"] = "demo"
    return frame


@pytest.mark.parametrize(
    ("name", "fmt", "read"),
    [
        ("out.csv", None, pd.read_csv),
        ("out.parquet", None, pd.read_parquet),
        ("out.data", "csv", pd.read_csv),  # an explicit format wins over the suffix
        ("out.data", "parquet", pd.read_parquet),
    ],
)
def test_write_export_round_trips_values_and_int_dtypes(tmp_path, name, fmt, read):
    frame = _table()

    written = export.write_export(frame, tmp_path / name, fmt)

    assert written == tmp_path / name
    pd.testing.assert_frame_equal(read(written), frame, check_dtype=True)
    assert os.listdir(tmp_path) == [name]  # no temporary file left beside it


def test_write_export_parquet_json_encodes_list_columns_and_keeps_attrs(tmp_path):
    frame = _table()
    frame["seeds"] = pd.Series([[1, 2], {"a": 1}, None], dtype="object")

    back = pd.read_parquet(export.write_export(frame, tmp_path / "out.parquet"))

    assert back["seeds"].iloc[:2].tolist() == ["[1,2]", '{"a":1}']
    assert back["seeds"].isna().iloc[2]
    assert back.attrs == {"sweep": "demo"}
    assert isinstance(frame["seeds"].iloc[0], list)  # the caller's frame is not changed


@pytest.mark.parametrize(
    ("name", "fmt", "pattern"),
    [
        ("out.csv", "xlsx", r"`--format` must be csv or parquet, but got 'xlsx'"),
        ("out.xlsx", None, r"suffix '\.xlsx'.*\.csv or \.parquet.*`--format"),
        ("out", None, r"suffix '\(none\)'.*`--format"),
    ],
)
def test_write_export_refuses_an_unknown_format_by_name(tmp_path, name, fmt, pattern):
    with pytest.raises(SpecError, match=pattern):
        export.write_export(_table(), tmp_path / name, fmt)
    assert os.listdir(tmp_path) == []


def test_write_export_into_a_missing_directory_is_one_line_and_writes_nothing(tmp_path):
    with pytest.raises(SpecError, match=r"directory .*missing does not exist") as info:
        export.write_export(_table(), tmp_path / "missing" / "out.csv")
    assert "\n" not in str(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_write_export_into_a_read_only_directory_is_a_spec_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(SpecError, match="cannot write the export"):
            export.write_export(_table(), tmp_path / "out.csv")
        assert os.listdir(tmp_path) == []
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("bug")])
def test_a_write_failing_halfway_keeps_the_old_export_and_leaves_no_partial_file(
    tmp_path, monkeypatch, error
):
    path = export.write_export(_table(), tmp_path / "out.csv")
    before = path.read_bytes()

    def half_write(self, target, **kwargs):
        with open(target, "w") as f:
            f.write("trial_id,wid")
        raise error

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_write)
    with pytest.raises(SpecError if isinstance(error, OSError) else RuntimeError) as info:
        export.write_export(_table().head(1), path)

    if isinstance(error, OSError):
        assert "No space left on device" in str(info.value)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.csv"]


# --------------------------------------------------------------------------------------------
# list_sweeps against a real MLflow SQLite store


def _millis(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SimpleNamespace:
    """Two sweeps (one resumed), an unrelated and a deleted experiment, and MLflow's Default."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    client = MlflowClient(uri)

    def sweep(name: str, trainable: str, started: list[str], parent_status: list[str | None]):
        experiment = client.create_experiment(name)
        parent = None
        for start, status in zip(started, parent_status, strict=True):
            tags = {cv.ROLE: cv.ROLE_SWEEP, cv.SWEEP: name, cv.EXPERIMENT: trainable}
            parent = client.create_run(experiment, start_time=_millis(start), tags=tags)
            if status is not None:
                client.set_terminated(parent.info.run_id, status=status)
        return experiment, parent.info.run_id

    def trial(experiment: str, parent: str, status: str | None) -> str:
        tags = {cv.ROLE: cv.ROLE_TRIAL, cv.PARENT_RUN_ID: parent}
        run = client.create_run(experiment, tags=tags).info.run_id
        if status is not None:
            client.set_terminated(run, status=status)
        return run

    old, parent = sweep("width-study", "sinusoid", ["2026-12-01T09:00:00.750"], ["FINISHED"])
    for status in ["FINISHED", "FINISHED", "FAILED", "KILLED", None]:  # None: still RUNNING
        trial(old, parent, status)
    client.delete_run(trial(old, parent, "FINISHED"))  # deleted runs do not count
    client.create_run(old, tags={"note": "a run of someone else's"})  # no role: not a trial

    # Resumed: the first parent failed, the second (newest) is the sweep's state.
    new, parent = sweep(
        "gp-baseline", "gp", ["2026-12-02T12:00:00", "2026-12-02T13:05:11.250"], ["FAILED", None]
    )
    for status in ["FINISHED", "FAILED", "FAILED"]:
        trial(new, parent, status)

    unrelated = client.create_experiment("notebook")
    client.create_run(unrelated, tags={"mlflow.runName": "scratch"})
    gone, parent = sweep("deleted-sweep", "sinusoid", ["2026-12-03T00:00:00"], ["FINISHED"])
    trial(gone, parent, "FINISHED")
    client.delete_experiment(gone)
    client.create_run("0", tags={cv.ROLE: cv.ROLE_SWEEP})  # even a sweep tag in Default is not one
    return SimpleNamespace(uri=uri)


EXPECTED_SWEEPS = pd.DataFrame(
    {
        "name": ["gp-baseline", "width-study"],
        "experiment": ["gp", "sinusoid"],
        "trials": np.array([3, 5], dtype="int64"),
        "finished": np.array([1, 2], dtype="int64"),
        "failed": np.array([2, 1], dtype="int64"),
        "status": ["RUNNING", "FINISHED"],
        "started": ["2026-12-02T13:05:11Z", "2026-12-01T09:00:00Z"],
    }
)


def test_list_sweeps_counts_trials_by_status_newest_first(store):
    sweeps = export.list_sweeps(store.uri)

    pd.testing.assert_frame_equal(sweeps, EXPECTED_SWEEPS)


def test_list_sweeps_follows_pages_and_chunks_of_experiment_ids(store, monkeypatch):
    monkeypatch.setattr(export, "_PAGE_SIZE", 1)
    monkeypatch.setattr(export, "_IDS_PER_SEARCH", 1)

    pd.testing.assert_frame_equal(export.list_sweeps(store.uri), EXPECTED_SWEEPS)


def test_list_sweeps_of_a_store_without_sweeps_is_an_empty_frame_with_the_columns(monkeypatch):
    # Only MLflow's Default experiment: the same answer as a freshly made store, without making one.
    class Page(list):
        token = None

    class Client:
        def __init__(self, uri):
            pass

        def search_experiments(self, **kwargs):
            return Page([SimpleNamespace(experiment_id="0", name="Default")])

        def search_runs(self, experiment_ids, **kwargs):
            raise AssertionError(f"no experiment to search, but asked for {experiment_ids}")

    monkeypatch.setattr("mlflow.tracking.MlflowClient", Client)
    sweeps = export.list_sweeps("http://tracking.invalid")

    assert sweeps.empty
    assert list(sweeps.columns) == list(export.SWEEP_COLUMNS)


def test_list_sweeps_of_a_missing_sqlite_file_is_a_tracking_error_and_creates_nothing(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(TrackingError, match="does not exist"):
        export.list_sweeps(f"sqlite:///{missing}")
    assert not missing.exists()
