"""How a sweep reads in the MLflow UI (`service.mlflow_view`): names, the shared view, the parent
run's params and live results, and the per-replica tag. The browser test is
tests/integration/test_mlflow_ui.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from service import conventions as cv
from service import mlflow_view as view
from service.search import OptunaJournal
from service.spec import load_spec
from service.tracking import SweepRecord, sweep_tags

SPEC = load_spec("sinusoid", profile="smoke")  # width 16 and 64, σ⁻¹ and lr searched


def test_child_run_names_read_as_cell_searched_values_and_number():
    config = {"width": 16, "sigma_inv": 1.3397, "lr": 0.0051902, "steps": 60}
    name = view.run_name(config, ["width"], ["sigma_inv", "lr"], 12)
    assert name == "width=16 σ⁻¹=1.34 lr=0.0052 #12"
    assert view.run_name({"length_scale": 250.0}, [], ["length_scale"], 1) == "λ=250 #1"


def test_parent_metric_names_are_valid_mlflow_names_per_cell():
    assert view.summary_metric("x_opt", {}) == "x_opt"
    assert view.summary_metric("x_opt", {"width": 16}) == "x_opt/width_16"
    two = view.summary_metric("x_opt", {"width": 64, "entanglement": 12.566})
    assert two == "x_opt/entanglement_12.566/width_64"
    from mlflow.utils.validation import _validate_metric_name

    for name in ("x_opt/width_16", two, "best_test_acc/entanglement_12.566/width_16"):
        _validate_metric_name(name)  # raises on a name MLflow refuses (`=` and `,` are two)


def test_the_shared_view_selects_axes_searched_objective_and_x_opt():
    state = view.view_state(SPEC)
    assert state["selectedColumns"] == [
        "params.`width`", "params.`sigma_inv`", "params.`lr`", "metrics.`test_mse`",
        "metrics.`x_opt/width_16`", "metrics.`x_opt/width_64`",
    ]  # fmt: skip
    link = view.ui_link("7")
    assert link == (
        "http://127.0.0.1:5000/#/experiments/7/runs"
        "?viewStateShareKey=smoothsweep&workflowType=machine_learning"
    )
    assert view.ui_base("http://mlflow:5000") == "http://mlflow:5000"


def test_the_experiment_gets_description_and_view_and_the_parent_its_params(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    record = SweepRecord(uri, "sw").open(sweep_tags(SPEC), spec=SPEC)
    client = MlflowClient(uri)
    tags = client.get_experiment(record.experiment_id).tags
    assert tags[view.DESCRIPTION_TAG] == SPEC.description
    assert json.loads(tags[view.VIEW_TAG]) == view.view_state(SPEC)
    params = client.get_run(record.parent_run_id).data.params
    assert params["axis.width"] == "16, 64"
    assert params["search.sigma_inv"] == "[0.05, 20] log"
    assert params["trials"] == "6" and params["fixed.steps"] == "60"
    assert params["experiment"] == "sinusoid"
    SweepRecord(uri, "sw").open(sweep_tags(SPEC), spec=SPEC)  # resume: same params, no error
    assert len(client.search_runs([record.experiment_id])) == 1


def test_live_summary_counts_bests_and_finds_the_optimum_of_a_known_bowl():
    live = view.LiveSummary(SPEC)
    rng = np.random.default_rng(0)
    for s in np.geomspace(0.1, 10, 15):
        lr = float(rng.uniform(1e-3, 1e-2))
        mse = (math.log(s) - math.log(1.5)) ** 2 + 0.1
        metrics = {"test_mse": mse, "test_mse/r0": mse - 0.01, "test_mse/r1": mse + 0.01}
        live.add("width=16", {"sigma_inv": float(s), "lr": lr}, metrics)
    live.add("width=64", {"sigma_inv": 1.0, "lr": 1e-3}, {"test_mse": math.nan,
                                                          cv.STATUS: "failed"})  # fmt: skip
    counts = live.counts()
    assert counts["trials_finished/width_16"] == 15 and counts["trials_failed/width_16"] == 0
    assert counts["trials_failed/width_64"] == 1 and counts["trials_finished/width_64"] == 0
    assert counts["best_test_mse/width_16"] == pytest.approx(0.1, abs=0.01)
    assert "best_test_mse/width_64" not in counts  # nothing finished there
    fit = live.fit()
    assert fit["x_opt/width_16"] == pytest.approx(1.5, rel=0.15)
    assert fit["x_opt_ci_low/width_16"] <= fit["x_opt/width_16"] <= fit["x_opt_ci_high/width_16"]
    assert "x_opt/width_64" not in fit and not live.unfitted


def test_replica_values_round_trip_through_one_tag():
    metrics = {"test_mse/r0": 0.5, "test_mse/r1": math.inf, "train_mse/r0": 0.25,
               "test_mse": 0.7}  # fmt: skip
    tag = cv.replicas_tag(metrics)
    assert json.loads(tag) == {"test_mse": [0.5, None], "train_mse": [0.25]}
    back = cv.parse_replicas_tag(tag)
    assert back["test_mse/r0"] == 0.5 and math.isnan(back["test_mse/r1"])
    assert back["train_mse/r0"] == 0.25 and "test_mse" not in back
    assert cv.parse_replicas_tag("not json") == {} and cv.parse_replicas_tag(None) == {}


def test_the_optuna_journal_holds_each_trial_once_across_a_reopen(tmp_path):
    import optuna

    path = str(tmp_path / "optuna.journal")
    cells = [{"width": 16}, {"width": 64}]
    study = optuna.create_study()
    dist = {"sigma_inv": optuna.distributions.FloatDistribution(0.1, 10, log=True)}
    for i in range(3):
        t = study.ask(dist)
        study.tell(t, float(i))
    mirror = OptunaJournal(path, "sw", cells, study.direction)
    for trial in study.get_trials():
        mirror.add(0, trial)
    again = OptunaJournal(path, "sw", cells, study.direction)  # a resumed driver
    for trial in study.get_trials():  # replays every tell
        again.add(0, trial)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    loaded = optuna.load_study(study_name="sw/width=16", storage=storage)
    assert [t.value for t in loaded.trials] == [0.0, 1.0, 2.0]
    assert loaded.trials[1].params == study.trials[1].params
    assert optuna.load_study(study_name="sw/width=64", storage=storage).trials == []
