"""Build and run a sweep: Ray Tune trials, one Optuna study per axis cell, MLflow on the driver.

`run_sweep` turns a validated `Spec` into a `Tuner` whose searcher is `StratifiedOptuna` (an
`OptunaSearch` per cell behind one concurrency limit), whose trials are the experiment's `run`
adapted to `tune.report`, and whose callbacks log to MLflow. `resume_sweep` restores the Tuner from
its storage path with the searcher's state; MLflow ends up with every trial exactly once.

`ray.init` happens here, in the entry point, never at import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher

from service import conventions as cv
from service.errors import ClusterError, SpecError, SweepError
from service.spec import Spec
from service.tracking import (
    MlflowTracker,
    SweepRecord,
    error_line,
    git_sha,
    resolve_tracking_uri,
)
from service.trial import NOT_REPORTED, run_trial

METADATA = "smoothsweep.json"  # beside Ray's state: what `resume` needs to rebuild the Tuner
DEFAULT_STORAGE = "sweeps"


@dataclass(frozen=True)
class SweepResult:
    name: str
    tracking_uri: str
    storage: Path
    parent_run_id: str
    num_trials: int
    num_errors: int
    overlay: str | None = None  # the companion sweep's name, when the spec asks for one


# --- search: one Optuna study per cell ------------------------------------------------------------


def make_sampler(kind: str, seed: int) -> Any:
    import optuna

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    return samplers[kind]()


class StratifiedOptuna(Searcher):
    """An OptunaSearch per axis cell; cells take turns so every cell fills at the same pace.

    Each suggestion is the full trial config: fixed values, the cell's axis values, and what that
    cell's study asks for. The state (all studies, who asked what) pickles with the searcher, which
    is how `Tuner.restore` resumes the studies where they were.
    """

    def __init__(self, spec: Spec) -> None:
        from ray.tune.search.optuna import OptunaSearch

        metric, mode = spec.objective.metric, spec.objective.mode
        super().__init__(metric=metric, mode=mode)
        self.fixed = dict(spec.fixed)
        self.cells = spec.cells()
        self.quota = spec.trials_per_cell
        space = {k: p.distribution() for k, p in spec.search.items()}
        self.studies = [
            OptunaSearch(
                space=space,
                metric=metric,
                mode=mode,
                sampler=make_sampler(spec.sampler, spec.sampler_seed + i),
            )
            if space
            else None
            for i in range(len(self.cells))
        ]
        self.asked = [0] * len(self.cells)
        self.cell_of_trial: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self.cell_of_trial:
            i = self.cell_of_trial[trial_id]
        else:
            open_cells = [i for i, n in enumerate(self.asked) if n < self.quota]
            if not open_cells:
                return self.FINISHED
            i = min(open_cells, key=lambda c: (self.asked[c], c))
            self.asked[i] += 1
            self.cell_of_trial[trial_id] = i
        study = self.studies[i]
        suggested = study.suggest(trial_id) if study is not None else {}
        return {**self.fixed, **self.cells[i], **suggested}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        study = self._study(trial_id)
        if study is not None:
            study.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        study = self._study(trial_id)
        if study is not None:
            study.on_trial_complete(trial_id, result, error)

    def _study(self, trial_id: str) -> Any:
        i = self.cell_of_trial.get(trial_id)
        return None if i is None else self.studies[i]

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


# --- running --------------------------------------------------------------------------------------


def configure_tune() -> None:
    """Process settings our sweeps rely on, applied by the entry points (never at import).

    Tune reads them when a Tuner is built, so they hold even when the caller started Ray itself.
    A value the user already exported wins.
    """
    import logging

    import optuna

    # Tune writes CSV/JSON/TensorBoard logs per trial by default; MLflow is our record.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # resume loses at most ~2 s of state
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
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
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",  # nothing of the embedded default listens beyond
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(
            f"could not start or reach Ray at {address or 'local'}: {first[:200]}"
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
    import ray._private.services as services

    services.resolve_ip_for_localhost = lambda host: host


def probe_address(address: str, timeout: float = 10.0) -> None:
    """Fail fast on an unreachable head or a rejected token: ray.init itself retries for minutes."""
    from service.cluster import probe_tcp

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


def _probe_gcs(address: str) -> None:
    """One GCS call: a token mismatch shows here in a second, not after ray.init's 20 s."""
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    from service.cluster import auth_hint

    try:
        with _native_stderr_silenced():  # Ray's C++ client logs the refusal itself
            GcsClient(address=address)
    except AuthenticationError:
        raise ClusterError(auth_hint(address)) from None
    except Exception:  # anything else: let ray.init report it in its own words
        pass


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


def _sweep_dir(storage: str | Path, name: str) -> Path:
    return Path(storage).resolve() / name


def default_name(spec: Spec) -> str:
    return f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_sweep(
    spec: Spec,
    *,
    name: str | None = None,
    tracking_uri: str | None = None,
    storage: str | Path = DEFAULT_STORAGE,
    address: str | None = None,
    progress: bool = True,
    overlay: Spec | None = None,
) -> SweepResult:
    """Run a sweep to the end (or until interrupted; `resume_sweep` continues it).

    `overlay` (see `spec.overlay_spec`) runs next, as the sweep `<name>-overlay`, and is recorded on
    this sweep's parent run so that its curve is drawn with this one.
    """
    name = name or default_name(spec)
    uri = resolve_tracking_uri(tracking_uri)
    root = _sweep_dir(storage, name)
    if (root / METADATA).exists():
        raise SpecError(
            f"sweep {name!r} already exists in {root.parent}; resume it with "
            f"`smoothsweep resume {name}` or pick another --name"
        )
    record = SweepRecord(uri, name)
    record.probe()  # before Ray starts: a typo in the URI should not cost a cluster start-up
    start_ray(address)
    check_capacity(spec, address)
    record.open(_sweep_tags(spec), json.dumps(spec.resolved(), indent=2))
    root.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "tracking_uri": uri, "spec": spec.resolved(), "spec_sha256": spec.sha256}
    (root / METADATA).write_text(json.dumps(meta, indent=2))
    tuner = _build_tuner(spec, name, root.parent, record, progress)
    result = _fit(tuner, spec, name, uri, root, record)
    if overlay is None:
        return result
    companion = run_sweep(
        overlay,
        name=f"{name}-overlay",
        tracking_uri=uri,
        storage=storage,
        address=address,
        progress=progress,
    )
    record.tag(cv.OVERLAY, companion.name)
    errors = result.num_errors + companion.num_errors
    return dataclasses.replace(result, overlay=companion.name, num_errors=errors)


def resume_sweep(
    name: str,
    *,
    storage: str | Path = DEFAULT_STORAGE,
    tracking_uri: str | None = None,
    address: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Continue an interrupted sweep from its Ray Tune state, with the searcher's studies."""
    from ray import tune

    root = _sweep_dir(storage, name)
    if not (root / METADATA).exists():
        raise ClusterError(f"no sweep {name!r} under {root.parent}; pass the --storage it ran with")
    meta = json.loads((root / METADATA).read_text())
    spec = Spec.model_validate(meta["spec"])
    uri = tracking_uri or meta["tracking_uri"]
    start_ray(address)
    check_capacity(spec, address)
    record = SweepRecord(uri, name).open(_sweep_tags(spec))
    if not tune.Tuner.can_restore(str(root)):
        raise ClusterError(
            f"sweep {name!r} has no Ray Tune state in {root} yet; run it again instead"
        )
    tuner = tune.Tuner.restore(
        str(root),
        trainable=_trainable(spec),
        resume_unfinished=True,
        resume_errored=True,
        _resume_config=None,
    )
    # Callbacks are not part of the saved state: attach fresh ones that find the existing runs.
    tuner._local_tuner._run_config.callbacks = _callbacks(spec, record, progress)
    return _fit(tuner, spec, name, uri, root, record)


def _trainable(spec: Spec) -> Any:
    from ray import tune

    fn = tune.with_parameters(
        run_trial,
        experiment=spec.experiment,
        metric=spec.objective.metric,
        mode=spec.objective.mode,
    )
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    return tune.with_resources(fn, resources)


def _callbacks(spec: Spec, record: SweepRecord, progress: bool) -> list[Any]:
    tracker = MlflowTracker(record, _sweep_tags(spec), seeds_of=_seeds_of, cell_of=_cell_of(spec))
    # The tracker first: it closes the failed trial's run before the guard ends the sweep.
    return [tracker, SpecMistakeGuard(), *([Progress(spec)] if progress else [])]


class SpecMistakeGuard(Callback):
    """Ends the sweep at the first trial that shows a spec mistake only a running trial can show
    (an objective the experiment does not report): every other trial would fail the same way.

    Raising from a callback makes Tune clean up (trials stopped, open runs closed by the tracker)
    and raise a TuneError from `fit` with ours as its context; `_fit` finds ours again.
    """

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = error_line(trial)
        if NOT_REPORTED in line:
            raise SpecError(line[line.find("objective.metric") :])


def _build_tuner(spec: Spec, name: str, storage: Path, record: SweepRecord, progress: bool) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    scheduler = None
    if spec.asha is not None:
        scheduler = ASHAScheduler(
            max_t=spec.asha.max_t or 10**9,
            grace_period=spec.asha.grace_period,
            reduction_factor=spec.asha.reduction_factor,
        )
    search = ConcurrencyLimiter(StratifiedOptuna(spec), max_concurrent=spec.max_concurrent)
    return tune.Tuner(
        _trainable(spec),
        tune_config=tune.TuneConfig(
            metric=spec.objective.metric,
            mode=spec.objective.mode,
            search_alg=search,
            scheduler=scheduler,
            num_samples=spec.num_trials,
            reuse_actors=True,  # a fresh worker per trial pays the torch import (2-3 s) each time
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            callbacks=_callbacks(spec, record, progress),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Ray stages its state on the driver and copies it to storage every 300 s by default;
            # a driver killed in between would resume from minutes ago.
            sync_config=tune.SyncConfig(sync_period=1),
            verbose=0,
        ),
    )


@contextlib.contextmanager
def _sigterm_stops_like_ctrl_c() -> Iterator[None]:
    """SIGTERM ends a sweep the way Ctrl-C does.

    `smoothsweep jobs stop` (Ray Jobs), a batch scheduler's pre-emption and `kill` all send SIGTERM,
    whose default would end the driver at once and leave its MLflow runs RUNNING. Re-sent as SIGINT,
    it reaches Tune's handler instead: Tune stops the trials and saves its state, our callbacks
    close the runs KILLED, and `resume` continues the sweep. A second signal ends it at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fit(
    tuner: Any, spec: Spec, name: str, uri: str, root: Path, record: SweepRecord
) -> SweepResult:
    interrupted = SweepError(
        f"sweep {name!r} interrupted; continue it with `smoothsweep resume {name}`"
    )
    with _sigterm_stops_like_ctrl_c():
        try:
            results = tuner.fit()
        except KeyboardInterrupt:
            record.close("KILLED")
            raise interrupted from None
        except Exception as exc:
            mistake = _spec_mistake(exc)
            if mistake is None:
                raise
            record.close("FAILED")
            raise mistake from None
    # Tune's own Ctrl-C handling returns normally (and counts the trials it stopped as TERMINATED):
    # the sweep is unfinished when the tracker had to close a trial's run itself, or when the
    # searcher had not yet made every trial.
    if record.unfinished or len(results) < spec.num_trials:
        record.close("KILLED")
        raise interrupted
    errors = sum(1 for r in results if r.error is not None)
    record.close("FINISHED" if not errors else "FAILED")
    return SweepResult(name, uri, root, record.parent_run_id, len(results), errors)


def _spec_mistake(exc: BaseException | None) -> SpecError | None:
    """The SpecError behind an exception, however Tune wrapped it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SpecError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _sweep_tags(spec: Spec) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        code_version = version("smoothsweep")
    except PackageNotFoundError:
        code_version = "unknown"
    return {
        cv.EXPERIMENT: spec.experiment,
        cv.SPEC_SHA256: spec.sha256,
        cv.GIT_SHA: git_sha(),
        cv.CODE_VERSION: code_version,
        cv.OBJECTIVE_METRIC: spec.objective.metric,
        cv.OBJECTIVE_MODE: spec.objective.mode,
        cv.AXES: json.dumps(sorted(spec.axes)),
        cv.SEARCH: json.dumps(spec.search_bounds()),
    }


def _seeds_of(config: Mapping[str, Any]) -> list[int]:
    seed, replicas = int(config.get("seed", 0)), int(config.get("replicas", 1))
    return [seed + r for r in range(replicas)]


class _CellOf:
    def __init__(self, axes: list[str]) -> None:
        self.axes = axes

    def __call__(self, config: Mapping[str, Any]) -> str:
        return cv.cell_label({a: config[a] for a in self.axes if a in config})


def _cell_of(spec: Spec) -> _CellOf:
    return _CellOf(sorted(spec.axes))


class Progress(Callback):
    """Prints one line per finished trial: how many are done and the best so far."""

    def __init__(self, spec: Spec) -> None:
        self.metric, self.mode = spec.objective.metric, spec.objective.mode
        self.total = spec.num_trials
        self.done = 0
        self.best: tuple[float, str] | None = None
        self.start = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "diverged" if (trial.last_result or {}).get(cv.DIVERGED) else "")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "error")

    def _finish(self, trial: Any, note: str) -> None:
        self.done += 1
        value = (trial.last_result or {}).get(self.metric)
        better = (lambda a, b: a < b) if self.mode == "min" else (lambda a, b: a > b)
        if not note and isinstance(value, (int, float)) and math.isfinite(value):
            if self.best is None or better(value, self.best[0]):
                self.best = (value, trial.trial_id)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "-"
        best = f"{self.best[0]:.4g} ({self.best[1]})" if self.best else "-"
        elapsed = time.monotonic() - self.start
        print(
            f"[{self.done}/{self.total} trials, {elapsed:.0f}s] {trial.trial_id} "
            f"{self.metric}={shown}{' ' + note if note else ''} | best {best}",
            flush=True,
        )
