"""Helpers for integration tests: run the real CLI, isolate Ray, inspect MLflow, check for leaks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from service import conventions as cv
from tests.integration.local_deploy import free_port, free_ports  # noqa: F401 (re-exported)

CLI = [sys.executable, "-m", "service.cli"]
ROOT = Path(__file__).resolve().parents[2]


class Workspace:
    """A working directory with its own MLflow store and its own Ray temp dir."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Ray's unix sockets live under its temp dir, whose path must stay short (< 107 bytes).
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="ssw", dir="/tmp"))
        self.env = {
            **os.environ,
            "RAY_TMPDIR": str(self.ray_tmp),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1",
        }
        self.env.pop("MLFLOW_TRACKING_URI", None)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.path / 'mlflow.db'}"

    def write_spec(self, name: str, spec: dict) -> Path:
        path = self.path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CLI, *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen:
        """Start the CLI in its own process group, so a kill reaches the driver and its Ray."""
        return subprocess.Popen(
            [*CLI, *args],
            cwd=self.path,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def leftovers(self) -> list[str]:
        """Processes still running that belong to this workspace's Ray."""
        out = subprocess.run(
            ["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True
        ).stdout
        return [line for line in out.splitlines() if str(self.ray_tmp) in line]

    def cleanup(self) -> None:
        deadline = time.monotonic() + 20
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.5)
        for line in self.leftovers():  # a test that failed midway must not leak
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def child_runs(tracking_uri: str, sweep: str) -> list:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id], f"tags.`{cv.ROLE}` = '{cv.ROLE_TRIAL}'", max_results=1000
    )


def parent_runs(tracking_uri: str, sweep: str) -> list:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(sweep)
    return client.search_runs([exp.experiment_id], f"tags.`{cv.ROLE}` = '{cv.ROLE_SWEEP}'")


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


class MlflowServer:
    """A real `mlflow server` on loopback, with its own SQLite store and artifact directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> MlflowServer:
        import urllib.request

        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "server.log", "w"),  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class LocalRayCluster:
    """A real multi-node Ray cluster on loopback, run by deploy/local/ray-cluster.sh.

    Token auth is on, as on a real cluster: a fresh token per cluster, handed to the nodes and to
    our CLI through the environment only. Trials run on the worker nodes (the head has no CPUs).
    """

    SCRIPT = ROOT / "deploy" / "local" / "ray-cluster.sh"

    def __init__(self, workers: int = 2) -> None:
        import secrets

        self.dir = Path(tempfile.mkdtemp(prefix="ssc", dir="/tmp"))  # short: unix socket paths
        self.workers = workers
        self.port, self.dashboard, self.client_port = free_ports(3)
        bin_dir = str(Path(sys.executable).parent)  # `ray` and `python` of this venv on the nodes
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_PORT": str(self.port),
            "RAY_DASHBOARD_PORT": str(self.dashboard),
            "RAY_CLIENT_PORT": str(self.client_port),
            "NODE_MEMORY": str(3 * 10**9),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1",
        }
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.added = 0

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def jobs_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def _script(self, *args: str, timeout: float = 180) -> str:
        proc = subprocess.run(
            ["bash", str(self.SCRIPT), args[0], str(self.dir), *args[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ray-cluster.sh {args[0]} failed: {proc.stderr[-2000:]}")
        return proc.stdout

    def start(self) -> LocalRayCluster:
        self._script("start", str(self.workers))
        return self

    def kill_node(self, name: str) -> None:
        self._script("kill-node", name)

    def add_node(self) -> str:
        self.added += 1
        name = f"extra{self.added}"
        self._script("add-node", name)
        return name

    def stop(self) -> None:
        self._script("stop")
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def processes(self) -> list[str]:
        out = subprocess.run(
            ["ps", "-ww", "-eo", "pid,stat,args"], capture_output=True, text=True
        ).stdout
        return [
            line
            for line in out.splitlines()
            if str(self.dir) in line and " Z" not in line and "ps -eo" not in line
        ]

    def cli(
        self, *args: str, timeout: float = 300, env: dict | None = None, cwd: Path | None = None
    ):
        return subprocess.run(
            [*CLI, *args],
            cwd=cwd or self.dir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
