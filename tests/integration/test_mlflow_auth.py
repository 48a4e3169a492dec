"""The authenticated MLflow deployment (deploy/mlflow) against a real `mlflow server` on loopback.

The server runs with the deployment's own arguments (docker-compose.yaml) and auth configuration
(basic_auth.ini), with only what needs Docker swapped out: SQLite and a temp directory instead of
PostgreSQL and S3, one worker on a free loopback port. The admin login comes from the environment
(MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD), as in the deployment, and the passwords
are generated per run.
"""

from __future__ import annotations

import configparser
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.integration.helpers import ROOT, free_port

pytestmark = pytest.mark.integration

DEPLOY = ROOT / "deploy" / "mlflow"
SEARCH = "/api/2.0/mlflow/experiments/search"
PUBLIC_NAME = "mlflow.example.org"  # stands in for $MLFLOW_DOMAIN


@dataclass(frozen=True)
class Server:
    uri: str
    admin: tuple[str, str]

    def get(self, path: str, auth: tuple[str, str] | None = None, **kw) -> requests.Response:
        return requests.get(self.uri + path, auth=auth, params={"max_results": 1}, timeout=10, **kw)


def deployment_arguments(root: Path, port: int) -> list[str]:
    """docker-compose.yaml's `mlflow server` arguments, with local storage and address."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    argv = [str(a) for a in compose["services"]["mlflow"]["command"]]
    local = {
        "--backend-store-uri": f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination": str(root / "artifacts"),
        "--host": "127.0.0.1",
        "--port": str(port),
        "--workers": "1",
    }
    for flag, value in local.items():
        argv[argv.index(flag) + 1] = value
    # ${MLFLOW_DOMAIN:?...} as compose would expand it; any other variable is a new requirement.
    argv = [re.sub(r"\$\{MLFLOW_DOMAIN[^}]*\}", PUBLIC_NAME, a) for a in argv]
    assert not any("$" in a for a in argv), argv
    return argv


def auth_config(root: Path) -> Path:
    """deploy/mlflow/basic_auth.ini with its user database moved from PostgreSQL to SQLite."""
    ini = configparser.ConfigParser()
    ini.read(DEPLOY / "basic_auth.ini")
    ini["mlflow"]["database_uri"] = f"sqlite:///{root / 'auth.db'}"
    path = root / "basic_auth.ini"
    with path.open("w") as f:
        ini.write(f)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port()
    admin = ("sweep-admin", secrets.token_urlsafe(18))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(auth_config(root)),
        MLFLOW_AUTH_ADMIN_USERNAME=admin[0],
        MLFLOW_AUTH_ADMIN_PASSWORD=admin[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(32),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    log = root / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", *deployment_arguments(root, port)],
            env=env,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the uvicorn workers die with it
        )
    try:
        srv = Server(f"http://127.0.0.1:{port}", admin)
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"mlflow server exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"mlflow server did not start: {log.read_text()[-3000:]}"
            )
            try:
                if srv.get("/health").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        yield srv
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the workers, in the same group, go with the parent
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("the mlflow server left processes behind")


@pytest.fixture
def login(monkeypatch):
    """Set (or clear, with None) the client login the way users do: MLFLOW_TRACKING_* variables."""

    def use(credentials: tuple[str, str] | None) -> None:
        for name in (
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN",
        ):
            monkeypatch.delenv(name, raising=False)
        if credentials is not None:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", credentials[0])
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", credentials[1])

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return use


def test_without_a_login_the_api_answers_401(server: Server, login):
    assert server.get(SEARCH).status_code == 401
    login(None)
    with pytest.raises(MlflowException) as err:
        MlflowClient(server.uri).search_experiments()
    assert "401" in str(err.value)


def test_the_admin_from_the_environment_creates_an_experiment(server: Server, login):
    assert server.get(SEARCH, auth=server.admin).status_code == 200
    login(server.admin)
    client = MlflowClient(server.uri)
    experiment_id = client.create_experiment("auth-admin")
    assert client.get_experiment_by_name("auth-admin").experiment_id == experiment_id


def test_a_wrong_password_answers_401(server: Server, login):
    wrong = (server.admin[0], server.admin[1] + "x")
    assert server.get(SEARCH, auth=wrong).status_code == 401
    login(wrong)
    with pytest.raises(MlflowException) as err:
        MlflowClient(server.uri).create_experiment("auth-wrong")
    assert "401" in str(err.value)
    login(server.admin)
    assert MlflowClient(server.uri).get_experiment_by_name("auth-wrong") is None


def test_a_sweep_user_logs_its_own_runs_and_only_reads_others(server: Server, login):
    """The README's set-up: the admin creates a non-admin user for the Ray head's driver."""
    sweeper = ("sweeper", secrets.token_urlsafe(18))
    created = requests.post(
        server.uri + "/api/2.0/mlflow/users/create",
        json={"username": sweeper[0], "password": sweeper[1]},
        auth=server.admin,
        timeout=10,
    )
    assert created.status_code == 200, created.text
    assert created.json()["user"]["is_admin"] is False
    login(server.admin)
    theirs = MlflowClient(server.uri).create_experiment("auth-theirs")

    login(sweeper)
    client = MlflowClient(server.uri)
    ours = client.create_experiment("auth-sweep")
    run = client.create_run(ours)
    client.log_metric(run.info.run_id, "test_mse", 0.07)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"test_mse": 0.07}
    assert client.get_experiment(theirs).name == "auth-theirs"  # default_permission = READ
    with pytest.raises(MlflowException) as err:
        client.delete_experiment(theirs)
    assert "403" in str(err.value)


def test_only_the_configured_host_names_are_answered(server: Server):
    ok = server.get(SEARCH, auth=server.admin, headers={"Host": PUBLIC_NAME})
    assert ok.status_code == 200
    rebinding = server.get(SEARCH, auth=server.admin, headers={"Host": "attacker.example.com"})
    assert rebinding.status_code == 403
