"""A sweep against a real MLflow tracking server on loopback, and the errors around it."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from service.spec import load_spec
from tests.integration.helpers import MlflowServer, Workspace, child_runs, free_port, parent_runs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield srv
    srv.stop()


def test_spiral_smoke_sweep_lands_in_the_server_with_its_curve(server, workspace: Workspace):
    proc = workspace.cli(
        "run", "spiral", "--profile", "smoke", "--name", "spiral-srv", "--tracking-uri", server.uri
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = load_spec("spiral", profile="smoke")
    runs = child_runs(server.uri, "spiral-srv")
    assert len(runs) == spec.num_trials == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(0.0 <= r.data.metrics["test_acc"] <= 1.0 for r in runs)
    assert {"fro_norm_l0", "fro_norm_l2", "train_loss"} <= set(runs[0].data.metrics)
    parent = parent_runs(server.uri, "spiral-srv")[0]
    artifacts = {a.path for a in MlflowClient(server.uri).list_artifacts(parent.info.run_id)}
    assert {"curve.png", "spec.json"} <= artifacts
    assert not (workspace.path / "mlflow.db").exists()  # nothing went to the local default


def test_unreachable_cluster_fails_fast_and_writes_nothing(server, workspace: Workspace):
    start = time.monotonic()
    proc = workspace.cli(
        "run", "sinusoid", "--profile", "smoke", "--name", "nocluster",
        "--address", f"127.0.0.1:{free_port()}", "--tracking-uri", server.uri,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if line.startswith("smoothsweep: error:")
    ]
    assert "cannot reach the Ray cluster" in proc.stderr
    assert MlflowClient(server.uri).get_experiment_by_name("nocluster") is None
