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
from tests.integration.helpers import Workspace, child_runs, kill_group, parent_runs  # noqa: F401

pytestmark = pytest.mark.integration


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
        # the means are metrics; each replica's final values one tag, out of the charts' way
        assert {"test_mse", "train_mse", "ood_mse"} <= set(run.data.metrics)
        assert not [m for m in run.data.metrics if "/r" in m]
        replicas = cv.parse_replicas_tag(tags[cv.REPLICAS])
        plots = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"fit.json", "fit.png"} <= plots
        mean = (replicas["test_mse/r0"] + replicas["test_mse/r1"]) / 2
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


def test_dashboard_serves_each_cells_study_with_every_trial(smoke):
    """`smoothsweep dashboard` on the sweep's Optuna journal: optuna-dashboard's own API lists a
    study per cell holding exactly the trials MLflow has, with the same values."""
    import urllib.request

    from tests.integration.helpers import free_port

    ws, _ = smoke
    port = free_port()
    proc = ws.start("dashboard", "smk", "--port", str(port))
    try:
        api = f"http://127.0.0.1:{port}/api/studies"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(api, timeout=2) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.3)
        assert sorted(s["study_name"] for s in studies) == ["smk/width=16", "smk/width=64"]
        shown = []
        for study in studies:
            with urllib.request.urlopen(f"{api}/{study['study_id']}", timeout=10) as r:
                trials = json.load(r)["trials"]
            assert len(trials) == 3 and {t["state"] for t in trials} == {"Complete"}
            shown += [t["values"][0] for t in trials]
    finally:
        kill_group(proc)
    logged = [r.data.metrics["test_mse"] for r in child_runs(ws.tracking_uri, "smk")]
    assert sorted(shown) == pytest.approx(sorted(logged))


def test_optuna_plots_are_valid_pngs_on_the_parent_run(smoke, tmp_path):

    ws, _ = smoke
    parent = parent_runs(ws.tracking_uri, "smk")[0]
    client = MlflowClient(ws.tracking_uri)
    names = sorted(a.path for a in client.list_artifacts(parent.info.run_id, "optuna"))
    # 3 trials a cell: too few for importances (PED-ANOVA wants 10), enough for the rest
    assert names == [f"optuna/optuna-width_{w}-{kind}.png" for w in (16, 64)
                     for kind in ("contour", "history", "slice")]  # fmt: skip
    _assert_images(client, parent.info.run_id, names, tmp_path)


def _assert_images(client, run_id: str, names: list[str], tmp_path) -> None:
    """Each artifact is a PNG (its signature) of a plausible size (300 px or more a side)."""
    import matplotlib.image

    for name in names:
        path = client.download_artifacts(run_id, name, str(tmp_path))
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        height, width = matplotlib.image.imread(path).shape[:2]
        assert width >= 300 and height >= 300


def test_sweeps_lists_the_store_and_export_writes_one_row_per_replica(smoke):
    import pandas as pd

    ws, _ = smoke
    listed = ws.cli("sweeps", "--format", "json", "--tracking-uri", ws.tracking_uri)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"smk", "smk-overlay"}
    assert (rows["smk"]["experiment"], rows["smk"]["trials"], rows["smk"]["finished"]) == (
        "sinusoid",
        6,
        6,
    )
    assert rows["smk"]["status"] == "FINISHED"
    out = ws.path / "smk.csv"
    proc = ws.cli("export", "smk", "--out", str(out), "--tracking-uri", ws.tracking_uri)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 12 and sorted(frame["replica"].unique()) == [0, 1]
    for run in child_runs(ws.tracking_uri, "smk"):
        mine = frame[frame["run_id"] == run.info.run_id]
        assert mine["test_mse"].mean() == pytest.approx(run.data.metrics["test_mse"])


def test_a_time_budget_ends_the_sweep_cleanly_and_says_so(workspace: Workspace):
    proc = workspace.cli(
        "run", "sinusoid", "--profile", "smoke", "--name", "budget", "--set", "overlay=null",
        "--set", "trials_per_cell=500", "--set", "pack=1", "--set", "budget.time_s=10",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep budget ended at its time budget of 10 s" in proc.stdout
    parent = parent_runs(workspace.tracking_uri, "budget")[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[cv.ENDED_BY].startswith("its time budget of 10 s")
    runs = child_runs(workspace.tracking_uri, "budget")
    statuses = [r.info.status for r in runs]
    assert "RUNNING" not in statuses and 0 < statuses.count("FINISHED") < 1000
    assert statuses.count("KILLED") <= 2  # at most the trials running at the end (max_concurrent)


EDGE = {
    "name": "gpedge", "experiment": "gp", "objective": {"metric": "test_mse", "mode": "min"},
    "fixed": {"replicas": 2, "test_points": 200, "ood_points": 200},
    "axes": {"train_points": [100]},
    "search": {"length_scale": {"low": 0.02, "high": 0.15, "log": True}},  # below λ* ≈ 1.7
    "trials_per_cell": 8, "max_concurrent": 2,
}  # fmt: skip


def test_extend_widens_an_edge_optimum_into_the_interior_pooling_the_old_trials(
    workspace: Workspace,
):
    spec = workspace.write_spec("edge", EDGE)
    first = workspace.cli("run", str(spec), "--name", "edge")
    assert first.returncode == 0, first.stderr[-3000:]
    command = "smoothsweep extend edge --set search.length_scale.high=1.5"
    assert command in first.stdout  # the edge flag says how to widen that side
    proc = workspace.cli(
        "extend", "edge", "--set", "search.length_scale.high=20", "--trials", "10",
        "--format", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep edge-ext: extends edge (gp), 1 cell(s) x 10 new trials" in proc.stdout
    parent = parent_runs(workspace.tracking_uri, "edge-ext")[0]
    assert parent.data.tags[cv.EXTENDS] == "edge"
    assert len(child_runs(workspace.tracking_uri, "edge-ext")) == 10  # no old trial re-run
    optimum = json.loads(proc.stdout.split("optimum length scale:\n")[1].split("\n]")[0] + "\n]")
    (row,) = optimum
    assert row["n_trials"] == 18  # pooled: 8 earlier + 10 new
    # beyond the old edge, inside the widened range, its CI too, and no flag
    assert 0.15 < row["x_opt"] < 20 and not row["flags"]
    assert 0.02 < row["ci_low"] <= row["x_opt"] <= row["ci_high"] < 20
    assert parent.data.metrics["x_opt/train_points_100"] == pytest.approx(row["x_opt"])


def test_plots_puts_optuna_importance_slice_contour_and_history_on_the_parent_run(
    workspace: Workspace, tmp_path
):
    proc = workspace.cli(
        "run", "sinusoid", "--profile", "smoke", "--name", "many", "--set", "overlay=null",
        "--set", "width=16", "--set", "trials_per_cell=12",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plots = workspace.cli("plots", "many", "--tracking-uri", workspace.tracking_uri)
    assert plots.returncode == 0, plots.stderr[-3000:]
    parent = parent_runs(workspace.tracking_uri, "many")[0]
    client = MlflowClient(workspace.tracking_uri)
    names = sorted(a.path for a in client.list_artifacts(parent.info.run_id, "optuna"))
    kinds = ("contour", "history", "importance", "slice")
    assert names == [f"optuna/optuna-all-{kind}.png" for kind in kinds]  # one cell: "all"
    _assert_images(client, parent.info.run_id, names, tmp_path)
