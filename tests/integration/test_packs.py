"""Packed trials end to end: many configurations per Tune trial, each a first-class trial."""

from __future__ import annotations

import json
import pickle

import pytest
from mlflow.tracking import MlflowClient

from service import conventions as cv
from service.search import StratifiedOptuna
from service.spec import load_spec
from tests.integration.helpers import Workspace, child_runs, kill_group
from tests.integration.test_sweep import (
    _resume_and_check_every_trial_landed_once,
    _start_and_wait_until_midway,
)

pytestmark = pytest.mark.integration


def test_a_packed_smoke_sweep_lands_every_configuration_once_and_answers(workspace: Workspace):
    proc = workspace.cli("run", "sinusoid", "--profile", "smoke", "--set", "pack=3",
                         "--name", "pk")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = child_runs(workspace.tracking_uri, "pk")
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags[cv.TRIAL_ID] for r in runs}) == 6
    packs = {r.data.tags[cv.PACK_ID] for r in runs}
    assert len(packs) == 2  # one Tune trial per cell: 3 configurations each
    assert len({(r.data.params["sigma_inv"], r.data.params["lr"]) for r in runs}) == 6
    # Optuna was told each configuration's own value (Tune hands its searcher flattened results)
    state = next((workspace.path / "sweeps" / "pk").glob("searcher-state-*.pkl"))
    studies = pickle.loads(state.read_bytes())["studies"]
    told = sorted(t.value for study in studies for t in study.trials)
    assert told == pytest.approx(sorted(r.data.metrics["test_mse"] for r in runs))
    done = [ln for ln in proc.stdout.splitlines() if " trials, " in ln]
    assert len(done) == 6 + 6  # one line per configuration: the sweep's and its GP overlay's
    assert done[5].startswith("[6/6 trials") and done[11].startswith("[6/6 trials")
    uri = workspace.tracking_uri
    best = json.loads(workspace.cli("best", "pk", "--format", "json", "--tracking-uri", uri).stdout)
    for row in best:
        cell = [r.data.metrics["test_mse"] for r in runs
                if r.data.tags[cv.CELL] == f"width={row['width']}"]  # fmt: skip
        assert row["test_mse"] == pytest.approx(min(cell))
    curves = workspace.cli("curves", "pk", "--format", "json", "--tracking-uri", uri)
    assert curves.returncode == 0, curves.stderr
    assert {o["width"] for o in json.loads(curves.stdout)} == {16, 64}


def test_a_driver_killed_mid_sweep_with_packs_resumes_with_every_configuration_once(
    workspace: Workspace,
):
    proc = _start_and_wait_until_midway(workspace, "kp", pack=2)
    kill_group(proc)
    workspace.cleanup()
    _resume_and_check_every_trial_landed_once(workspace, "kp")
    packs = {r.data.tags[cv.PACK_ID] for r in child_runs(workspace.tracking_uri, "kp")}
    assert len(packs) >= 4  # 8 configurations in packs of 2


DIVERGING = {
    "experiment": "sinusoid",
    "objective": {"metric": "test_mse", "mode": "min"},
    "fixed": {"width": 8, "steps": 40, "eval_every": 20, "normalise": False, "activation": "relu",
              "test_points": 50, "ood_points": 50, "replicas": 2},
    "search": {"lr": {"low": 1.0e-4, "high": 1.0e14, "log": True}},
    "trials_per_cell": 4,
    "sampler": "random",
    "max_concurrent": 1,
}  # fmt: skip


def _mixed_seed() -> int:
    """A sampler seed whose four learning rates hold both diverging and training ones."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in range(50):
        spec = load_spec({**DIVERGING, "name": "x", "sampler_seed": seed, "pack": 4})
        lrs = [m["lr"] for m in StratifiedOptuna(spec, [4]).suggest("t")[cv.PACK]]
        if sum(lr > 1e12 for lr in lrs) >= 1 and sum(lr < 1e3 for lr in lrs) >= 2:
            return seed
    raise AssertionError("no seed in 0..49 mixes diverging and training learning rates")


def test_a_diverging_configuration_fails_alone_and_its_pack_trains_on_as_without_it(
    workspace: Workspace,
):
    seed = _mixed_seed()
    for name, pack in (("mixed", 4), ("alone", 1)):
        spec = {**DIVERGING, "name": name, "sampler_seed": seed, "pack": pack}
        proc = workspace.cli("run", str(workspace.write_spec(name, spec)), "--name", name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    mixed = {r.data.params["lr"]: r for r in child_runs(workspace.tracking_uri, "mixed")}
    alone = {r.data.params["lr"]: r for r in child_runs(workspace.tracking_uri, "alone")}
    assert sorted(mixed) == sorted(alone) and len(mixed) == 4  # the same four configurations
    assert len({r.data.tags[cv.PACK_ID] for r in mixed.values()}) == 1
    statuses = [r.info.status for r in mixed.values()]
    assert "FAILED" in statuses and statuses.count("FINISHED") >= 2
    for lr, run in mixed.items():
        assert run.info.status == alone[lr].info.status, lr  # packed or alone, the same verdict
        if run.info.status == "FAILED":
            assert "non-finite loss" in run.data.tags[cv.FAILURE_REASON]
            continue
        for key in ("test_mse", "train_mse", "ood_mse"):
            assert run.data.metrics[key] == pytest.approx(alone[lr].data.metrics[key], 1e-6)


def test_asha_in_a_pack_stops_its_worst_configurations_at_each_rung(workspace: Workspace):
    spec = {**DIVERGING, "name": "rungs", "pack": 4, "fixed": {**DIVERGING["fixed"], "steps": 60},
            "search": {"lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}},
            "asha": {"grace_period": 1, "reduction_factor": 2}}  # fmt: skip
    proc = workspace.cli("run", str(workspace.write_spec("rungs", spec)), "--name", "rungs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = child_runs(workspace.tracking_uri, "rungs")
    client = MlflowClient(workspace.tracking_uri)
    last = {}
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "test_mse")
        last[r.data.tags[cv.TRIAL_ID]] = (history[-1].step, history[-1].value)
        assert r.info.status == "FINISHED"
    # rung 1 (report 1, step 20) keeps the best 2 of 4; rung 2 (step 40) the best 1 of 2
    assert sorted(step for step, _ in last.values()) == [20, 20, 40, 60]
    stopped = [r for r in runs if cv.STOPPED_EARLY in r.data.tags]
    assert len(stopped) == 3
    at_20 = [v for s, v in last.values() if s == 20]
    survivors = [r for r in runs if last[r.data.tags[cv.TRIAL_ID]][0] > 20]
    for r in survivors:  # each survivor of rung 1 was better there than both it stopped
        value_20 = client.get_metric_history(r.info.run_id, "test_mse")[0].value
        assert all(value_20 <= v for v in at_20)
