"""The CLI in-process: listings, one-off training, and one-line errors with the right exit codes."""

from __future__ import annotations

import json
import socket
from importlib import metadata

import pytest
import torch

from service.cli import main
from trainables import sinusoid


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_experiments_json_lists_every_registered_experiment(capsys):
    code, out, _ = run_cli(capsys, "experiments", "--format", "json")
    rows = json.loads(out)
    assert code == 0
    import trainables

    assert [r["experiment"] for r in rows] == sorted(trainables.REGISTRY)
    fields = {r["experiment"]: r["fields"] for r in rows}
    assert fields["sinusoid"]["sigma_inv"]["doc"].startswith("length scale")
    assert fields["spiral"]["entanglement"]["type"] == "float"
    by_name = {r["experiment"]: r for r in rows}
    assert {"seed", "lr", "sigma_inv"} <= set(by_name["sinusoid"]["per_replica"])
    assert by_name["sinusoid"]["metrics"]["test_mse"] == {"mode": "min", "final": False}
    assert by_name["spiral"]["metrics"]["fgsm_acc_0.1"] == {"mode": "max", "final": True}


def test_experiments_table_counts_fields_per_replica_fields_and_metrics(capsys):
    code, out, _ = run_cli(capsys, "experiments")
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[-3:] == ["fields", "per_replica", "metrics"]
    (row,) = [ln for ln in lines if ln.lstrip().startswith("sinusoid ")]
    assert row.split()[-1] == str(len(sinusoid.Config().metrics()))


def test_train_prints_the_same_metrics_as_a_direct_run(capsys):
    sets = ["width=8", "steps=20", "eval_every=10", "test_points=30", "ood_points=30"]
    code, out, err = run_cli(
        capsys, "train", "sinusoid", *sum((["--set", s] for s in sets), []), "--format", "json"
    )
    assert code == 0
    direct = sinusoid.run(
        {"width": 8, "steps": 20, "eval_every": 10, "test_points": 30, "ood_points": 30}
    )
    direct.pop("artifacts")  # the CLI writes plots to --artifacts, not to stdout
    assert json.loads(out) == pytest.approx(direct)
    assert "step 10:" in err and "step 20:" in err


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["train", "sinus"], 2, "unknown experiment 'sinus'; known: ['addition', "),
        (["train", "sinusoid", "--set", "widht=3"], 2, "unknown config key `widht` in sinusoid's"),
        (["train", "sinusoid", "--set", "lr=-1"], 2, "`lr` must be > 0, but got -1.0"),
        (["train", "sinusoid", "--set", "lr"], 2, "`--set` must look like key=value"),
        (["train", "sinusoid", "--set", "width=0"], 2, "sinusoid: `width` must be"),
        (["train", "sinusoid", "--device", "gpu"], 2, "`--device` must be a torch device"),
        (["run", "no/such/spec.yaml"], 2, "neither a file nor a shipped spec"),
        (["run", "sinusoid", "--profile", "huge"], 2, "unknown profile 'huge'"),
        (
            ["run", "sinusoid", "--set", "objective.metric=test_mae"],
            2,
            "'test_mae' is not a metric sinusoid reports",
        ),
        (["run", "sinusoid", "--set", "sampler=grid"], 2, "`sampler` must be one of ['tpe',"),
        (
            ["run", "sinusoid", "--set", "widht=10"],
            2,
            "`--set widht=10`: unknown field `widht` in sinusoid's config or the spec; "
            "did you mean `width`?",
        ),
        (["run", "sinusoid", "--storage", "a-file/sweeps"], 2, "`--storage` 'a-file/sweeps' is "),
        (["resume", "x", "--storage", "a-file/sweeps"], 2, "pass --storage DIR with a directory"),
        (["experiments", "sinus"], 2, "unknown experiment 'sinus'"),
        (["dashboard", "nope"], 2, "sweep 'nope' has no Optuna journal at "),
        (
            ["export", "nope", "--out", "x.xlsx"],
            2,
            "cannot tell the export format from the suffix '.xlsx'",
        ),
        (
            ["run", "sinusoid", "--address", "127.0.0.1:6379"],
            2,
            "pass --tracking-uri http://HOST:PORT",
        ),
    ],
)
def test_user_errors_are_one_line_with_exit_code(
    capsys, tmp_path, monkeypatch, args, code, message
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "a-file").write_text("")  # a --storage under a file can never be made
    got, out, err = run_cli(capsys, *args)
    assert got == code
    assert err.startswith("smoothsweep: error: ") and err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists()  # nothing written to tracking


def test_unreachable_tracking_server_is_a_runtime_error(capsys, monkeypatch):
    code, _, err = run_cli(capsys, "best", "some-sweep", "--tracking-uri", "http://127.0.0.1:9")
    assert code == 1
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:9" in err


def test_missing_sqlite_store_is_named(capsys, tmp_path):
    code, _, err = run_cli(capsys, "best", "x", "--tracking-uri", f"sqlite:///{tmp_path}/none.db")
    assert code == 1 and "does not exist" in err
    assert not (tmp_path / "none.db").exists()


def test_train_writes_artifacts_when_asked(capsys, tmp_path):
    sets = ["width=8", "steps=4", "eval_every=2", "test_points=10", "ood_points=10"]
    args = sum((["--set", s] for s in sets), [])
    code, out, err = run_cli(capsys, "train", "sinusoid", *args, "--artifacts", str(tmp_path))
    assert code == 0 and "artifacts: fit in" in err
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "fit.json").read_text())["kind"] == "curves"


def test_a_bad_set_in_train_is_one_line_naming_the_experiment(capsys):
    code, _, err = run_cli(capsys, "train", "sinusoid", "--set", "widht=3")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("smoothsweep: error: sinusoid: unknown config key") and "widht" in err


@pytest.mark.parametrize("bug", [ValueError("a bug of ours"), KeyError("a bug of ours")])
def test_an_internal_bug_keeps_its_traceback(capsys, monkeypatch, bug):
    def broken(args):
        raise bug

    monkeypatch.setattr("service.cli.cmd_experiments", broken)
    with pytest.raises(type(bug), match="a bug of ours"):
        main(["experiments"])
    assert "smoothsweep: error" not in capsys.readouterr().err


def test_analysis_argument_mistakes_are_one_line(capsys, tmp_path, monkeypatch):
    from service import analysis

    monkeypatch.setattr(analysis, "load_trials", lambda sweep, uri: _trials())
    code, _, err = run_cli(capsys, "best", "sw", "--top", "0")
    assert code == 2 and err == "smoothsweep: error: `top` must be >= 1, but got 0\n"
    code, _, err = run_cli(capsys, "best", "sw", "--metric", "test_mae")
    assert code == 2 and "`metric` must be a column of the trials, but got 'test_mae'" in err


def _trials():
    import pandas as pd

    frame = pd.DataFrame(
        {"status": ["FINISHED"], "trial_id": ["a"], "run_id": ["r"], "cell": ["all"],
         "sigma_inv": [1.0], "test_mse": [0.5]}
    )  # fmt: skip
    frame.attrs.update(objective_metric="test_mse", objective_mode="min", axes=[])
    return frame


def test_version_and_a_help_written_for_users(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"smoothsweep {metadata.version('smoothsweep')}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "smoothsweep run sinusoid --profile demo" in out and "delegates" not in out


def test_experiments_name_shows_its_fields_metrics_and_shipped_specs(capsys):
    code, out, _ = run_cli(capsys, "experiments", "sinusoid", "--format", "json")
    assert code == 0
    shown = json.loads(out)
    assert {f["field"] for f in shown["fields"]} == set(sinusoid.Config.describe())
    assert {m["metric"] for m in shown["metrics"]} == set(sinusoid.Config().metrics())
    assert "sinusoid" in shown["specs"] and "gp_sinusoid" not in shown["specs"]
    code, out, _ = run_cli(capsys, "experiments", "sinusoid")
    assert code == 0 and "shipped specs: sinusoid" in out and "test_mse_clean" in out


def test_ui_on_a_busy_port_is_one_line_and_fails(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(
            capsys, "ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"
        )
    assert code == 1 and err.count("\n") == 1
    assert f"cannot serve the UI on 127.0.0.1:{port}" in err and f"--port {port + 1}" in err


def test_train_runs_one_torch_thread_unless_told(capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(sinusoid, "run", lambda config, report, device: seen.append(
        torch.get_num_threads()) or {"test_mse": 0.0})  # fmt: skip
    before = torch.get_num_threads()
    try:
        assert run_cli(capsys, "train", "sinusoid")[0] == 0
        assert run_cli(capsys, "train", "sinusoid", "--threads", "2")[0] == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]
    with pytest.raises(SystemExit) as exit_:
        run_cli(capsys, "train", "sinusoid", "--threads", "0")
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "argument --threads: must be an integer >= 1, but got '0'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there")
def test_train_on_cuda_without_one_is_one_line(capsys):
    code, _, err = run_cli(capsys, "train", "sinusoid", "--device", "cuda")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "torch sees no CUDA device here; use --device cpu" in err


def test_ui_prints_the_link_to_a_sweep_or_refuses_an_unknown_one(capsys, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from service import cli

    uri = f"sqlite:///{tmp_path}/m.db"
    exp = MlflowClient(uri).create_experiment("sw")
    assert cli._sweep_link(uri, "sw", "http://h:1") == (
        f"http://h:1/#/experiments/{exp}/runs?viewStateShareKey=smoothsweep"
        "&workflowType=machine_learning"
    )
    assert cli._sweep_link(uri, None, "http://h:1").startswith(f"http://h:1/#/experiments/{exp}/")
    fresh = f"sqlite:///{tmp_path}/none.db"
    assert cli._sweep_link(fresh, None, "http://h:1").endswith(
        "#/experiments?workflowType=machine_learning"
    )
    code, _, err = run_cli(capsys, "ui", "nope", "--tracking-uri", uri, "--port", "1")
    # (MLflow's own INFO lines from making the store above come first)
    assert code == 2 and err.splitlines()[-1].startswith("smoothsweep: error: no sweep named")
