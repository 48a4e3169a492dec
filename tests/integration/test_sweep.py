"""End to end on real local Ray and a real MLflow store: spec -> Tune + Optuna -> MLflow."""

from __future__ import annotations

import json
import math
import signal
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from service import conventions as cv
from service.spec import load_spec, shipped_specs
from tests.integration.helpers import Workspace, child_runs, kill_group, parent_runs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke sweep of the shipped sinusoid spec, inspected by several tests."""
    ws = Workspace(tmp_path_factory.mktemp("smoke"))
    proc = ws.cli("run", "sinusoid", "--profile", "smoke", "--name", "smk")
    yield ws, proc
    ws.cleanup()
    assert not ws.leftovers()


def test_smoke_sweep_lands_every_trial_once_finished_under_one_parent(smoke):
    ws, proc = smoke
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = load_spec("sinusoid", profile="smoke")
    runs = child_runs(ws.tracking_uri, "smk")
    parents = parent_runs(ws.tracking_uri, "smk")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(runs) == spec.num_trials == 6
    assert len({r.data.tags[cv.TRIAL_ID] for r in runs}) == 6
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags[cv.PARENT_RUN_ID] for r in runs} == {parents[0].info.run_id}
    cells = sorted(r.data.tags[cv.CELL] for r in runs)
    assert cells == ["width=16"] * 3 + ["width=64"] * 3  # stratified: each cell its quota


def test_the_gp_overlay_runs_on_the_same_seeds_and_is_linked(smoke):
    ws, proc = smoke
    parent = parent_runs(ws.tracking_uri, "smk")[0]
    assert parent.data.tags[cv.OVERLAY] == "smk-overlay"
    gp_runs = child_runs(ws.tracking_uri, "smk-overlay")
    assert len(gp_runs) == load_spec("gp_sinusoid", profile="smoke").num_trials
    assert {r.data.tags[cv.SEEDS] for r in gp_runs} == {"0,1"}  # replicas inherited: same data
    assert {json.loads(r.data.tags[cv.CONFIG])["test_points"] for r in gp_runs} == {200}
    assert "optimum length scale of the overlay sweep smk-overlay" in proc.stdout


def test_runs_carry_reproduction_tags_params_and_metric_curves(smoke):
    ws, _ = smoke
    spec = load_spec("sinusoid", profile="smoke")
    client = MlflowClient(ws.tracking_uri)
    for run in child_runs(ws.tracking_uri, "smk"):
        tags = run.data.tags
        config = json.loads(tags[cv.CONFIG])
        assert tags[cv.SPEC_SHA256] == spec.sha256
        assert tags[cv.SEED] == "0" and tags[cv.SEEDS] == "0,1"
        assert tags[cv.GIT_SHA]
        assert float(run.data.params["sigma_inv"]) == pytest.approx(config["sigma_inv"])
        history = client.get_metric_history(run.info.run_id, "test_mse")
        assert [m.step for m in history] == [20, 40, 60]  # every evaluation, each exactly once
        assert {"test_mse/r0", "test_mse/r1", "train_mse", "ood_mse"} <= set(run.data.metrics)
        plots = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"fit.json", "fit.png"} <= plots
        mean = (run.data.metrics["test_mse/r0"] + run.data.metrics["test_mse/r1"]) / 2
        assert run.data.metrics["test_mse"] == pytest.approx(mean)


def test_plots_draws_any_trials_png_on_demand(smoke):
    ws, _ = smoke
    proc = ws.cli("plots", "smk", "--all", "--tracking-uri", ws.tracking_uri)
    assert proc.returncode == 0 and "plots drawn on 6 run(s)" in proc.stdout, proc.stderr
    missing = ws.cli("plots", "smk", "--trial", "nope", "--tracking-uri", ws.tracking_uri)
    assert missing.returncode == 2 and "has no trial 'nope'" in missing.stderr


def test_curve_png_is_on_the_parent_run(smoke):
    ws, proc = smoke
    parent = parent_runs(ws.tracking_uri, "smk")[0]
    names = [a.path for a in MlflowClient(ws.tracking_uri).list_artifacts(parent.info.run_id)]
    assert "curve.png" in names and "spec.json" in names
    assert "optimum length scale" in proc.stdout


def test_best_and_curves_answer_from_mlflow(smoke):
    ws, _ = smoke
    best = ws.cli("best", "smk", "--format", "json", "--tracking-uri", ws.tracking_uri)
    assert best.returncode == 0, best.stderr
    rows = json.loads(best.stdout)
    assert sorted(r["width"] for r in rows) == [16, 64]
    runs = child_runs(ws.tracking_uri, "smk")
    for row in rows:
        cell = [
            r.data.metrics["test_mse"]
            for r in runs
            if r.data.tags[cv.CELL] == f"width={row['width']}"
        ]
        assert row["test_mse"] == pytest.approx(min(cell))
    curves = ws.cli(
        "curves", "smk", "--format", "json", "--out", "c.png", "--tracking-uri", ws.tracking_uri
    )
    assert curves.returncode == 0, curves.stderr
    optimum = json.loads(curves.stdout)
    assert {o["width"] for o in optimum} == {16, 64}
    assert all(0.05 <= o["x_opt"] <= 20 for o in optimum)
    assert (ws.path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ws.path / "c-trend.png").is_file()  # two widths: the optimum against width too
    parent = parent_runs(ws.tracking_uri, "smk")[0].info.run_id
    client = MlflowClient(ws.tracking_uri)
    assert "c.png" not in {a.path for a in client.list_artifacts(parent)}  # only with --log
    logged = ws.cli("curves", "smk", "--out", "d.pdf", "--log", "--tracking-uri", ws.tracking_uri)
    assert logged.returncode == 0, logged.stderr
    assert {"d.pdf", "d-trend.pdf"} <= {a.path for a in client.list_artifacts(parent)}


def test_a_final_only_objective_is_searched_on_and_lands_once_per_trial(workspace: Workspace):
    # fgsm_acc_0.1 is measured only at the final evaluation: the reports before it lack it, and
    # Tune, Optuna, the tracker and the progress lines must all take that as normal.
    spec = {
        "name": "fin",
        "experiment": "spiral",
        "objective": {"metric": "fgsm_acc_0.1", "mode": "max"},
        "fixed": {"replicas": 2, "width": 8, "steps": 20, "eval_every": 10,
                  "train_points": 40, "test_points": 40, "fgsm_eps": [0.1]},
        "axes": {"entanglement": [6.283, 12.566]},
        "search": {"sigma_inv": {"low": 0.1, "high": 10.0, "log": True}},
        "trials_per_cell": 2,
    }  # fmt: skip
    path = workspace.write_spec("fin", spec)
    proc = workspace.cli("run", str(path), "--name", "fin")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = child_runs(workspace.tracking_uri, "fin")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    client = MlflowClient(workspace.tracking_uri)
    for run in runs:
        final = client.get_metric_history(run.info.run_id, "fgsm_acc_0.1")
        assert [m.step for m in final] == [20]  # the final evaluation only, once
        assert 0.0 <= final[0].value <= 1.0
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [10, 20]
    done = [ln for ln in proc.stdout.splitlines() if " trials, " in ln]
    assert len(done) == 4 and not any("fgsm_acc_0.1=-" in ln for ln in done)
    uri = workspace.tracking_uri
    best = workspace.cli("best", "fin", "--format", "json", "--tracking-uri", uri)
    assert best.returncode == 0, best.stderr
    rows = json.loads(best.stdout)
    assert len(rows) == 2 and all(0.0 <= r["fgsm_acc_0.1"] <= 1.0 for r in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the GPU the sweep asks for")
def test_a_gpu_sweep_without_a_gpu_is_refused_at_once_and_writes_nothing(workspace: Workspace):
    started = time.monotonic()
    proc = workspace.cli("run", "sinusoid", "--profile", "smoke", "--name", "nogpu",
                         "--set", "resources.gpu=0.5")  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "smoothsweep: error: each trial asks for resources.gpu: 0.5 but this Ray has 0 GPU in "
        "all; lower it (e.g. --set resources.gpu=0) or run on a cluster that has it (--address)"
    )
    assert time.monotonic() - started < 60  # not Tune's endless wait for a GPU
    assert MlflowClient(workspace.tracking_uri).get_experiment_by_name("nogpu") is None
    assert not (workspace.path / "sweeps" / "nogpu").exists()


def test_diverging_trials_are_failed_with_reason_and_the_sweep_completes(workspace: Workspace):
    spec = {
        "name": "div",
        "experiment": "sinusoid",
        "objective": {"metric": "test_mse", "mode": "min"},
        "fixed": {
            "width": 8,
            "steps": 40,
            "eval_every": 20,
            "normalise": False,
            "activation": "relu",
            "test_points": 50,
            "ood_points": 50,
        },
        "axes": {"lr": [1.0e-3, 1.0e12]},
        "search": {"noise_std": {"low": 0.1, "high": 0.3}},
        "trials_per_cell": 2,
        "asha": {"grace_period": 1, "reduction_factor": 2},  # the scheduler path, too
    }
    path = workspace.write_spec("div", spec)
    proc = workspace.cli("run", str(path), "--name", "div")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = child_runs(workspace.tracking_uri, "div")
    by_cell = {}
    for r in runs:
        by_cell.setdefault(r.data.tags[cv.CELL], []).append(r)
    assert {r.info.status for r in by_cell["lr=0.001"]} == {"FINISHED"}
    assert {r.info.status for r in by_cell["lr=1000000000000.0"]} == {"FAILED"}
    for r in by_cell["lr=1000000000000.0"]:
        assert "non-finite loss" in r.data.tags[cv.FAILURE_REASON]
        assert r.data.metrics["diverged"] == 1.0
    assert "diverged" in proc.stdout


MIDWAY_SPEC = {
    "experiment": "sinusoid",
    "objective": {"metric": "test_mse", "mode": "min"},
    "fixed": {"steps": 1500, "eval_every": 300, "test_points": 100, "ood_points": 100},
    "axes": {"width": [16, 64]},
    "search": {"sigma_inv": {"low": 0.1, "high": 10.0, "log": True}},
    "trials_per_cell": 4,
    "max_concurrent": 2,
    "pack": 1,  # one configuration per trial (tests/integration/test_packs.py: packs of several)
}


def _start_and_wait_until_midway(workspace: Workspace, name: str, **spec):
    """Start an 8-trial sweep; return once 2 trials have finished and another is running."""
    path = workspace.write_spec(name, {**MIDWAY_SPEC, "name": name, **spec})
    proc = workspace.start("run", str(path), "--name", name)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = child_runs(workspace.tracking_uri, name)
        if sum(r.info.status == "FINISHED" for r in runs) >= 2 and any(
            r.info.status == "RUNNING" for r in runs
        ):
            return proc
        if proc.poll() is not None:
            kill_group(proc)
            pytest.fail("the sweep ended before it could be interrupted")
        time.sleep(0.5)
    kill_group(proc)
    pytest.fail("no trial finished in time")


def _resume_and_check_every_trial_landed_once(workspace: Workspace, name: str) -> None:
    """Every configuration of the sweep in MLflow once, finished, its steps logged once each."""
    resumed = workspace.cli("resume", name, "--tracking-uri", workspace.tracking_uri)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = child_runs(workspace.tracking_uri, name)
    trial_ids = [r.data.tags[cv.TRIAL_ID] for r in runs]
    assert len(trial_ids) == len(set(trial_ids)) == 8
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert not any(cv.FAILURE_REASON in r.data.tags for r in runs)
    client = MlflowClient(workspace.tracking_uri)
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "test_mse")]
        assert steps == sorted(set(steps)), "a step was logged twice"
        assert steps[-1] == 1500
        assert math.isfinite(r.data.metrics["test_mse"])
    assert parent_runs(workspace.tracking_uri, name)[0].info.status == "FINISHED"


def test_killed_driver_resumes_and_every_trial_lands_once(workspace: Workspace):
    proc = _start_and_wait_until_midway(workspace, "kr", overlay="gp_sinusoid")
    kill_group(proc)
    workspace.cleanup()
    before = child_runs(workspace.tracking_uri, "kr")
    assert any(r.info.status == "RUNNING" for r in before)  # orphans, until the resume
    assert not child_runs(workspace.tracking_uri, "kr-overlay")  # killed before the GP's turn
    _resume_and_check_every_trial_landed_once(workspace, "kr")
    # the resumed sweep runs its overlay too: the GP side of the curve is not lost
    gp = child_runs(workspace.tracking_uri, "kr-overlay")
    assert len(gp) == load_spec("gp_sinusoid").num_trials
    assert {r.info.status for r in gp} == {"FINISHED"}
    assert parent_runs(workspace.tracking_uri, "kr")[0].data.tags[cv.OVERLAY] == "kr-overlay"


def test_sigterm_stops_the_sweep_cleanly_and_resume_finishes_it(workspace: Workspace):
    """What `smoothsweep jobs stop` and a scheduler's pre-emption send: nothing is left RUNNING."""
    proc = _start_and_wait_until_midway(workspace, "term")
    proc.send_signal(signal.SIGTERM)  # the driver alone, as Ray Jobs does
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    workspace.cleanup()
    assert proc.returncode == 1 and "Traceback" not in out
    assert out.strip().splitlines()[-1] == (
        "smoothsweep: error: sweep 'term' interrupted; continue it with `smoothsweep resume term`"
    )
    stopped = child_runs(workspace.tracking_uri, "term")
    assert "RUNNING" not in {r.info.status for r in stopped}
    assert {r.info.status for r in stopped} == {"FINISHED", "KILLED"}
    assert parent_runs(workspace.tracking_uri, "term")[0].info.status == "KILLED"
    _resume_and_check_every_trial_landed_once(workspace, "term")


# Shipped specs whose smoke sweep another test already runs end to end (and checks more closely).
COVERED_ELSEWHERE = {"sinusoid": "the smoke fixture above", "spiral": "test_tracking_server.py"}


@pytest.mark.parametrize("name", sorted(set(shipped_specs()) - set(COVERED_ELSEWHERE)))
def test_every_shipped_spec_runs_its_smoke_profile(name, workspace: Workspace):
    proc = workspace.cli("run", name, "--profile", "smoke", "--name", f"{name}-smoke")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = child_runs(workspace.tracking_uri, f"{name}-smoke")
    assert len(runs) == load_spec(name, profile="smoke").num_trials
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_ui_serves_the_sweep_and_its_curve(smoke):
    import subprocess
    import urllib.request

    from tests.integration.helpers import CLI, free_port

    ws, _ = smoke
    port = free_port()
    ui = subprocess.Popen(
        [*CLI, "ui", "--port", str(port), "--tracking-uri", ws.tracking_uri],
        cwd=ws.path, env=ws.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                assert ui.poll() is None, "the UI exited"
                time.sleep(0.5)
        runs = child_runs(base, "smk")
        assert len(runs) == 6
        parent = parent_runs(base, "smk")[0].info.run_id
        url = f"{base}/get-artifact?path=curve.png&run_uuid={parent}"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        import os
        import signal

        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
