"""This process's Ray session: the Tune settings, starting or joining Ray, and checking it first.

`start_ray` starts the embedded default (a local Ray on 127.0.0.1 only) or joins a running cluster
at `--address`. Before it does, `probe_address` fails fast on what `ray.init` would take minutes to
report (a dead head, a rejected token, the dashboard address given where the GCS is meant); after
it, `check_capacity` refuses trials that no node could ever place. The TCP probe and the token hint
are shared with `service.cluster`, which reaches the same heads through the Ray Jobs API.

`ray.init` happens in the entry points, never at import; Ray's private APIs are in `ray_shims`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from service import ray_shims
from service.errors import ClusterError, SpecError

if TYPE_CHECKING:
    from service.spec import Spec

CONNECT_TIMEOUT_S = 20.0


def configure_tune() -> None:
    """Process settings our sweeps rely on, applied by the entry points (never at import).

    Tune reads them when a Tuner is built or a result arrives, so they hold even when the caller
    started Ray itself. A value the user already exported wins, except where noted.
    """
    import logging

    import optuna

    # Tune writes CSV/JSON/TensorBoard logs per trial by default; MLflow is our record.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # resume loses at most ~2 s of state
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune rejects every result that lacks the objective. `load_spec` has already checked the
    # objective against the metrics the experiment declares, before Ray started; and an objective
    # declared final (robustness under attack, say) is measured only at the last evaluation, so
    # the results before it rightly lack it. Always set: a sweep with such an objective needs it.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # ResultGrid looks for per-trial result files that we deliberately do not write.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Local Ray by default (no dashboard, loopback only); `address` joins a running cluster."""
    import ray

    configure_tune()
    if ray.is_initialized():
        return
    if address:
        probe_address(address)
    if not address or names_this_host(address):
        keep_loopback()
    try:
        if address and address.startswith("ray://"):
            _connect_client(address)
        elif address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                **ray_shims.loopback_node(),  # nothing of the embedded default listens beyond
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"could not start or reach Ray at {address or 'local'}: {first_line(exc)[:200]}"
        ) from None


def capacity_shortfall(spec: Spec, total: Mapping[str, float]) -> str | None:
    """What one trial asks for that the whole Ray cluster lacks, said as the spec's fields."""
    need = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    short = [k for k, v in need.items() if v > total.get(k.upper(), 0.0)]
    if not short:
        return None
    asks = ", ".join(f"resources.{k}: {need[k]:g}" for k in short)
    has = ", ".join(f"{total.get(k.upper(), 0.0):g} {k.upper()}" for k in short)
    return f"each trial asks for {asks} but this Ray has {has} in all"


def check_capacity(spec: Spec, address: str | None) -> None:
    """Refuse a sweep whose trials could never be placed, instead of letting Tune wait forever.

    On our own local Ray nothing will join, so it is an error; a cluster may be autoscaling and
    add such a node, so there it is a warning and the trials wait.
    """
    import ray

    shortfall = capacity_shortfall(spec, ray.cluster_resources())
    if shortfall is None:
        return
    if address is None:
        raise ClusterError(
            f"{shortfall}; lower it (e.g. --set resources.gpu=0) or run on a cluster that has it "
            f"(--address)"
        )
    print(
        f"smoothsweep: warning: {shortfall}; trials wait until such a node joins", file=sys.stderr
    )


# --- addresses ------------------------------------------------------------------------------------


def names_this_host(address: str) -> bool:
    """`auto`, or a loopback host: the cluster is on this machine, reachable on 127.0.0.1."""
    if address == "auto":
        return True
    host = address.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def keep_loopback() -> None:
    """Keep 127.0.0.1 as it is when this process starts or joins a Ray on this machine.

    Ray 2.60 binds its servers to the node's IP but "resolves" 127.0.0.1 to the host's outward
    address (meant for multi-host clusters), so a purely local Ray would listen on the network, and
    a driver joining a loopback-only cluster (deploy/local) would dial an address nothing listens
    on. Only that one resolution is switched off, and only in this process; a server that listens
    on all interfaces (a standard head node) answers on 127.0.0.1 all the same.
    """
    ray_shims.keep_localhost_as_given()


# --- probing a head before ray.init -------------------------------------------------------------


def probe_address(address: str, timeout: float = 10.0) -> None:
    """Fail fast on an unreachable head or a rejected token: ray.init itself retries for minutes."""
    if address == "auto":
        return  # ray.init finds (or fails to find) the local cluster at once
    if address.startswith(("http://", "https://")):
        raise SpecError(
            f"--address {address}: that is the Ray Jobs (dashboard) address; submit the sweep "
            f"with `smoothsweep submit SPEC --address {address}`, or give run the GCS address "
            f"HOST:6379 or ray://HOST:10001"
        )
    hostport = address.removeprefix("ray://").split("/")[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(
            f"Ray address {address!r} must look like HOST:PORT, ray://HOST:PORT or auto"
        )
    probe_tcp(address, host, int(port), timeout)
    if not address.startswith("ray://"):
        _probe_gcs(address)


def probe_tcp(address: str, host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A plain TCP connect first: Ray's own clients wait much longer on a dead head."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); "
            f"is the head running and that port open? check --address"
        ) from None


def _probe_gcs(address: str) -> None:
    """One GCS call: a token mismatch shows here in a second, not after ray.init's 20 s."""
    from ray.exceptions import AuthenticationError

    try:
        with _native_stderr_silenced():  # Ray's C++ client logs the refusal itself
            ray_shims.gcs_client(address)
    except AuthenticationError:
        raise ClusterError(auth_hint(address)) from None
    except Exception:  # anything else: let ray.init report it in its own words
        pass


def auth_hint(address: str) -> str:
    """What to do when a head rejects this client's token (the environment, never an argument)."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    have = "RAY_AUTH_TOKEN is set" if os.environ.get("RAY_AUTH_TOKEN") else "no token is set"
    return (
        f"the Ray cluster at {address} rejected this client's token (RAY_AUTH_MODE="
        f"{mode or 'unset'}, {have}): export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the "
        f"cluster's token>, or disable auth on every node and client"
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# The Ray Client proxy answers "Initialization failure from server:" and the traceback of its own
# failure; these are the ones where the per-client server it starts was not up in time (the first
# start after `ray start` imports Ray cold; the runtime-env agent may still be coming up), which a
# moment later succeeds. Anything else is final.
CLIENT_STARTING = ("Proxy failed to Connect to backend", "Starting Ray client server failed")
CLIENT_WAIT_S = 120.0


def client_failure_reason(exc: BaseException) -> str:
    """The reason a Ray Client connection failed: the last line of the server's traceback (the
    first line of Ray's message is only "Initialization failure from server:")."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _connect_client(address: str, wait_s: float = CLIENT_WAIT_S) -> None:
    """`ray.init("ray://…")`, waiting (bounded, and saying so) while the head's Ray Client server
    is still starting the server it runs for this client."""
    import ray

    deadline = time.monotonic() + wait_s
    while True:
        try:
            ray.init(address=address, log_to_driver=False)
            return
        except ConnectionAbortedError as exc:
            reason = client_failure_reason(exc)
            starting = any(s in str(exc) for s in CLIENT_STARTING)
            if not starting or time.monotonic() > deadline:
                raise ClusterError(
                    f"the Ray Client server at {address} refused this client: {reason}"
                ) from None
            left = deadline - time.monotonic()
            print(
                f"smoothsweep: the Ray Client server at {address} is still starting this "
                f"client's server ({reason[:120]}); retrying for up to {left:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(2.0)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
