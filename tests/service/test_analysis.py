"""Analysis on hand-built trials with known answers; one round trip through a real MLflow store."""

from __future__ import annotations

import math
import socket
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from service import analysis
from service import conventions as cv
from service.errors import SpecError, TrackingError

T_975_DF2 = 4.302652729911275  # Student t quantile, 97.5 %, 2 degrees of freedom (from tables)


def _trials(rows: list[dict], **attrs) -> pd.DataFrame:
    """A trials frame as `load_trials` shapes it: bookkeeping columns, config, metrics, attrs."""
    frame = pd.DataFrame(
        [
            {
                "sweep": "demo",
                "run_id": f"run{i}",
                "trial_id": f"t_{i:05d}",
                "status": "FINISHED",
                "failure_reason": None,
                "cell": f"width={row.get('width')}",
                **row,
            }
            for i, row in enumerate(rows)
        ]
    )
    frame.attrs.update({"axes": ["width"], "objective_metric": "test_mse", "objective_mode": "min"})
    frame.attrs.update(attrs)
    return frame


def _with_replicas(metric: str, values: list[float]) -> dict[str, float]:
    row = {cv.replica_metric(metric, k): v for k, v in enumerate(values)}
    row[metric] = float(np.mean(values))
    return row


def _parabola_trials(
    optima: dict[int, float], n: int = 25, replicas: int = 4, seed: int = 0
) -> pd.DataFrame:
    """test_mse = exp((log x - log x*)^2) with 5 % multiplicative seed noise, per width."""
    rng = np.random.default_rng(seed)
    rows = []
    for width, best in optima.items():
        for x in np.geomspace(0.05, 50, n):
            true = math.exp((math.log(x) - math.log(best)) ** 2)
            values = true * np.exp(0.05 * rng.standard_normal(replicas))
            rows.append(
                {"width": width, "sigma_inv": float(x), **_with_replicas("test_mse", values)}
            )
    return _trials(rows, search={"sigma_inv": {"low": 0.05, "high": 50.0, "log": True}})


# --------------------------------------------------------------------------------------------
# optimum


def test_optimum_finds_parabola_vertex_per_group_with_covering_ci():
    result = analysis.optimum(_parabola_trials({10: 2.0, 100: 0.5}), n_boot=200)

    assert list(result.columns) == ["width", *analysis.OPTIMUM_COLUMNS]
    assert result["width"].tolist() == [10, 100]
    for (_, row), truth in zip(result.iterrows(), [2.0, 0.5], strict=True):
        assert abs(row["x_opt"] - truth) / truth < 0.05
        assert row["ci_low"] <= truth <= row["ci_high"]
        assert row["metric_at_opt"] == pytest.approx(1.0, rel=0.05)
        assert row["fit"] == "smooth" and row["flags"] == "" and row["method"] == "smooth"
        assert not row["at_edge"]
        assert row["n_trials"] == 25


def test_optimum_is_deterministic_for_a_seed():
    trials = _parabola_trials({10: 2.0})
    first = analysis.optimum(trials, n_boot=50, seed=3)
    pd.testing.assert_frame_equal(first, analysis.optimum(trials, n_boot=50, seed=3))


@pytest.mark.parametrize(
    ("bounds", "attrs_search"),
    [
        (None, {"sigma_inv": {"low": 0.1, "high": 10.0, "log": True}}),  # from the sweep's search
        ((0.1, 10.0), {}),  # given explicitly
        (None, {}),  # observed range
    ],
)
def test_optimum_beyond_the_searched_range_is_flagged_at_edge(bounds, attrs_search):
    # Monotone decreasing: the true optimum lies above the searched range.
    rows = [
        {"width": 10, "sigma_inv": float(x), **_with_replicas("test_mse", [1 / x, 1.1 / x])}
        for x in np.geomspace(0.1, 10, 12)
    ]
    result = analysis.optimum(_trials(rows, search=attrs_search), bounds=bounds, n_boot=50)

    row = result.iloc[0]
    assert row["at_edge"]
    assert row["fit"] == "edge"
    assert row["x_opt"] == pytest.approx(10.0)


def test_optimum_in_max_mode_finds_the_peak():
    rows = [
        {"width": 10, "sigma_inv": float(x), **_with_replicas("test_acc", [a - 0.01, a + 0.01])}
        for x in np.geomspace(0.1, 100, 20)
        for a in [0.9 - 0.05 * (math.log(x) - math.log(3.0)) ** 2]
    ]
    result = analysis.optimum(_trials(rows), metric="test_acc", mode="max", n_boot=100)

    row = result.iloc[0]
    assert row["x_opt"] == pytest.approx(3.0, rel=0.05)
    assert row["ci_low"] <= 3.0 <= row["ci_high"]
    assert row["metric_at_opt"] == pytest.approx(0.9, abs=1e-5)  # the ridge keeps it a hair off


def test_optimum_takes_max_mode_from_the_sweep_objective():
    rows = [
        {"width": 10, "sigma_inv": float(x), "test_acc": 1 - (math.log(x) - math.log(3.0)) ** 2}
        for x in np.geomspace(0.1, 100, 20)
    ]
    trials = _trials(rows, objective_metric="test_acc", objective_mode="max")
    assert analysis.optimum(trials, n_boot=0).iloc[0]["x_opt"] == pytest.approx(3.0, rel=1e-6)


# --------------------------------------------------------------------------------------------
# best_configs


def test_best_configs_picks_best_finished_finite_rows_per_group():
    rows = [
        {"width": 10, "sigma_inv": 1.0, "lr": 0.1, "test_mse": 0.30},
        {"width": 10, "sigma_inv": 2.0, "lr": 0.1, "test_mse": 0.10},  # best of width 10
        {"width": 10, "sigma_inv": 4.0, "lr": 0.1, "test_mse": 0.01, "status": "FAILED"},
        {"width": 10, "sigma_inv": 8.0, "lr": 0.1, "test_mse": math.nan},
        {"width": 100, "sigma_inv": 0.5, "lr": 0.2, "test_mse": 0.05},  # best of width 100
        {"width": 100, "sigma_inv": 1.0, "lr": 0.2, "test_mse": math.inf},
        {"width": 100, "sigma_inv": 2.0, "lr": 0.2, "test_mse": 0.20},
    ]
    trials = _trials(rows)

    best = analysis.best_configs(trials)
    assert best["trial_id"].tolist() == ["t_00001", "t_00004"]
    assert list(best.columns) == [
        "width",
        "sigma_inv",
        "lr",
        "test_mse",
        "cell",
        "trial_id",
        "run_id",
    ]

    top2 = analysis.best_configs(trials, top=2)
    assert top2["trial_id"].tolist() == ["t_00001", "t_00000", "t_00004", "t_00006"]

    worst = analysis.best_configs(trials, mode="max", by=[])
    assert worst["trial_id"].tolist() == ["t_00000"]


# --------------------------------------------------------------------------------------------
# length_scale_curve


def test_length_scale_curve_pools_replicas_with_t_interval():
    rows = [
        {"width": 10, "sigma_inv": 1.0, **_with_replicas("test_mse", [1.0, 2.0, 3.0])},
        {"width": 10, "sigma_inv": 2.0, **_with_replicas("test_mse", [1.0, 2.0, math.nan])},
        {"width": 10, "sigma_inv": 2.0, **_with_replicas("test_mse", [3.0, math.nan, math.nan])},
        {"width": 10, "sigma_inv": 4.0, **_with_replicas("test_mse", [5.0, math.nan, math.nan])},
        {
            "width": 10,
            "sigma_inv": 8.0,
            "status": "FAILED",
            **_with_replicas("test_mse", [0, 0, 0]),
        },
    ]
    curve = analysis.length_scale_curve(_trials(rows))

    assert list(curve.columns) == ["width", "sigma_inv", "mean", "sem", "ci_low", "ci_high", "n"]
    assert curve["sigma_inv"].tolist() == [1.0, 2.0, 4.0]
    half = T_975_DF2 / math.sqrt(3)
    for i in (0, 1):  # [1, 2, 3] in one trial, and pooled over two trials at the same x
        assert curve.loc[i, "mean"] == pytest.approx(2.0)
        assert curve.loc[i, "sem"] == pytest.approx(1 / math.sqrt(3))
        assert curve.loc[i, "ci_low"] == pytest.approx(2.0 - half)
        assert curve.loc[i, "ci_high"] == pytest.approx(2.0 + half)
        assert curve.loc[i, "n"] == 3
    single = curve.iloc[2]
    assert math.isnan(single["sem"])
    assert single["ci_low"] == single["ci_high"] == single["mean"] == 5.0


def test_length_scale_curve_falls_back_to_the_plain_metric():
    rows = [{"width": 10, "sigma_inv": 1.0, "test_mse": v} for v in (1.0, 2.0, 3.0)]
    curve = analysis.length_scale_curve(_trials(rows), by=[])

    assert list(curve.columns) == ["sigma_inv", "mean", "sem", "ci_low", "ci_high", "n"]
    assert curve.iloc[0][["mean", "n"]].tolist() == [2.0, 3]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda t: analysis.optimum(t, x="foo"),
            "`x` must be a column of the trials, but got 'foo'",
        ),
        (lambda t: analysis.length_scale_curve(t, metric="nope"), "`metric` must be a column"),
        (lambda t: analysis.best_configs(t, by=["depth"]), "`by` must be a column"),
        (lambda t: analysis.best_configs(t, mode="best"), "`mode` must be 'min' or 'max'"),
        (lambda t: analysis.best_configs(t, top=0), "`top` must be >= 1, but got 0"),
        (lambda t: analysis.length_scale_curve(t, confidence=1.5), "`confidence` must satisfy"),
        (lambda t: analysis.optimum(t, x="width", by=["width"]), "`by` must not contain"),
    ],
)
def test_bad_arguments_raise_one_line_spec_errors(call, match):
    trials = _trials([{"width": 10, "sigma_inv": 1.0, "test_mse": 1.0}])
    with pytest.raises(SpecError, match=match) as info:
        call(trials)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# plots


# --------------------------------------------------------------------------------------------
# load_trials against a real MLflow SQLite store

SEARCH = {"sigma_inv": {"low": 0.1, "high": 10.0, "log": True}}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SimpleNamespace:
    """A sweep as the tracking module writes it: a parent run and three trial runs."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("demo-sweep")
    parent = client.create_run(
        experiment,
        tags={
            cv.ROLE: cv.ROLE_SWEEP,
            cv.SWEEP: "demo-sweep",
            cv.EXPERIMENT: "sinusoid",
            cv.OBJECTIVE_METRIC: "test_mse",
            cv.OBJECTIVE_MODE: "min",
            cv.AXES: cv.dumps(["width"]),
            cv.SEARCH: cv.dumps(SEARCH),
        },
    ).info.run_id
    now = int(time.time() * 1000)
    # Created out of trial-id order, so the sort is exercised.
    for trial, width, status in [(2, 64, "FAILED"), (0, 64, "FINISHED"), (1, 128, "FINISHED")]:
        config = {"width": width, "sigma_inv": 0.5 * (trial + 1), "bias": trial != 1, "act": "tanh"}
        tags = {
            cv.ROLE: cv.ROLE_TRIAL,
            cv.PARENT_RUN_ID: parent,
            cv.TRIAL_ID: f"abc_{trial:05d}",
            cv.CELL: cv.cell_label({"width": width}),
            cv.CONFIG: cv.dumps(config),
        }
        if status == "FAILED":
            tags[cv.FAILURE_REASON] = "diverged"
        run = client.create_run(experiment, tags=tags).info.run_id
        values = {"test_mse": 0.1 * (trial + 1), "test_mse/r0": 0.1 * trial, "test_mse/r1": 0.2}
        client.log_batch(run, metrics=[Metric(k, v, now, 0) for k, v in values.items()])
        client.set_terminated(run, status=status)
    client.set_terminated(parent)
    return SimpleNamespace(uri=uri, parent=parent)


def test_load_trials_round_trips_types_values_and_attrs(store):
    trials = analysis.load_trials("demo-sweep", store.uri)

    assert trials["trial_id"].tolist() == ["abc_00000", "abc_00001", "abc_00002"]
    assert trials["status"].tolist() == ["FINISHED", "FINISHED", "FAILED"]
    assert trials["failure_reason"].isna().tolist() == [True, True, False]
    assert trials["failure_reason"].iloc[2] == "diverged"
    assert trials["cell"].tolist() == ["width=64", "width=128", "width=64"]
    assert (trials["sweep"] == "demo-sweep").all()
    assert list(trials.columns) == [
        *analysis.BASE_COLUMNS,
        "act",
        "bias",
        "sigma_inv",
        "width",
        "test_mse",
        "test_mse/r0",
        "test_mse/r1",
    ]
    assert trials["width"].dtype == np.int64
    assert trials["sigma_inv"].dtype == np.float64
    assert trials["bias"].dtype == np.bool_
    assert pd.api.types.is_string_dtype(trials["act"])
    assert trials["width"].tolist() == [64, 128, 64]
    assert trials["sigma_inv"].tolist() == [0.5, 1.0, 1.5]
    assert trials["bias"].tolist() == [True, False, True]
    assert trials["act"].tolist() == ["tanh"] * 3
    for column in ("test_mse", "test_mse/r0", "test_mse/r1"):
        assert trials[column].dtype == np.float64
    assert trials["test_mse"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert trials["test_mse/r0"].tolist() == pytest.approx([0.0, 0.1, 0.2])

    attrs = trials.attrs
    assert attrs["sweep"] == "demo-sweep"
    assert attrs["experiment"] == "sinusoid"
    assert (attrs["objective_metric"], attrs["objective_mode"]) == ("test_mse", "min")
    assert attrs["axes"] == ["width"]
    assert attrs["search"] == SEARCH
    assert attrs["parent_run_id"] == store.parent

    # The defaults of the analysis come from these attrs: width groups, test_mse, min.
    best = analysis.best_configs(trials)
    assert best["trial_id"].tolist() == ["abc_00000", "abc_00001"]
    assert best["width"].tolist() == [64, 128]


def test_search_runs_follows_every_page(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name("demo-sweep").experiment_id
    assert len(analysis._search_runs(client, experiment, page_size=1)) == 4


def test_load_trials_of_an_unknown_sweep_names_it_and_how_to_list(store):
    with pytest.raises(TrackingError, match="no sweep named 'nope'.*demo-sweep.*smoothsweep ui"):
        analysis.load_trials("nope", store.uri)


def test_load_trials_from_an_unreachable_server_names_the_uri(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    with pytest.raises(TrackingError, match=f"cannot reach .* at {uri}"):
        analysis.load_trials("demo-sweep", uri)


def test_load_trials_does_not_create_a_missing_sqlite_store(tmp_path):
    missing = tmp_path / "typo.db"
    with pytest.raises(TrackingError, match="does not exist"):
        analysis.load_trials("demo-sweep", f"sqlite:///{missing}")
    assert not missing.exists()
