"""Ray clusters beyond the embedded default: Ray Jobs submission, status, logs and stop.

A submitted sweep is an ordinary `smoothsweep run` whose driver runs on the cluster's head, so
everything a local sweep does (Optuna per cell, MLflow from the driver, resume) holds unchanged.
The job carries our three packages as `py_modules` (the cluster runs the submitter's code, not
whatever version its image has) and, for a spec that is a local file, that file as `working_dir`.

Ray's token auth: the client reads `RAY_AUTH_MODE` / `RAY_AUTH_TOKEN` (or `RAY_AUTH_TOKEN_PATH`)
from the environment, exactly as `ray` itself does; we never take a token on the command line,
where it would land in shell history and process lists.

The names and ports here are the ones the manifests in `deploy/` use; `tests/deploy` checks that
they agree.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ClusterError, SpecError
from service.session import auth_hint, first_line, probe_tcp

IMAGE = "ghcr.io/smoothsweep/smoothsweep"  # deploy/docker builds it; kuberay/ and cluster/ run it
ENTRYPOINT = "smoothsweep"  # the console script, the image's entrypoint
GCS_PORT = 6379  # `ray start --head --port`
DASHBOARD_PORT = 8265  # Ray Jobs API (`smoothsweep submit --address http://HEAD:8265`)
CLIENT_PORT = 10001  # Ray Client (`--address ray://HEAD:10001`)
MLFLOW_PORT = 5000  # the tracking server

SWEEP_KEY = "smoothsweep.sweep"  # job metadata: which sweep a job drives
ACTION_KEY = "smoothsweep.action"  # "run" or "resume"
GIT_SHA_ENV = "SMOOTHSWEEP_GIT_SHA"  # the submitter's code version, for the job's MLflow tags
DEFAULT_CLUSTER_STORAGE = "~/smoothsweep/sweeps"  # on the head: survives the job's temp dirs
PACKAGES = ("service", "trainables", "search_spaces")
# How long `jobs stop` lets a driver wind down (stop its trials, save Tune's state, close its MLflow
# runs KILLED) before Ray kills it; Ray's default of 3 s would cut that short, leaving runs RUNNING.
STOP_GRACE_S = 60


def is_jobs_address(address: str | None) -> bool:
    return bool(address) and address.startswith(("http://", "https://"))


def require_server_tracking(uri: str | None) -> str:
    """A cluster's driver and nodes cannot see this machine's files: insist on a server."""
    if not uri or uri.startswith(("sqlite:", "file:", "/", ".")) or "://" not in uri:
        raise SpecError(
            "a cluster sweep needs a tracking server every node can reach: pass --tracking-uri "
            "http://HOST:PORT (or set MLFLOW_TRACKING_URI); a local file is not shared across nodes"
        )
    return uri


# --- connecting -----------------------------------------------------------------------------------


def connect(address: str) -> Any:
    """A `JobSubmissionClient` for the head's dashboard, or a one-line `ClusterError`."""
    if not is_jobs_address(address):
        raise SpecError(
            f"--address {address!r}: Ray Jobs needs the head's dashboard address, "
            f"http://HEAD:{DASHBOARD_PORT}"
        )
    from ray.job_submission import JobSubmissionClient

    _probe(address)
    return _guard(address, "connect to", lambda: JobSubmissionClient(address))


def _probe(address: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(address)
    probe_tcp(address, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


def _guard(address: str, what: str, call: Callable[[], Any]) -> Any:
    """Turn Ray's connection and auth failures into one line that says what to do."""
    from ray.exceptions import AuthenticationError

    try:
        return call()
    except AuthenticationError:
        raise ClusterError(auth_hint(address)) from None
    except (ConnectionError, OSError) as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({first_line(exc)}); "
            f"is the head running and the dashboard port open? check --address"
        ) from None
    except RuntimeError as exc:  # the Jobs API answers errors (unknown job, ...) this way
        text = first_line(exc)
        if "401" in text or "403" in text or "uthenticat" in text:
            raise ClusterError(auth_hint(address)) from None
        raise ClusterError(f"the Ray cluster at {address} could not {what} it: {text}") from None


# --- submitting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    job_id: str
    sweep: str
    address: str


def submit_run(
    address: str,
    spec_ref: str,
    *,
    name: str,
    tracking_uri: str,
    profile: str | None = None,
    overrides: Sequence[str] = (),
    storage: str = DEFAULT_CLUSTER_STORAGE,
    entrypoint_resources: dict[str, float] | None = None,
) -> Submitted:
    """Submit `smoothsweep run` as a Ray Job; the spec was validated by the caller."""
    local = Path(spec_ref)
    args = ["run", local.name if local.is_file() else spec_ref, "--name", name]
    if profile:
        args += ["--profile", profile]
    for item in overrides:
        args += ["--set", item]
    args += ["--address", "auto", "--tracking-uri", tracking_uri, "--storage", storage]
    return _submit(
        address, name, "run", args, local if local.is_file() else None, entrypoint_resources
    )


def submit_resume(
    address: str,
    name: str,
    *,
    storage: str = DEFAULT_CLUSTER_STORAGE,
    tracking_uri: str | None = None,
) -> Submitted:
    args = ["resume", name, "--address", "auto", "--storage", storage]
    if tracking_uri:
        args += ["--tracking-uri", tracking_uri]
    return _submit(address, name, "resume", args, None, None)


def _submit(
    address: str,
    sweep: str,
    action: str,
    args: list[str],
    spec_file: Path | None,
    entrypoint_resources: dict[str, float] | None,
) -> Submitted:
    import logging

    from service.tracking import git_sha

    logging.getLogger("ray.dashboard").setLevel(logging.WARNING)  # one INFO line per upload
    client = connect(address)
    # `~` in a storage path means the head's home: let the job's shell expand it there.
    entrypoint = "python -m service.cli " + " ".join(
        a if a.startswith("~/") else shlex.quote(a) for a in args
    )
    with tempfile.TemporaryDirectory(prefix="smoothsweep-job-") as tmp:
        runtime_env: dict[str, Any] = {
            "py_modules": [str(_package_dir(p)) for p in PACKAGES],
            "env_vars": {GIT_SHA_ENV: git_sha(), "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)},
        }
        if spec_file is not None:
            shutil.copy(spec_file, Path(tmp) / spec_file.name)
            runtime_env["working_dir"] = tmp
        job_id = f"{sweep}-{action}-{time.strftime('%H%M%S')}"
        _guard(
            address,
            "accept the job",
            lambda: client.submit_job(
                entrypoint=entrypoint,
                submission_id=job_id,
                runtime_env=runtime_env,
                metadata={SWEEP_KEY: sweep, ACTION_KEY: action},
                entrypoint_resources=entrypoint_resources,
            ),
        )
    return Submitted(job_id, sweep, address)


def _package_dir(name: str) -> Path:
    import importlib

    module = importlib.import_module(name)
    return Path(module.__file__).resolve().parent


# --- watching -------------------------------------------------------------------------------------


def list_jobs(address: str) -> list[dict[str, Any]]:
    """Our jobs on the cluster (those with sweep metadata), newest first."""
    client = connect(address)
    jobs = _guard(address, "list jobs", client.list_jobs)
    rows = [
        {
            "job": j.submission_id,
            "sweep": (j.metadata or {}).get(SWEEP_KEY),
            "action": (j.metadata or {}).get(ACTION_KEY),
            "status": str(j.status.value if hasattr(j.status, "value") else j.status),
            "start": _when(j.start_time),
            "end": _when(j.end_time),
            "message": (j.message or "").splitlines()[0][:120] if j.message else "",
        }
        for j in jobs
        if (j.metadata or {}).get(SWEEP_KEY)
    ]
    return sorted(rows, key=lambda r: r["start"] or "", reverse=True)


def _when(ms: int | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else None


def job_status(address: str, job_id: str) -> dict[str, Any]:
    client = connect(address)
    info = _guard(address, f"find job {job_id!r}", lambda: client.get_job_info(job_id))
    status = str(info.status.value if hasattr(info.status, "value") else info.status)
    return {
        "job": job_id,
        "sweep": (info.metadata or {}).get(SWEEP_KEY),
        "status": status,
        "message": (info.message or "").strip(),
    }


def job_logs(address: str, job_id: str) -> str:
    client = connect(address)
    return _guard(address, f"find job {job_id!r}", lambda: client.get_job_logs(job_id))


def follow_logs(address: str, job_id: str, write: Callable[[str], Any]) -> str:
    """Stream a job's logs until it ends; returns its final status."""
    import asyncio

    client = connect(address)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    _guard(address, f"follow job {job_id!r}", lambda: asyncio.run(tail()))
    return wait(address, job_id)


def wait(address: str, job_id: str, timeout: float | None = None) -> str:
    """Block until the job is in a terminal state; its status."""
    client = connect(address)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = _guard(address, f"find job {job_id!r}", lambda: client.get_job_status(job_id))
        if status.is_terminal():
            return str(status.value)
        if deadline is not None and time.monotonic() > deadline:
            raise ClusterError(f"job {job_id} still {status.value} after {timeout:.0f} s")
        time.sleep(1.0)


def stop_job(address: str, job_id: str) -> bool:
    client = connect(address)
    return bool(_guard(address, f"stop job {job_id!r}", lambda: client.stop_job(job_id)))
