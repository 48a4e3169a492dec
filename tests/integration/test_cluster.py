"""On a real multi-node Ray cluster (deploy/local/ray-cluster.sh) with the PostgreSQL-backed MLflow
server (deploy/local/mlflow-server.sh): Ray Jobs submission, token auth, and the reliability cases.

Each reliability case is its own test, marked `reliability`, so any one runs alone:
`pytest -m reliability -k worker_node`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from service import conventions as cv
from service.tracking import git_sha
from tests.integration.helpers import ROOT, LocalRayCluster, child_runs, parent_runs
from tests.integration.local_deploy import LocalMlflow, listeners_of, processes_naming

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

STEPS, EVAL_EVERY = 4000, 500  # ~5 s of training per trial on one core; 8 points per curve


@pytest.fixture(scope="module")
def cluster():
    c = LocalRayCluster(workers=2).start()
    yield c
    c.stop()
    assert not c.processes(), "the cluster left processes behind"


@pytest.fixture(scope="module")
def tracking():
    with LocalMlflow() as server:
        yield server


def write_spec(cluster: LocalRayCluster, name: str, trials: int, steps: int = STEPS) -> str:
    spec = {
        "name": name,
        "experiment": "sinusoid",
        "objective": {"metric": "test_mse", "mode": "min"},
        "fixed": {"replicas": 1, "steps": steps, "eval_every": EVAL_EVERY, "width": 64,
                  "train_points": 100, "test_points": 200, "ood_points": 100},
        "search": {"sigma_inv": {"low": 0.1, "high": 10.0, "log": True}},
        "trials_per_cell": trials,
        "max_concurrent": 2,
        "max_failures": 3,
        "resources": {"cpu": 1},
    }  # fmt: skip
    path = cluster.dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def submit(cluster, tracking, spec: str, name: str, *extra: str) -> subprocess.CompletedProcess:
    return cluster.cli(
        "submit", spec, "--name", name,
        "--address", cluster.jobs_address,
        "--tracking-uri", tracking.uri,
        "--storage", str(cluster.dir / "sweeps"),
        *extra,
    )  # fmt: skip


def start_submit(cluster, tracking, spec: str, name: str) -> subprocess.Popen:
    """`submit --wait` in the background: it follows the job's logs until the job ends."""
    return subprocess.Popen(
        [*_cli(), "submit", spec, "--name", name, "--address", cluster.jobs_address,
         "--tracking-uri", tracking.uri, "--storage", str(cluster.dir / "sweeps"), "--wait"],
        cwd=cluster.dir, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def _cli() -> list[str]:
    from tests.integration.helpers import CLI

    return list(CLI)


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


ENDED = ("SUCCEEDED", "FAILED", "STOPPED")


def job_state(cluster: LocalRayCluster, job: str) -> str:
    """`jobs status` prints `JOB: STATE (message)`."""
    out = cluster.cli("jobs", "status", job, "--address", cluster.jobs_address).stdout
    return out.partition(": ")[2].split(" ")[0].strip()


def finished_runs(uri: str, sweep: str) -> list:
    return [r for r in child_runs_safe(uri, sweep) if r.info.status == "FINISHED"]


def assert_every_trial_once(uri: str, sweep: str, trials: int, steps: int = STEPS) -> list:
    """Exactly `trials` trial runs, distinct trial ids, all FINISHED, each with every eval step."""
    runs = child_runs(uri, sweep)
    assert len(runs) == trials, [r.data.tags.get(cv.TRIAL_ID) for r in runs]
    assert len({r.data.tags[cv.TRIAL_ID] for r in runs}) == trials
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = parent_runs(uri, sweep)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    client = MlflowClient(uri)
    expected = list(range(EVAL_EVERY, steps + 1, EVAL_EVERY))
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "test_mse")
        assert sorted(m.step for m in history) == expected, run.data.tags[cv.TRIAL_ID]
    return runs


# --- submission -----------------------------------------------------------------------------------


def test_submit_runs_the_sweep_as_a_ray_job_and_jobs_reports_it(cluster, tracking):
    spec = write_spec(cluster, "sub", trials=2, steps=1000)
    proc = submit(cluster, tracking, spec, "sub")
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().splitlines()[-1]
    assert job.startswith("sub-run-")

    status = wait_for(
        lambda: job_state(cluster, job) in ENDED and job_state(cluster, job), 240, "end"
    )
    assert status == "SUCCEEDED"
    listed = cluster.cli("jobs", "list", "--address", cluster.jobs_address, "--format", "json")
    rows = {r["job"]: r for r in yaml.safe_load(listed.stdout)}
    assert rows[job]["sweep"] == "sub" and rows[job]["status"] == "SUCCEEDED"
    logs = cluster.cli("jobs", "logs", job, "--address", cluster.jobs_address).stdout
    assert "sweep sub: 2 trials (0 errored)" in logs

    runs = assert_every_trial_once(tracking.uri, "sub", trials=2, steps=1000)
    # The job ran the submitter's code, and says which.
    assert {r.data.tags[cv.GIT_SHA] for r in runs} == {git_sha()}
    # The cluster's token is in no log, param or tag.
    token = cluster.env["RAY_AUTH_TOKEN"]
    recorded = [*runs, *parent_runs(tracking.uri, "sub")]
    assert token not in logs + proc.stdout + proc.stderr
    assert not [r for r in recorded if token in str(r.data.params) + str(r.data.tags)]


LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def test_the_tracking_server_listens_on_loopback_only(tracking):
    addresses = {address for address, _ in tracking.listeners()}
    assert addresses and addresses <= LOOPBACK, addresses


def test_the_embedded_default_listens_on_loopback_only(tmp_path):
    probe = (
        "import json, os, sys; from service.session import start_ray; start_ray(None, num_cpus=1); "
        "from tests.integration.local_deploy import listeners_of, processes_naming; "
        "pids = [*processes_naming(os.environ['RAY_TMPDIR']), os.getpid()]; "
        "print(json.dumps(sorted({a for a, _ in listeners_of(pids)})))"
    )
    ray_tmp = tempfile.mkdtemp(prefix="sse", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT)}
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        wait_for(lambda: not processes_naming(Path(ray_tmp)), 30, "the local Ray to exit")
        shutil.rmtree(ray_tmp, ignore_errors=True)
    addresses = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert addresses and addresses <= LOOPBACK, (addresses, out.stderr[-2000:])


def test_the_local_cluster_listens_on_loopback_only(cluster):
    """Every node, agent, dashboard and worker of deploy/local's cluster, and its Ray Client server
    (an orphan that names no path, found by its port)."""
    pids = set(processes_naming(cluster.dir))
    every_pid = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    pids |= {
        pid
        for pid in every_pid
        if (cluster.client_port in {port for _, port in listeners_of([pid])})
    }
    listening = listeners_of(pids)
    assert {port for _, port in listening} >= {cluster.port, cluster.dashboard, cluster.client_port}
    assert {address for address, _ in listening} <= LOOPBACK, listening


@pytest.mark.parametrize("address", ["gcs", "client"])
def test_run_drives_a_sweep_on_the_cluster_from_this_host(cluster, tracking, address):
    """`run --address 127.0.0.1:PORT` (the driver here, trials on the nodes), and Ray Client."""
    name = f"drive-{address}"
    target = cluster.gcs_address if address == "gcs" else f"ray://127.0.0.1:{cluster.client_port}"
    spec = write_spec(cluster, name, trials=2, steps=1000)
    proc = cluster.cli("run", spec, "--name", name, "--address", target, "--tracking-uri",
                       tracking.uri, "--storage", str(cluster.dir / "sweeps"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_every_trial_once(tracking.uri, name, trials=2, steps=1000)


def test_jobs_stop_ends_a_running_sweep(cluster, tracking):
    spec = write_spec(cluster, "stopme", trials=2, steps=200_000)
    proc = submit(cluster, tracking, spec, "stopme")
    job = proc.stdout.strip().splitlines()[-1]
    wait_for(lambda: job_state(cluster, job) == "RUNNING", 60, "the job to run")
    wait_for(lambda: child_runs(tracking.uri, "stopme"), 120, "a trial to start")
    stopped = cluster.cli("jobs", "stop", job, "--address", cluster.jobs_address)
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"{job}: stopping"
    wait_for(lambda: job_state(cluster, job) == "STOPPED", 90, "the job to stop")
    status = cluster.cli("jobs", "status", job, "--address", cluster.jobs_address)
    assert status.returncode == 1  # a stopped sweep is not a success
    assert not job_drivers("stopme")
    # The driver had time to close its records: nothing is left RUNNING for `resume` to clean up.
    assert {r.info.status for r in child_runs(tracking.uri, "stopme")} == {"KILLED"}
    assert parent_runs(tracking.uri, "stopme")[0].info.status == "KILLED"


def test_cluster_errors_are_one_line_and_fast(cluster, tracking, tmp_path):
    spec = write_spec(cluster, "bad", trials=1, steps=100)
    cases = {
        "wrong token": (["submit", spec, "--address", cluster.jobs_address,
                         "--tracking-uri", tracking.uri], {"RAY_AUTH_TOKEN": "0" * 64}, 1,
                        "rejected this client's token"),
        "wrong token, GCS": (["run", spec, "--address", cluster.gcs_address,
                              "--tracking-uri", tracking.uri], {"RAY_AUTH_TOKEN": "0" * 64}, 1,
                             "rejected this client's token"),
        "unreachable": (["jobs", "list", "--address", "http://127.0.0.1:9"], {}, 1,
                        "cannot reach the Ray cluster at http://127.0.0.1:9"),
        "local file store": (["submit", spec, "--address", cluster.jobs_address,
                              "--tracking-uri", f"sqlite:///{tmp_path}/x.db"], {}, 2,
                             "needs a tracking server every node can reach"),
        "jobs address to run": (["run", spec, "--address", cluster.jobs_address,
                                 "--tracking-uri", tracking.uri], {}, 2,
                                "smoothsweep submit"),
    }  # fmt: skip
    for label, (args, env, code, message) in cases.items():
        start = time.monotonic()
        proc = cluster.cli(*args, env=env, cwd=tmp_path)
        took = time.monotonic() - start
        assert proc.returncode == code, (label, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (label, proc.stderr)
        assert "Traceback" not in proc.stderr and took < 30, (label, took)
        assert cluster.env["RAY_AUTH_TOKEN"] not in proc.stdout + proc.stderr
    assert not (tmp_path / "x.db").exists()


# --- reliability ----------------------------------------------------------------------------------


@pytest.mark.reliability
def test_a_worker_node_killed_mid_sweep_has_its_trials_retried_elsewhere(cluster, tracking):
    def kill_a_worker() -> None:
        cluster.kill_node("worker1")
        cluster.add_node()  # capacity comes back, as an autoscaler would bring it

    # Both worker nodes are busy once two trials log (one CPU each, two at a time).
    out = submit_through_fault(cluster, tracking, "nodekill", 4, busy_runs=2, fault=kill_a_worker)
    assert "sweep nodekill: 4 trials (0 errored)" in out
    assert_every_trial_once(tracking.uri, "nodekill", trials=4)


def submit_through_fault(cluster, tracking, name: str, trials: int, busy_runs: int, fault) -> str:
    """Submit a sweep, inject `fault` once `busy_runs` trials log, and return the job's output
    after it SUCCEEDED."""
    proc = start_submit(cluster, tracking, write_spec(cluster, name, trials=trials), name)
    try:
        wait_for(lambda: len(child_runs_safe(tracking.uri, name)) >= busy_runs, 120, "trials")
        fault()
        out, _ = proc.communicate(timeout=400)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    return out


def job_drivers(sweep: str) -> list[int]:
    """The Python processes driving a sweep (not the job's `sh -c` wrapper around one)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        program = args.split(" ", 1)[0]
        if "service.cli run" in args and f"--name {sweep}" in args and "python" in program:
            found.append(int(pid))
    return found


def child_runs_safe(uri: str, sweep: str) -> list:
    try:
        return child_runs(uri, sweep)
    except Exception:
        return []


@pytest.mark.reliability
def test_a_killed_job_driver_is_finished_by_resume_without_duplicates(cluster, tracking):
    spec = write_spec(cluster, "drvkill", trials=6)
    proc = submit(cluster, tracking, spec, "drvkill")
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().splitlines()[-1]
    wait_for(lambda: len(finished_runs(tracking.uri, "drvkill")) >= 2, 180, "2 finished trials")
    time.sleep(1.5)  # Tune saves its state every second; let it write the finished trials
    drivers = job_drivers("drvkill")
    assert len(drivers) == 1, drivers
    os.kill(drivers[0], signal.SIGKILL)
    wait_for(lambda: job_state(cluster, job) == "FAILED", 60, "the job to fail")

    resumed = cluster.cli(
        "resume", "drvkill", "--address", cluster.jobs_address,
        "--storage", str(cluster.dir / "sweeps"), "--wait", timeout=400,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr
    runs = assert_every_trial_once(tracking.uri, "drvkill", trials=6)
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.reliability
def test_a_tracking_server_outage_loses_no_metric_and_fails_nothing(cluster, tracking):
    def outage() -> None:
        tracking.stop_server()
        time.sleep(30)
        tracking.start()

    start = time.monotonic()
    out = submit_through_fault(cluster, tracking, "outage", 8, busy_runs=1, fault=outage)
    assert "unreachable" in out and "is back after" in out  # the driver held on, and said so
    assert time.monotonic() - start > 30
    assert_every_trial_once(tracking.uri, "outage", trials=8)


@pytest.mark.reliability
def test_two_sweeps_at_once_on_one_cluster_and_server_do_not_interfere(cluster, tracking):
    specs = {name: write_spec(cluster, name, trials=3, steps=1500) for name in ("twin-a", "twin-b")}
    procs = {name: start_submit(cluster, tracking, spec, name) for name, spec in specs.items()}
    try:
        outs = {name: p.communicate(timeout=400)[0] for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    for name, p in procs.items():
        assert p.returncode == 0, outs[name][-3000:]
        runs = assert_every_trial_once(tracking.uri, name, trials=3, steps=1500)
        parent = parent_runs(tracking.uri, name)[0]
        assert {r.data.tags[cv.PARENT_RUN_ID] for r in runs} == {parent.info.run_id}
        assert parent.data.tags[cv.SWEEP] == name
        storage = cluster.dir / "sweeps" / name
        assert storage.is_dir()
